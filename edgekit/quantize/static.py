"""Post-training static int8 quantization of an fp32 ONNX hub into a QDQ ONNX hub, with accuracy control.

Stages: prepare (name nodes, infer shapes) -> check data -> cross-layer equalization -> collect statistics
(streaming) -> ranges (method) -> QDQ graph (ORT quantizer, target scheme) -> bias correction -> (gptq)
data-aware weight rounding -> per-layer
error -> held-out / labelled accuracy (against the unequalized fp32 graph) -> (--max-drop) keep the most
sensitive layers float until the drop fits -> compact -> atomic write.
--int8-finetune fine-tunes the all-int8 graph after calibration; with --max-drop it waits for the search
instead and fine-tunes around the float layers it chose, then floats fewer (fallback_first.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.errors import BudgetExceededError, DataError, ModelLoadError, UnsupportedModelError, UsageError
from edgekit.hashing import sha256_file
from edgekit.progress import log, warn
from edgekit.quantize import (
    bias_correction,
    control,
    dynamic,
    e2e_sensitivity,
    equalize,
    fixed_ranges,
    norm_center,
    ops,
    qdq,
    sensitivity,
)
from edgekit.quantize.collect import collect
from edgekit.quantize.methods import NEEDS_HISTOGRAM, compute_ranges
from edgekit.quantize.scheme import Scheme, scheme_for

ANALYSIS_SAMPLES = 16  # calibration samples used for the per-layer error table
ROUNDING_SAMPLES = 64  # calibration samples for data-aware weight rounding (G settles: 64 vs 128 measured alike)


def _check_inputs(model: Any, samples: SampleSet, what: str) -> None:
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    first = samples.make(samples._idx()[0])
    missing = [n for n in names if n not in first]
    extra = [k for k in first if k not in names]
    if missing or extra:
        raise DataError(f"{what} ({samples.description}) gives inputs {', '.join(first) or 'none'} but the model "
                        f"needs {', '.join(names)}", hint="name the arrays after the model inputs")


def _vocab_sizes(model: Any) -> dict[str, int]:
    """Integer graph inputs that index an embedding table (Gather on an initializer): input -> rows."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    sizes: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in inits:
            rows = numpy_helper.to_array(inits[node.input[0]]).shape[0] if inits[node.input[0]].dims else 0
            sizes[node.input[1]] = int(rows)
    return sizes


def _check_tokenizer(model: Any, samples: SampleSet, what: str) -> None:
    sizes = _vocab_sizes(model)
    if not sizes:
        return
    tok = samples.meta.get("tokenizer")
    if tok:
        from edgekit.data.text import input_role, load_tokenizer

        n = load_tokenizer(Path(tok)).get_vocab_size(with_added_tokens=True)
        for name, rows in sizes.items():  # token_type_ids index a 2-row table: only input_ids hold token ids
            if name in {i.name for i in model.graph.input} and input_role(name) == "input_ids" and n > rows:
                raise DataError(f"{what}: tokenizer {Path(tok).name} has {n} tokens but the model's embedding "
                                f"table for '{name}' has {rows} rows: wrong tokenizer for this model",
                                hint="use the tokenizer.json the model was trained with")
    first = samples.make(samples._idx()[0])
    for name, rows in sizes.items():
        if name in first and rows and int(np.max(first[name])) >= rows:
            raise DataError(f"{what}: token id {int(np.max(first[name]))} in '{name}' is outside the model's "
                            f"embedding table ({rows} rows): wrong tokenizer or data for this model")


def _sizes(a: Path, b: Path) -> dict[str, Any]:
    sa, sb = a.stat().st_size, b.stat().st_size
    return {"fp32_bytes": sa, "int8_bytes": sb, "ratio": round(sb / sa, 4) if sa else None}


