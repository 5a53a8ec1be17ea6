"""Cross-layer equalization of activation channels (DFQ, Nagel et al. 2019; SmoothQuant-style balance).

Per-tensor int8 activations give every channel of a tensor the same step. In MobileNet-style nets the
channels of a Conv -> ReLU/ReLU6 -> Conv tensor span 100x different ranges, so small channels keep a
handful of levels. For such a pair A -> act -> [channel-wise ops] -> B, output channel i of A (weights
and bias) is multiplied by k_i > 0 and input channel i of B by 1 / k_i: the fp32 function is unchanged
(ReLU, max/average pools are positively homogeneous per channel), while the activation's channels get
closer ranges. With per-channel int8 weights, scaling A's output channels costs nothing; scaling B's
input columns changes B's rounding only when B mixes channels (a dense conv or a Gemm):
  B depthwise        k_i = R / a_i        every channel up to the tensor's range R (free)
  B dense            k_i = (R / a_i)^ALPHA_DENSE   a balance of activation and weight rounding
(a_i = channel i's observed maximum after the activation, R = the largest a_i; k_i >= 1, <= MAX_SCALE).
A Clip(0, M) (ReLU6) is homogeneous only while it does not clip: channels whose observed pre-activation
maximum reaches M keep k_i = 1, and the others satisfy k_i * max_i <= M, so the result is identical on the
calibration data (inputs far outside it may clip a little earlier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.progress import log

ALPHA_DENSE = 0.5
MAX_SCALE = 64.0
STAT_SAMPLES = 64
CHANNELWISE = ("GlobalAveragePool", "AveragePool", "MaxPool", "GlobalMaxPool")


@dataclass
class Pair:
    a: Any  # producer Conv/Gemm node
    act: Any  # Relu / Clip node, or None
    b: Any  # consumer Conv/Gemm node
    clip_max: float | None  # M of Clip(0, M); None for ReLU / no activation
    act_out: str  # the tensor whose channels are equalized (after the activation)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _const(name: str, inits: dict[str, Any], consts: dict[str, Any]) -> np.ndarray | None:
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    if name in consts:
        return numpy_helper.to_array(_attr(consts[name], "value", None))
    return None


def _spatial_one(model: Any, name: str) -> bool:
    for vi in model.graph.value_info:
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            return len(dims) >= 3 and all(d.HasField("dim_value") and d.dim_value == 1 for d in dims[2:])
    return False


def find_pairs(model: Any) -> list[Pair]:
    """Conv -> (Relu | Clip(0, M))? -> [pools, Flatten of a 1x1 map] -> Conv/Gemm chains with constant weights."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}

    def only(tensor: str) -> Any:
        c = consumers.get(tensor, [])
        return c[0] if len(c) == 1 and tensor not in outputs else None

    pairs: list[Pair] = []
    for a in graph.node:
        if a.op_type != "Conv" or len(a.input) < 2 or a.input[1] not in inits:
            continue
        nxt, act, clip_max = only(a.output[0]), None, None
        if nxt is not None and nxt.op_type == "Relu":
            act, nxt = nxt, only(nxt.output[0])
        elif nxt is not None and nxt.op_type == "Clip":
            lo = _const(nxt.input[1], inits, consts) if len(nxt.input) > 1 and nxt.input[1] else None
            hi = _const(nxt.input[2], inits, consts) if len(nxt.input) > 2 and nxt.input[2] else None
            if lo is None or hi is None or float(lo) != 0.0 or not np.isfinite(float(hi)):
                continue
            act, clip_max, nxt = nxt, float(hi), only(nxt.output[0])
        if act is None:
            continue  # no activation: A's output is usually a residual branch; leave it
        act_out = act.output[0]
        flattened = False
        while nxt is not None and (nxt.op_type in CHANNELWISE or nxt.op_type == "Flatten"):
            if nxt.op_type == "Flatten":
                if _attr(nxt, "axis", 1) != 1 or not _spatial_one(model, nxt.input[0]):
                    nxt = None
                    break
                flattened = True
            nxt = only(nxt.output[0])
        if nxt is None or len(nxt.input) < 2 or nxt.input[1] not in inits or nxt.input[0] == nxt.input[1]:
            continue
        if nxt.op_type == "Conv" and not flattened:
            pairs.append(Pair(a, act, nxt, clip_max, act_out))
        elif nxt.op_type == "Gemm" and flattened and not _attr(nxt, "transA", 0):
            pairs.append(Pair(a, act, nxt, clip_max, act_out))
    return pairs


