"""Post-training static int8 quantization of an fp32 ONNX hub into a QDQ ONNX hub, with accuracy control.

Stages: prepare (name nodes, infer shapes) -> check data -> cross-layer equalization -> collect statistics
(streaming) -> ranges (method) -> QDQ graph (ORT quantizer, target scheme) -> bias correction -> per-layer
error -> held-out / labelled accuracy (against the unequalized fp32 graph) -> (--max-drop) keep the most
sensitive layers float until the drop fits -> compact -> atomic write.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.errors import BudgetExceededError, DataError, ModelLoadError
from edgekit.progress import log, warn
from edgekit.quantize import bias_correction, control, equalize, ops, qdq, sensitivity
from edgekit.quantize.collect import collect
from edgekit.quantize.methods import NEEDS_HISTOGRAM, compute_ranges
from edgekit.quantize.scheme import scheme_for

ANALYSIS_SAMPLES = 16  # calibration samples used for the per-layer error table


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
        from edgekit.data.text import load_tokenizer

        n = load_tokenizer(Path(tok)).get_vocab_size(with_added_tokens=True)
        for name, rows in sizes.items():
            if name in {i.name for i in model.graph.input} and "ids" in name and n > rows:
                raise DataError(f"{what}: tokenizer {Path(tok).name} has {n} tokens but the model's embedding "
                                f"table for '{name}' has {rows} rows: wrong tokenizer for this model",
                                hint="use the tokenizer.json the model was trained with")
    first = samples.make(samples._idx()[0])
    for name, rows in sizes.items():
        if name in first and rows and int(np.max(first[name])) >= rows:
            raise DataError(f"{what}: token id {int(np.max(first[name]))} in '{name}' is outside the model's "
                            f"embedding table ({rows} rows): wrong tokenizer or data for this model")


def _float_groups(model: Any) -> dict[str, list[str]]:
    """Node -> the nodes to exclude so that its output stays float: itself and every consumer of its output.

    In a QDQ graph a tensor is quantized when its producer or any consumer is, so excluding one node
    alone only keeps its weights float; the activation rounding (the larger error in practice) stays.
    """
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node.name)
    return {n.name: [n.name] + [c for o in n.output for c in consumers.get(o, [])] for n in model.graph.node}


def _sizes(a: Path, b: Path) -> dict[str, Any]:
    sa, sb = a.stat().st_size, b.stat().st_size
    return {"fp32_bytes": sa, "int8_bytes": sb, "ratio": round(sb / sa, 4) if sa else None}


def quantize_model(fp32_onnx: Path, out_path: Path, target: Any, calib: SampleSet, *, method: str | None = None,
                   held_out: SampleSet | None = None, task: str = "classification", max_drop: float | None = None,
                   eval_set: SampleSet | None = None, seed: int = 0) -> dict[str, Any]:
    """Quantize `fp32_onnx` to a QDQ int8 ONNX at `out_path` with `target`'s scheme; returns the report.

    calib: calibration samples (streamed). held_out: samples never used for calibration, for the
    fp32-vs-int8 figures (top-1 agreement or cosine). eval_set: a labelled set (accuracy). max_drop:
    accuracy budget (fraction; labelled accuracy drop if eval_set has labels, else 1 - agreement/cosine);
    the most sensitive layers stay float until it holds. Nothing is written on failure.
    """
    import onnx

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    scheme = scheme_for(target, method)
    try:
        model = qdq.prepare(onnx.load(str(fp32_onnx)))
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
    op_types, policy = ops.op_types_for(model, scheme.op_types)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgekit-quant-", dir=out_path.parent) as tmp_dir:
        tmp = Path(tmp_dir)
        reference = tmp / "fp32.onnx"
        onnx.save(model, str(reference))
        t0 = time.perf_counter()
        equalized = 0
        if scheme.equalization:
            model, equalized = equalize.equalize(model, calib, seed=seed)
        prepared = tmp / "fp32-equalized.onnx" if equalized else reference
        if equalized:
            onnx.save(model, str(prepared))
        axes = bias_correction.input_axes(model) if scheme.bias_correction else {}
        stats = collect(model, calib, histogram=NEEDS_HISTOGRAM[scheme.method], channel_axes=axes,
                        label=f"calibrating ({scheme.method}, {len(calib)} samples)")
        ranges = compute_ranges(stats, scheme.method, percentile=scheme.percentile, qrange=scheme.qrange(),
                                symmetric=scheme.activation_symmetric)
        means = {k: stats[k].channel_mean() for k in axes if k in stats and stats[k].channel_sum is not None}
        del stats
        calib_seconds = time.perf_counter() - t0
        corrected = [0]

        def build(path: Path, exclude: list[str] = (), keep_activations: bool = False) -> None:
            qdq.write_qdq(prepared, path, ranges, scheme, op_types, exclude=exclude, keep_activations=keep_activations)
            if means:
                corrected[0] = bias_correction.correct(path, model, means)

        analysis = tmp / "analysis.onnx"
        build(analysis, keep_activations=True)
        analysis_model = onnx.load(str(analysis))
        quantized = qdq.quantized_nodes(analysis_model)
        rows = sensitivity.per_layer(model, analysis_model, calib.select(ANALYSIS_SAMPLES, seed=seed), quantized)
        del analysis_model
        order = sensitivity.fallback_order(rows, quantized)

        judge = control.Judge(reference, task, held_out, eval_set)
        candidate = tmp / "int8.onnx"
        tries: list[dict] = []
        kept: list[str] = []
        if max_drop is not None and judge.active:
            groups = _float_groups(model)

            def expand(nodes: list[str]) -> list[str]:
                out: dict[str, None] = {}
                for n in nodes:
                    out.update(dict.fromkeys(groups.get(n, [n])))
                return list(out)

            def score(exclude: list[str]) -> float:
                build(candidate, expand(exclude))
                return float(judge.figures(candidate)["drop"])

            k, tries = control.search(order, score, max_drop)
            if k < 0:
                raise BudgetExceededError(
                    f"int8 accuracy drop stays above --max-drop {max_drop} even with every layer in float",
                    hint="raise --max-drop or use fp32")
            kept = expand(order[:k])
            if k:
                log(f"accuracy control: {k} layer(s) kept in float to meet --max-drop {max_drop}")
        build(candidate, kept)
        accuracy = judge.figures(candidate) if judge.active else None
        qdq.compact(candidate, model)
        final = onnx.load(str(candidate))
        n_quant = len(qdq.quantized_nodes(final))
        del final
        sizes = _sizes(fp32_onnx, candidate)
        os.replace(candidate, out_path)

    kept_set = set(kept)
    for r in rows:
        r["float"] = r["node"] in kept_set
    report: dict[str, Any] = {
        "scheme": {**scheme.to_dict(), "name": scheme.name, "op_types": op_types, "op_policy": policy},
        "method": scheme.method,
        "calibration": {"samples": len(calib), "description": calib.description, "seconds": round(calib_seconds, 2),
                        "tensors": len(ranges)},
        "quantized_nodes": n_quant,
        "bias_corrected_layers": corrected[0],
        "equalized_pairs": equalized,
        "kept_float": kept,
        "max_drop": max_drop,
        "within_budget": None if max_drop is None or accuracy is None else bool(accuracy["drop"] <= max_drop + 1e-12),
        "accuracy": accuracy,
        "search": tries,
        "size": sizes,
        "per_layer": rows,
    }
    return report