def _finetune_figures(ft: Any, budget: dict[str, Any]) -> dict[str, Any] | None:
    """The report's fine-tuning block: finetune.Finetuned's figures (when kept) and fallback_first.py's."""
    if ft is None and not budget:
        return None
    out = {} if ft is None else {
        "steps": ft.steps, "seconds": round(ft.seconds, 1), "loss_before": round(ft.loss_before, 5),
        "loss_after": round(ft.loss_after, 5), "layers": len(ft.layers), "activation_scales": len(ft.scales)}
    return out | budget


def _keep_finetune_if_better(cal: Calibrated, judge: control.Judge, path: Path) -> dict[str, Any]:
    """Judge the fine-tuned graph against the plain one on the held-out samples; keep the plain one when
    fine-tuning (fitted to the calibration samples) made them worse. Returns the report's verdict."""
    tuned = cal.finetuned
    cal.write(path)
    after = float(judge.figures(path)["drop"])
    cal.finetuned = None
    cal.write(path)
    before = float(judge.figures(path)["drop"])
    drops = {"held_out_drop_plain": float(f"{before:.4g}"), "held_out_drop_tuned": float(f"{after:.4g}")}
    if after <= before:
        cal.finetuned = tuned
        return {**drops, "outcome": "fine-tuned"}
    warn(f"int8 fine-tuning made the held-out samples worse (drop {after:.4g} against {before:.4g} without): "
         "the plain int8 graph is kept")
    return {**drops, "outcome": "reverted: worse on the held-out samples"}