def _channel_max(model: Any, pairs: list[Pair], samples: SampleSet) -> dict[str, np.ndarray]:
    """Per-channel maximum of each A output (before the activation), streamed."""
    from edgekit.quantize.collect import exposed_model, run_checked, session

    names = sorted({p.a.output[0] for p in pairs})
    sess = session(exposed_model(model, names))
    out: dict[str, np.ndarray] = {}
    for feed in samples:
        for name, arr in zip(names, run_checked(sess, feed, samples.description, names)):
            m = np.moveaxis(np.asarray(arr), 1, 0).reshape(arr.shape[1], -1).max(axis=1)
            out[name] = m if name not in out else np.maximum(out[name], m)
    return out


def _scales(pair: Pair, pre_max: np.ndarray, b_weight: np.ndarray) -> np.ndarray:
    act_max = np.maximum(pre_max, 0.0)
    if pair.clip_max is not None:
        act_max = np.minimum(act_max, pair.clip_max)
    top = float(act_max.max())
    if top <= 0:
        return np.ones_like(act_max)
    live = act_max > top * 1e-6
    k = np.ones_like(act_max, dtype=np.float64)
    depthwise = pair.b.op_type == "Conv" and int(_attr(pair.b, "group", 1)) == b_weight.shape[0] == act_max.size \
        and b_weight.shape[1] == 1
    alpha = 1.0 if depthwise else ALPHA_DENSE
    k[live] = (top / act_max[live]) ** alpha
    if pair.clip_max is not None:
        clipped = pre_max >= pair.clip_max * (1 - 1e-6)
        k[clipped] = 1.0
        room = np.where(pre_max > 0, pair.clip_max / np.maximum(pre_max, 1e-30), MAX_SCALE)
        k = np.minimum(k, room)
    return np.clip(k, 1.0, MAX_SCALE)


def equalize(model: Any, samples: SampleSet, seed: int = 0) -> tuple[Any, int]:
    """A copy of `model` with every equalizable pair rescaled; returns (model, pairs changed)."""
    import onnx
    from onnx import numpy_helper

    pairs = find_pairs(model)
    if not pairs:
        return model, 0
    maxima = _channel_max(model, pairs, samples.select(STAT_SAMPLES, seed=seed))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    uses: dict[str, int] = {}
    for n in out.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    changed = 0
    for pair in pairs:
        wa_name, wb_name = pair.a.input[1], pair.b.input[1]
        ba_name = pair.a.input[2] if len(pair.a.input) > 2 and pair.a.input[2] else None
        if uses.get(wa_name, 0) != 1 or uses.get(wb_name, 0) != 1 or (ba_name and uses.get(ba_name, 0) != 1):
            continue  # shared weights: scaling one use would change another
        if ba_name and ba_name not in inits:
            continue
        wa = numpy_helper.to_array(inits[wa_name]).astype(np.float64)
        wb = numpy_helper.to_array(inits[wb_name]).astype(np.float64)
        pre = maxima.get(pair.a.output[0])
        if pre is None or pre.size != wa.shape[0]:
            continue
        b_cols = wb.shape[1] if pair.b.op_type == "Conv" else (wb.shape[1] if _attr(pair.b, "transB", 0) else wb.shape[0])
        depthwise = pair.b.op_type == "Conv" and int(_attr(pair.b, "group", 1)) == pre.size == wb.shape[0]
        if not depthwise and (b_cols != pre.size or (pair.b.op_type == "Conv" and int(_attr(pair.b, "group", 1)) != 1)):
            continue
        k = _scales(pair, pre.astype(np.float64), wb)
        if np.allclose(k, 1.0):
            continue
        shape_a = (-1,) + (1,) * (wa.ndim - 1)
        wa = wa * k.reshape(shape_a)
        if depthwise:
            wb = wb / k.reshape((-1,) + (1,) * (wb.ndim - 1))
        elif pair.b.op_type == "Conv":
            wb = wb / k.reshape((1, -1) + (1,) * (wb.ndim - 2))
        elif _attr(pair.b, "transB", 0):
            wb = wb / k.reshape(1, -1)
        else:
            wb = wb / k.reshape(-1, 1)
        inits[wa_name].CopyFrom(numpy_helper.from_array(wa.astype(np.float32), wa_name))
        inits[wb_name].CopyFrom(numpy_helper.from_array(wb.astype(np.float32), wb_name))
        if ba_name:
            ba = numpy_helper.to_array(inits[ba_name]).astype(np.float64) * k
            inits[ba_name].CopyFrom(numpy_helper.from_array(ba.astype(np.float32), ba_name))
        changed += 1
    if changed:
        log(f"cross-layer equalization: {changed} of {len(pairs)} conv pairs rescaled")
    return out, changed
