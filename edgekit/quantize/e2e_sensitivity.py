"""End-to-end fallback order for --max-drop: how much the model's output improves when ONE layer group is float.

sensitivity.py ranks nodes by the error each adds locally; what the budget is spent on is the model's output,
and a layer's local error can be amplified or washed out downstream. Here, for every quantized node N, the
graph that --max-drop would ship with N's group float (`Calibrated.write(path, [N])`: N, its folded
Relu/Clip and its output's consumers excluded; ORT's quantizer decides which Q/DQ pairs remain) is run in
the torch evaluator of QDQ graphs (torch_graph.py) on a batch of calibration samples, and its output is
compared with the fp32 graph's: KL divergence of the softmax for classifiers, normalised MSE otherwise.
  e2e_gain   loss(all int8) - loss(N's group float), on the same samples (positive: floating N helps)
  float_macs multiply-accumulates per sample that the group runs in float (Conv/Gemm/MatMul with float weights)
  cost       float_macs + the elements per sample the group's float nodes write (element-wise work) + the
             median group's such work (a fixed overhead per float group: Q/DQ at its borders)
Orders: "e2e" sorts by e2e_gain; "e2e-cost" by e2e_gain / cost, so that cheap layers (a residual Add, a
depthwise conv) go float before an expensive conv that buys the same output error; "e2e-greedy" (`refine`)
re-measures every group after floating the best 2, 4, 8 (forward selection; ~1 full pass per round).
Reuse: the all-int8 graph runs once per sample chunk; each variant graph recomputes only the nodes that
differ from it (same op, inputs, attributes and initializer bytes = same tensor) and what depends on them,
reading every other tensor from the all-int8 run. Nodes are compared by output name: ORT names Q/DQ
tensors after the tensor they round, so the two graphs line up.
An op or op variant the evaluator lacks makes `measure` return None (the caller falls back to the
per-layer order).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.progress import Progress, log

E2E_SAMPLES = 32  # calibration samples each variant graph is scored on
CHUNK = 8  # samples per evaluator call (memory: the all-int8 run's tensors of one chunk are kept)
REFINE_SAMPLES = 16  # samples per greedy refinement round (e2e-greedy)
ORDERS = ("e2e", "e2e-cost", "e2e-greedy", "layer")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _digest(t: Any) -> bytes:
    from onnx import numpy_helper

    a = np.ascontiguousarray(numpy_helper.to_array(t))
    return hashlib.blake2b(a.tobytes() + str((a.dtype, a.shape)).encode(), digest_size=16).digest()


def _node_key(node: Any) -> tuple:
    return node.op_type, tuple(node.input), tuple(a.SerializeToString() for a in node.attribute)


@dataclass
class _Graph:
    """An ONNX graph ready for the evaluator: nodes, constants, fused fake-quant tensors."""

    nodes: list[tuple[str, list[str], list[str], dict]]
    consts: dict[str, Any]
    fused: dict[str, tuple[float, int, int, int]]
    outputs: list[str]
    keys: dict[str, tuple]  # first output -> node key (for the comparison with another graph)
    digests: dict[str, bytes]


def _load(model: Any) -> _Graph:
    from edgekit.quantize.torch_graph import TorchGraph

    tg = TorchGraph(model, [])  # raises NotImplementedError for an op without a kernel
    keys = {n.output[0]: _node_key(n) for n in model.graph.node if n.output}
    digests = {t.name: _digest(t) for t in model.graph.initializer}
    return _Graph(tg.nodes, tg.consts, tg.fused, tg.outputs, keys, digests)


def _step(node: tuple, get: Callable[[str], Any], fused: dict) -> list[tuple[str, Any]]:
    import torch

    from edgekit.quantize.torch_graph import OPS

    op, ins, outs, a = node
    if op == "QuantizeLinear" and outs[0] in fused:
        return [(outs[0], get(ins[0]))]  # its DequantizeLinear applies the fake quantization
    if op == "DequantizeLinear" and ins[0] in fused:
        s, z, lo, hi = fused[ins[0]]
        return [(outs[0], torch.fake_quantize_per_tensor_affine(get(ins[0]), s, z, lo, hi))]
    y = OPS[op]([get(i) if i else None for i in ins], a)
    return list(zip(outs, y)) if isinstance(y, (list, tuple)) else [(outs[0], y)]


def _macs(node: tuple, get: Callable[[str], Any], out: Any) -> int:
    """Multiply-accumulates per sample of a weighted node (0 for other ops)."""
    op, ins, _, a = node
    if op not in WEIGHTED or out.dim() == 0:
        return 0
    per_sample = out.numel() // max(int(out.shape[0]), 1) if out.dim() > 1 else out.numel()
    w = get(ins[1])
    if op in ("Conv", "ConvTranspose"):
        return int(per_sample * w[0].numel()) if op == "Conv" else int(get(ins[0])[0].numel() * w[0].numel())
    x = get(ins[0])
    k = x.shape[-2] if op == "Gemm" and a.get("transA", 0) else x.shape[-1]
    return int(per_sample * k)


@dataclass
class Variant:
    """The nodes of one group-float graph that differ from the all-int8 graph, and what they read."""

    layer: str
    nodes: list[tuple]
    consts: dict[str, Any]
    fused: dict[str, tuple[float, int, int, int]]
    reads: set[str]  # tensors of the all-int8 run the differing nodes read
    float_weighted: set[str]  # outputs of weighted nodes whose weights are float here (and int8 in the base)
    changed: set[str]  # outputs of the nodes that differ from the all-int8 graph (not only in value)
    loss: float = 0.0
    macs: int = 0
    elements: int = 0


def _variant(layer: str, base: _Graph, g: _Graph) -> Variant:
    base_nodes = {n[2][0]: n for n in base.nodes}
    clean: set[str] = {k for k, d in g.digests.items() if base.digests.get(k) == d}
    dirty: list[tuple] = []
    changed: set[str] = set()  # outputs of nodes that are not in the all-int8 graph as they are here
    for node in g.nodes:
        op, ins, outs, _ = node
        if outs[0] not in base_nodes or base.keys.get(outs[0]) != g.keys.get(outs[0]):
            changed.add(outs[0])
        same = (outs[0] not in changed and all(not i or i in clean for i in ins)
                and (op != "QuantizeLinear" or (outs[0] in g.fused) == (outs[0] in base.fused)))
        if same:
            clean.update(outs)
        else:
            dirty.append(node)
    made = {o for n in dirty for o in n[2]}
    needed = {i for n in dirty for i in n[1] if i and i not in made}
    consts = {i: g.consts[i] for i in needed if i in g.consts and i not in clean}
    produced_by_dq = {n[2][0] for n in g.nodes if n[0] == "DequantizeLinear"}
    weighted = {n[2][0] for n in dirty if n[0] in WEIGHTED and len(n[1]) > 1 and n[1][1] not in produced_by_dq
                and n[2][0] in changed}
    fused = {k: v for k, v in g.fused.items() if k in {i for n in dirty for i in n[1]} | made}
    return Variant(layer, dirty, consts, fused, needed - set(consts), weighted, changed)


@dataclass
class Measured:
    """The e2e figures of every probed layer group."""

    base_loss: float
    gain: dict[str, float]
    macs: dict[str, int]
    elements: dict[str, int]
    samples: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def cost(self, layer: str) -> float:
        """Float work of the group plus a fixed overhead (the median group's work): ranking by gain per cost
        must not put a near-free group that buys nothing ahead of one that fixes the output."""
        if "overhead" not in self.extra:
            work = sorted(self.macs.get(n, 0) + self.elements.get(n, 0) for n in self.gain)
            self.extra["overhead"] = float(work[len(work) // 2]) if work else 1.0
        return float(self.macs.get(layer, 0) + self.elements.get(layer, 0)) + self.extra["overhead"]

    def order(self, quantized: set[str], how: str = "e2e") -> list[str]:
        """Quantized nodes, the most worth keeping float first; nodes not probed (or that do not help) last."""
        if how == "e2e-cost":
            def key(n: str) -> float:
                return -self.gain[n] / max(self.cost(n), 1.0)
        else:
            def key(n: str) -> float:
                return -self.gain[n]
        helpful = sorted((n for n in self.gain if n in quantized and self.gain[n] > 0), key=key)
        rest = sorted((n for n in self.gain if n in quantized and self.gain[n] <= 0), key=lambda n: -self.gain[n])
        return helpful + rest + sorted(quantized - set(self.gain))

    def rows(self) -> dict[str, dict[str, Any]]:
        return {n: {"e2e_gain": float(f"{g:.4g}"), "float_macs": self.macs.get(n, 0)} for n, g in self.gain.items()}


def _loss(out: list[Any], ref: list[np.ndarray], task: str) -> float:
    from edgekit.quantize.finetune import _loss as loss

    return float(loss(out, ref, task))


def _chunks(samples: SampleSet) -> list[dict[str, np.ndarray]]:
    items = list(samples)
    shapes = {tuple((k, v.shape, v.dtype.str) for k, v in sorted(i.items())) for i in items}
    per = CHUNK if len(shapes) == 1 else 1
    return [{k: np.concatenate([c[k] for c in items[j:j + per]]) for k in items[0]} for j in range(0, len(items), per)]


def measure(cal: Any, base_path: Path, work: Path, samples: SampleSet, quantized: set[str], task: str,
            floated: list[str] = (), layers: list[str] | None = None) -> Measured | None:
    """e2e figures of every group in `layers` (default: every quantized node) on `samples`.

    cal: static.Calibrated. base_path: its graph with `floated` kept float (written here). Returns None when
    the graph does not run in the torch evaluator.
    """
    import onnx
    import torch

    from edgekit.progress import warn
    from edgekit.quantize.collect import session

    t0 = time.perf_counter()
    cal.write(base_path, list(floated))
    try:
        base = _load(onnx.load(str(base_path)))
    except NotImplementedError as exc:
        warn(f"end-to-end fallback order unavailable: {exc}")
        return None
    ref_sess = session(cal.prepared)
    ref_names = [o.name for o in ref_sess.get_outputs()]
    batches = _chunks(samples)

    def refused(feed: dict[str, np.ndarray]) -> Exception | None:  # by the evaluator or ONNX Runtime's reference
        exc = _fails(base, feed)
        if exc is None:
            try:
                ref_sess.run(ref_names, feed)
            except Exception as ort_exc:  # noqa: BLE001 - e.g. a static batch of 1 refuses 8 samples
                return ort_exc
        return exc

    exc = refused(batches[0])
    if exc is not None and len(batches[0][next(iter(batches[0]))]) > 1:  # a graph exported for batch 1
        batches = [{k: v[j:j + 1] for k, v in b.items()} for b in batches for j in range(len(b[next(iter(b))]))]
        exc = refused(batches[0])
    if exc is not None:
        warn(f"end-to-end fallback order unavailable: the graph does not run in the torch evaluator "
             f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})")
        return None
    refs = [ref_sess.run(ref_names, b) for b in batches]

    todo = sorted(quantized if layers is None else set(layers) & quantized)
    skip = set(floated)
    variants: list[Variant] = []
    probe = work / "e2e-variant.onnx"
    with Progress(f"end-to-end sensitivity: {len(todo)} layer groups", len(todo)) as bar:
        for layer in todo:
            if layer in skip:
                bar.update()
                continue
            cal.write(probe, [*floated, layer])
            try:
                variants.append(_variant(layer, base, _load(onnx.load(str(probe)))))
            except NotImplementedError as exc:
                warn(f"end-to-end fallback order unavailable: {exc}")
                return None
            bar.update()
    reads = set().union(*(v.reads for v in variants)) if variants else set()
    base_loss, n = 0.0, 0
    with torch.no_grad():
        for b, ref in zip(batches, refs):
            m = len(b[next(iter(b))])
            env, out = _base_env(base, b, reads)
            base_loss += _loss(out, ref, task) * m
            for v in variants:
                vout = _run_variant(v, env, base, b, count=n == 0)
                v.loss += _loss(vout, ref, task) * m
            n += m
    base_loss /= n
    gain = {v.layer: base_loss - v.loss / n for v in variants}
    seconds = time.perf_counter() - t0
    log(f"end-to-end sensitivity: {len(variants)} layer groups on {n} samples in {seconds:.0f} s "
        f"(all-int8 loss {base_loss:.4g})")
    return Measured(base_loss, gain, {v.layer: v.macs for v in variants}, {v.layer: v.elements for v in variants},
                    n, seconds)


def _fails(base: _Graph, feed: dict[str, np.ndarray]) -> Exception | None:
    """The error the evaluator raises on the all-int8 graph for `feed`, or None when it runs."""
    import torch

    try:
        with torch.no_grad():
            _base_env(base, feed, set())
    except Exception as exc:  # noqa: BLE001 - an op variant the evaluator does not cover
        return exc
    return None


def _base_env(base: _Graph, feed: dict[str, np.ndarray], keep: set[str]) -> tuple[dict[str, Any], list[Any]]:
    """Run the all-int8 graph; returns (the tensors in `keep`, the outputs). Constant subgraphs are folded
    into base.consts on the first call."""
    import torch

    env: dict[str, Any] = {k: torch.as_tensor(v) for k, v in feed.items()}
    consts = base.consts
    last: dict[str, int] = {}
    for j, (_, ins, _, _) in enumerate(base.nodes):
        for i in ins:
            last[i] = j
    for j, node in enumerate(base.nodes):
        op, ins, outs, _ = node
        if op == "Constant" or outs[0] in consts:
            continue
        is_const = all(not i or i in consts for i in ins)
        for o, y in _step(node, lambda k: env[k] if k in env else consts[k], base.fused):
            if is_const:
                consts[o] = y
            else:
                env[o] = y
        for i in ins:
            if last.get(i) == j and i not in keep and i not in base.outputs and i in env and i not in feed:
                del env[i]
    out = [env[o] if o in env else consts[o] for o in base.outputs]
    return {k: v for k, v in env.items() if k in keep or k in feed}, out


def _run_variant(v: Variant, env: dict[str, Any], base: _Graph, feed: dict[str, np.ndarray], count: bool) -> list[Any]:
    local: dict[str, Any] = {}

    def get(k: str) -> Any:
        if k in local:
            return local[k]
        if k in v.consts:
            return v.consts[k]
        if k in env:
            return env[k]
        return base.consts[k]

    for node in v.nodes:
        if node[0] == "Constant":
            continue
        for o, y in _step(node, get, v.fused):
            local[o] = y
            if count and o in v.changed and node[0] not in ("QuantizeLinear", "DequantizeLinear") and y.dim() > 0:
                v.elements += y.numel() // max(int(y.shape[0]), 1) if y.dim() > 1 else y.numel()
                if o in v.float_weighted:
                    v.macs += _macs(node, get, y)
    return [get(o) for o in base.outputs]


def refine(cal: Any, work: Path, samples: SampleSet, quantized: set[str], task: str, first: Measured,
           how: str = "e2e", rounds: tuple[int, ...] = (2, 2, 4, 8)) -> tuple[list[str], list[Measured]]:
    """Greedy forward selection: float the best `rounds[0]` groups of `first`, re-measure every other group
    with those float, float the best `rounds[1]` of that, and so on. Leave-one-in-float gains miss groups
    that only pay once their neighbours are float (a residual stream rounded at each of its additions:
    floating one rounding leaves the others). Returns (order, the measurement of each round)."""
    chosen = first.order(quantized, how)[:rounds[0]]
    passes = [first]
    for r in rounds[1:]:
        m = measure(cal, work / "e2e-refine.onnx", work, samples, quantized, task, floated=chosen)
        if m is None:
            break
        passes.append(m)
        chosen += [n for n in m.order(quantized, how) if n not in chosen and m.gain.get(n, 0.0) > 0][:r]
    last = passes[-1]
    rest = [n for n in last.order(quantized, how) if n not in chosen]
    return chosen + rest, passes