@dataclass
class Calibrated:
    """A calibrated model, ready to be written as QDQ with any set of layers kept in float.

    model: the fp32 graph the ranges belong to (equalized when the scheme says so), saved at `prepared`.
    """

    model: Any
    prepared: Path
    scheme: Scheme
    op_types: list[str]
    ranges: dict[str, tuple[float, float]]
    means: dict[str, np.ndarray]
    equalized: int = 0
    seconds: float = 0.0
    corrected: int = 0
    groups: dict[str, list[str]] = field(default_factory=dict)
    rounding: Any = None  # rounding.Rounding when the scheme re-rounds weights (gptq)
    rounded: int = 0
    finetuned: Any = None  # finetune.Finetuned when the scheme fine-tunes the int8 graph
    dynamic: bool = False  # activations quantized at run time (dynamic.py): no ranges, no QDQ
    _written: dict[tuple, tuple] = field(default_factory=dict, repr=False)  # write(): graphs already written

    def float_nodes(self, layers: list[str]) -> list[str]:
        """The nodes to exclude from quantization so that `layers` run in float with float outputs."""
        out: dict[str, None] = {}
        for n in layers:
            out.update(dict.fromkeys(self.groups.get(n, [n])))
        return list(out)

    def write(self, path: Path, float_layers: list[str] = ()) -> None:
        """The QDQ (or dynamic) graph with `float_layers` float, at `path`. The same graph asked for again (the
        analysis graph and the shipped one when no layer stays float) is copied from the file written before,
        when that file is unchanged: ORT's quantizer took ~6 s per write on EfficientNet-B0."""
        exclude = self.float_nodes(list(float_layers))
        state = (tuple(exclude), self._values_key(), *(id(o) for o in self._inputs()))
        if self._copy_written(state, Path(path)):
            return
        self._write(path, exclude)
        self._written[state] = (Path(path), sha256_file(Path(path)), self.corrected, self.rounded, self._inputs())

    def _inputs(self) -> tuple:
        """What a written graph depends on besides the float nodes (held with the memo: no id reuse)."""
        return self.model, self.ranges, self.means, self.finetuned, self.rounding, self.prepared

    def _values_key(self) -> str:
        """The ranges' and bias-correction means' values: a caller may change them in place (the objects' ids
        alone kept a graph written before that as 'the same graph')."""
        import hashlib

        h = hashlib.sha256()
        for name in sorted(self.ranges or {}):
            try:
                value = np.asarray(self.ranges[name], dtype=np.float64).tobytes()
            except (TypeError, ValueError):  # not a plain (low, high) pair
                value = repr(self.ranges[name]).encode()
            h.update(name.encode() + value)
        for name in sorted(self.means or {}):
            h.update(name.encode() + np.ascontiguousarray(np.asarray(self.means[name], dtype=np.float64)).tobytes())
        return h.hexdigest()

    def _copy_written(self, state: tuple, path: Path) -> bool:
        done = self._written.get(state)
        if done is None or not done[0].is_file() or sha256_file(done[0]) != done[1]:
            return False
        if done[0].resolve() != path.resolve():
            shutil.copyfile(done[0], path)
        self.corrected, self.rounded = done[2], done[3]
        return True

    def _write(self, path: Path, exclude: list[str]) -> None:
        if self.dynamic:
            dynamic.write(self.prepared, path, exclude=exclude, mode=self.scheme.transformer_activations)
            return
        qdq.write_qdq(self.prepared, path, self.ranges, self.scheme, self.op_types, exclude=exclude)
        if self.scheme.float_outputs:
            qdq.float_outputs(path, self.prepared)
        if self.means:
            self.corrected = bias_correction.correct(path, self.model, self.means)
        if self.rounding is not None:
            self.rounded = self.rounding.apply(path)
        if self.finetuned is not None:
            self.finetuned.apply(path)

    def tune(self, path: Path, samples: SampleSet, steps: int, task: str, seed: int = 0,
             float_layers: list[str] = ()) -> None:
        """Fine-tune the int8 graph written with `float_layers` float (from the plain values) into `finetuned`."""
        from edgekit.quantize import finetune

        self.finetuned = None
        self.write(path, float_layers)
        self.finetuned = finetune.finetune(path, self.model, self.prepared, samples, steps=steps, task=task, seed=seed)

    def analyse(self, path: Path, samples: SampleSet, shared: dict | None = None) -> tuple[list[dict[str, Any]],
                                                                                          list[str]]:
        """Per-layer error rows of the all-int8 graph (written to `path`) and the fallback order. `shared`: rows kept
        by the bytes of the fp32 and int8 graphs and the samples, for a scheme whose int8 graph is the same file
        (OpenVINO's and TFLite's int8-weights graph of a transformer: ~34 s per analysis on a 24-layer encoder)."""
        import copy

        import onnx

        self.write(path)
        key = None
        if shared is not None:
            idx = tuple(samples.indices) if samples.indices is not None else samples.count
            key = ("analysis", sha256_file(Path(path)), id(samples.make), idx,
                   sha256_file(self.prepared))  # self.model as saved (serializing it again: 3 s for 705 MB)
            if key in shared:
                rows, order, _ = shared[key]
                return copy.deepcopy(rows), list(order)
        graph = onnx.load(str(path))
        if self.dynamic:
            quantized = dynamic.quantized_nodes(self.model, graph)
            rows = dynamic.per_layer(self.model, graph, samples, quantized)
        else:
            quantized = qdq.quantized_nodes(graph)
            rows = sensitivity.per_layer(self.model, graph, samples, quantized)
        order = sensitivity.fallback_order(rows, quantized)
        if key is not None:  # the rows are completed by the caller: a copy is kept; make held: its id stays unique
            shared[key] = (copy.deepcopy(rows), list(order), samples.make)
        return rows, order


def is_dynamic(model: Any, scheme: Scheme) -> bool:
    """Whether `scheme` quantizes this graph's activations at run time: a transformer graph (ops.py), a scheme with
    transformer_activations "dynamic" or "weights" and no pinned op types."""
    return scheme.transformer_activations != "static" and ops.op_types_for(model, scheme.op_types)[1] == "transformer"


def _statistics(model: Any, scheme: Scheme, calib: SampleSet, seed: int, shared: dict | None) -> tuple:
    """(model equalized and centred, pairs equalized, bias-correction axes, activation statistics on `calib`).
    `shared` keeps them for the next scheme that asks the same (same graph, samples, equalization, histograms,
    bias correction): targets whose schemes differ only in what they write (float_outputs, extra op types: the
    onnxruntime and arm targets) calibrated twice (ResNet-50, 24 samples: ~17 s each)."""
    import hashlib

    import onnx

    histogram = NEEDS_HISTOGRAM[scheme.method]
    key = None
    if shared is not None:
        idx = tuple(calib.indices) if calib.indices is not None else calib.count
        key = (hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest(), id(calib.make), idx,
               seed, bool(scheme.equalization), bool(scheme.bias_correction), histogram)
        if key in shared:
            kept, equalized, axes, stats, _ = shared[key]
            copy = onnx.ModelProto()
            copy.CopyFrom(kept)
            return copy, equalized, dict(axes), stats
    equalized = 0
    if scheme.equalization:
        model, equalized = equalize.equalize(model, calib, seed=seed)
    model, _ = norm_center.center(model, calib, seed=seed)  # Conv -> InstanceNorm: bias centred (norm_center.py)
    axes = bias_correction.input_axes(model) if scheme.bias_correction else {}
    stats = collect(model, calib, histogram=histogram, channel_axes=axes,
                    label=f"calibrating ({scheme.method}, {len(calib)} samples)")
    if key is not None:
        kept = onnx.ModelProto()
        kept.CopyFrom(model)
        shared[key] = (kept, equalized, dict(axes), stats, calib.make)  # make held: its id stays unique
    return model, equalized, axes, stats


def calibrate(model: Any, scheme: Scheme, calib: SampleSet, work: Path, seed: int = 0,
              task: str = "classification", finetune: bool = True, shared: dict | None = None) -> Calibrated:
    """Equalize (when the scheme says so), collect statistics on `calib` and compute the ranges; fine-tune the
    all-int8 graph when the scheme says so and `finetune`. `shared`: statistics kept across calls (_statistics)."""
    import onnx

    op_types, _ = ops.op_types_for(model, scheme.op_types, scheme.cnn_extra_op_types, scheme.cnn_float_op_types)
    t0 = time.perf_counter()
    if is_dynamic(model, scheme):  # no ranges to calibrate: activations are quantized at run time
        prepared = work / "fp32-prepared.onnx"
        onnx.save(model, str(prepared))
        if scheme.finetune_steps and finetune:
            warn("int8 fine-tuning applies to static int8 graphs; this target quantizes a transformer's "
                 f"activations at run time ({scheme.transformer_activations}), so it is skipped")
        return Calibrated(model, prepared, scheme, list(dynamic.OPS), {}, {}, dynamic=True,
                          seconds=time.perf_counter() - t0)
    model, equalized, axes, stats = _statistics(model, scheme, calib, seed, shared)
    prepared = work / "fp32-prepared.onnx"
    onnx.save(model, str(prepared))
    ranges = compute_ranges(stats, scheme.method, percentile=scheme.percentile, qrange=scheme.qrange(),
                            symmetric=scheme.activation_symmetric)
    fixed_ranges.apply(model, ranges, scheme.activation_symmetric)  # a Sigmoid's output: exactly [0, 255/256]
    means = {k: stats[k].channel_mean() for k in axes if k in stats and stats[k].channel_sum is not None}
    del stats
    cal = Calibrated(model, prepared, scheme, op_types, ranges, means, equalized, groups=sensitivity.float_groups(model))
    if scheme.weight_rounding == "gptq":
        from edgekit.quantize import rounding

        cal.write(work / "rounding.onnx")
        cal.rounding = rounding.learn(model, work / "rounding.onnx", calib.select(ROUNDING_SAMPLES, seed=seed), seed=seed)
        log(f"weight rounding (gptq): {len(cal.rounding.layers)} layers in {cal.rounding.seconds:.1f} s")
    if scheme.finetune_steps and finetune:
        cal.tune(work / "finetune.onnx", calib, scheme.finetune_steps, task, seed)
    cal.seconds = time.perf_counter() - t0
    return cal


def _judge(shared: dict | None, fp32_onnx: Path, reference: Path, task: str, held_out: SampleSet | None,
           eval_set: SampleSet | None) -> control.Judge:
    """control.Judge over `reference` (fp32_onnx prepared); with `shared`, one per fp32 file and sample sets: its
    fp32 outputs were computed again for every int8 scheme (a 24-layer encoder: ~7.6 s each)."""
    if shared is None:
        return control.Judge(reference, task, held_out, eval_set)

    def ident(s: SampleSet | None) -> Any:
        return None if s is None else (id(s.make), tuple(s.indices) if s.indices is not None else s.count)

    st = Path(fp32_onnx).stat()
    key = ("judge", str(Path(fp32_onnx).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, task, ident(held_out),
           ident(eval_set))
    if key not in shared:  # the sets are held with it: their ids stay unique
        shared[key] = (control.Judge(reference, task, held_out, eval_set), held_out, eval_set)
    return shared[key][0]


CONFIRM_SHARE = 1 / 3  # of the --max-drop judging samples, kept back to confirm the chosen graph
CONFIRM_MIN = 60  # fewer judging samples than this: no confirmation split (each half would be too noisy)


def _confirmation_split(held_out: SampleSet | None, eval_set: SampleSet | None, max_drop: float | None,
                        seed: int) -> tuple[SampleSet | None, SampleSet | None, tuple | None]:
    """With --max-drop, the float layers are chosen (and fine-tuning rounds kept) by their drop on the judging
    samples, so that drop is optimistic for the shipped graph. A third of those samples is held back and
    only scores the final graph (report `confirmation`). Returns (held_out, eval_set, (held, eval) to
    confirm on, or None)."""
    if max_drop is None:
        return held_out, eval_set, None
    labelled = eval_set is not None and eval_set.labels is not None
    judged = eval_set if labelled else held_out
    if judged is None or len(judged) < CONFIRM_MIN:
        return held_out, eval_set, None
    kept, back = judged.split(held_out=CONFIRM_SHARE, seed=seed + 1)
    return (held_out, kept, (None, back)) if labelled else (kept, eval_set, (back, None))


QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger", "QGemm")


def _check_quantizable(model: Any) -> None:
    """A model that is already quantized (QDQ from onnxruntime.quantization.quantize_static, QLinearConv/MatMul,
    quantize_dynamic's MatMulInteger) is refused: quantizing it again stacked a second set of Q/DQ nodes on the
    first (ONNX Runtime: 'two nodes with same node name', internal errors). So is a graph output that is a graph
    input passed through."""
    found: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in QUANTIZED_OPS:
            found[n.op_type] = found.get(n.op_type, 0) + 1
    same = [o.name for o in model.graph.output if o.name in {i.name for i in model.graph.input}]
    if same:  # ONNX Runtime's quantizer: 'Graph is not a DAG' (an internal error)
        raise UnsupportedModelError(f"graph output '{same[0]}' is the graph input of that name, passed through; "
                                    "int8 quantization cannot take it", hint="drop that output from the model (the "
                                    "caller has the input), or convert with --precision fp32")
    if found:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(found.items()))
        raise UsageError(f"the model is already quantized ({ops}); edgekit quantizes float models",
                         hint="give the float model for --precision int8, or convert this one with --precision fp32 "
                              "(its int8 ops run as they are)")


def quantize_model(fp32_onnx: Path, out_path: Path, target: Any, calib: SampleSet, *, method: str | None = None,
                   held_out: SampleSet | None = None, task: str = "classification", max_drop: float | None = None,
                   eval_set: SampleSet | None = None, seed: int = 0, finetune_steps: int | None = None,
                   fallback: str = "e2e", shared: dict | None = None) -> dict[str, Any]:
    """Quantize `fp32_onnx` to a QDQ int8 ONNX at `out_path` with `target`'s scheme; returns the report.

    calib: calibration samples (streamed). held_out: samples never used for calibration, for the
    fp32-vs-int8 figures (top-1 agreement or cosine). eval_set: a labelled set (accuracy). max_drop:
    accuracy budget (fraction; labelled accuracy drop if eval_set has labels, else 1 - agreement/cosine);
    the most sensitive layers stay float until it holds. finetune_steps: end-to-end int8 fine-tuning steps
    (default: the scheme's). fallback: the --max-drop order, "e2e" (each layer group's effect on the model
    output, e2e_sensitivity.py), "e2e-cost" (that effect per float MAC), "e2e-greedy" (re-measured after
    floating the best few, several rounds: slower) or "layer" (per-layer added error). shared: a dict kept across
    calls on one fp32 model and calibration set, where schemes that would collect the same calibration statistics
    share them (_statistics). Nothing is written on failure.
    """
    if fallback not in e2e_sensitivity.ORDERS:
        raise UsageError(f"unknown fallback order '{fallback}'", hint=f"use one of {', '.join(e2e_sensitivity.ORDERS)}")
    import onnx

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    from edgekit.onnx_size import INLINE_LIMIT, file_tensor_bytes

    size = file_tensor_bytes(fp32_onnx)
    if size > INLINE_LIMIT:  # each calibration/fallback step writes the graph as one protobuf (2 GB at most)
        raise UnsupportedModelError(f"int8: the model's weights take {size / 2**30:.2f} GB; edgekit quantizes models "
                                    f"up to {INLINE_LIMIT / 2**30:.2f} GB", hint="convert it at --precision fp32 "
                                    "for onnxruntime or openvino: their artifacts keep the weights in a file beside "
                                    "the model")
    scheme = scheme_for(target, method, finetune_steps)
    try:
        model = onnx.load(str(fp32_onnx))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{fp32_onnx}: cannot read the ONNX model ({exc})") from exc
    _check_quantizable(model)
    try:
        model = qdq.prepare(model)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{fp32_onnx}: cannot read the ONNX model ({exc})") from exc
    if len(calib) == 0:
        raise DataError(f"calibration set {calib.description} is empty", hint="give at least one sample")
    _check_inputs(model, calib, "calibration data")
    _check_tokenizer(model, calib, "calibration data")
    if eval_set is not None:
        _check_inputs(model, eval_set, "evaluation data")
    if max_drop is not None and held_out is None and (eval_set is None or eval_set.labels is None):
        calib, held_out = calib.split(held_out=0.25, seed=seed)
        warn(f"no held-out set given: holding out {len(held_out)} of the calibration samples for --max-drop")
    held_out, eval_set, confirm = _confirmation_split(held_out, eval_set, max_drop, seed)
    _, policy = ops.op_types_for(model, scheme.op_types)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgekit-quant-", dir=out_path.parent) as tmp_dir:
        tmp = Path(tmp_dir)
        reference = tmp / "fp32.onnx"
        onnx.save(model, str(reference))
        judge = _judge(shared, fp32_onnx, reference, task, held_out, eval_set)
        checker = _judge(shared, fp32_onnx, reference, task, *confirm) if confirm else None
        later = bool(scheme.finetune_steps) and max_drop is not None and judge.active  # fallback_first.py
        later = later and not is_dynamic(model, scheme)
        cal = calibrate(model, scheme, calib, tmp, seed=seed, task=task, finetune=not later, shared=shared)
        ft_budget: dict[str, Any] = {}
        if cal.finetuned is not None and judge.active:
            ft_budget = _keep_finetune_if_better(cal, judge, tmp / "judge.onnx")
        rows, order = cal.analyse(tmp / "analysis.onnx", calib.select(ANALYSIS_SAMPLES, seed=seed), shared)

        candidate = tmp / "int8.onnx"
        tries: list[dict] = []
        k = 0
        fallback_used = None
        if max_drop is not None and judge.active:
            fallback_used = "layer"
            if fallback != "layer" and not cal.dynamic:  # the torch evaluator reads QDQ graphs
                measured = e2e_sensitivity.measure(cal, tmp / "e2e.onnx", tmp, calib.select(
                    e2e_sensitivity.E2E_SAMPLES, seed=seed), set(order), task)
                if measured is None:
                    warn("--max-drop falls back to the per-layer order (keeps more layers float)")
                else:
                    e2e_rows = measured.rows()
                    for r in rows:
                        r.update(e2e_rows.get(r["node"], {}))
                    fallback_used = fallback
                    order = measured.order(set(order), fallback) if fallback != "e2e-greedy" else \
                        e2e_sensitivity.refine(cal, tmp, calib.select(e2e_sensitivity.REFINE_SAMPLES, seed=seed),
                                               set(order), task, measured)[0]

            def score(layers: list[str]) -> float:
                cal.write(candidate, layers)
                return float(judge.figures(candidate)["drop"])

            k, tries = control.search(order, score, max_drop)
            if k < 0:
                raise BudgetExceededError(
                    f"int8 accuracy drop stays above --max-drop {max_drop} even with every layer in float",
                    hint="raise --max-drop or use fp32")
            if k:
                log(f"accuracy control: {k} layer(s) kept in float to meet --max-drop {max_drop}")
            if later:
                from edgekit.quantize import fallback_first

                k, ft_budget = fallback_first.finetune_within_budget(cal, order, k, score, max_drop, tmp, calib,
                                                                     scheme.finetune_steps, task, seed)
        float_layers = order[:k]
        kept = cal.float_nodes(float_layers)
        cal.write(candidate, float_layers)
        accuracy = judge.figures(candidate) if judge.active else None
        confirmation = checker.figures(candidate) if checker is not None else None
        step = control.resolution(accuracy) if max_drop is not None else None
        if step is not None and max_drop > 0 and step > max_drop + 1e-12:  # a 0 budget tolerates no change at all
            warn(f"--max-drop {max_drop} was judged on {round(1 / step)} samples, where one changed answer is a drop "
                 f"of {step:.3f}: 'within budget' cannot be told apart from a drop of up to {step:.3f} (give "
                 f"{int(np.ceil(1 / max_drop - 1e-9))}+ held-out samples: more --calibration data or a larger "
                 "--calibration-size; a quarter of them is held out)")
        if confirmation and accuracy and confirmation["drop"] is not None and confirmation["drop"] > max_drop:
            n = (confirmation.get("eval") or confirmation.get("held_out") or {}).get("samples")
            warn(f"--max-drop {max_drop}: drop {confirmation['drop']} on {n} samples kept out of the choice of float "
                 f"layers ({accuracy['drop']} on those that chose them): new data may see more than the budget")
        qdq.compact(candidate, cal.model)
        final = onnx.load(str(candidate))
        n_quant = len(dynamic.quantized_nodes(cal.model, final) if cal.dynamic else qdq.quantized_nodes(final))
        del final
        sizes = _sizes(fp32_onnx, candidate)
        os.replace(candidate, out_path)

    for r in rows:
        r["float"] = r["node"] in float_layers
    mode = scheme.transformer_activations if cal.dynamic else "static"
    report: dict[str, Any] = {
        "scheme": {**scheme.to_dict(), "name": dynamic.NAMES[mode] if cal.dynamic else scheme.name,
                   "op_types": cal.op_types, "op_policy": policy, "activation_quantization": mode},
        "method": scheme.method,
        "calibration": {"samples": len(calib), "description": calib.description, "seconds": round(cal.seconds, 2),
                        "tensors": len(cal.ranges)},
        "quantized_nodes": n_quant,
        "bias_corrected_layers": cal.corrected,
        "weight_rounding": {"method": scheme.weight_rounding, "layers": cal.rounded,
                            "seconds": round(cal.rounding.seconds, 2) if cal.rounding else 0.0},
        "equalized_pairs": cal.equalized,
        "finetune": _finetune_figures(cal.finetuned, ft_budget),
        "float_layers": float_layers,
        "fallback_order": fallback_used,
        "kept_float": kept,
        "max_drop": max_drop,
        "within_budget": None if max_drop is None or accuracy is None else bool(accuracy["drop"] <= max_drop + 1e-12),
        "budget_resolution": step,
        "accuracy": accuracy,
        "confirmation": confirmation,
        "search": tries,
        "size": sizes,
        "per_layer": rows,
    }
    return report
