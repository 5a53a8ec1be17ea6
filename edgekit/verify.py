"""Run an artifact in its runtime and compare it with the source model.

Figures: max and mean absolute error (over every float output element of every sample), cosine similarity
(per sample, of each float output flattened, the worst output; the minimum over samples is reported, and the
mean), top-1 agreement for classifiers (argmax over the first output's class axis, `class_rows`; per sample the
share of rows that agree), and for integer outputs (argmax labels, ids, masks) the share of equal elements
(`integer_agreement`; floor: the target's `integer_agreement`, else its `top1_agreement`, else 0.999). A model
whose every output is integer has no float figures (None). Tolerances come from the target's
[verify.<precision>] table: `max_abs_error` is relative to the reference's largest magnitude when that
exceeds 1 (logits of a few tens tolerate proportionally more), `cosine` (worst sample), `cosine_mean` and
`top1_agreement` are minima. An int8 artifact is checked twice against the fp32 source: with absolute
floors that catch a broken quantization (the ordinary int8 error is the user's budget, see --max-drop),
and relative to the int8 ONNX graph itself run as written (`max_loss_vs_quantized_graph`): a backend
may round differently, or keep more in float, but must not be clearly worse than the graph it lowered.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from edgekit.sources.model import LoadedModel

Outputs = list[np.ndarray]


def reference_outputs(model: LoadedModel, samples: Iterable[dict[str, np.ndarray]]) -> list[Outputs]:
    """The source model's own answer: torch eager for torch sources, ORT (no graph optimizations) for ONNX."""
    if model.module is not None:
        import torch

        from edgekit.sources.torch_common import flat_outputs

        outs = []
        with torch.no_grad():
            for feed in samples:
                res = model.module(*[torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in model.inputs])
                outs.append([_as_output(r.detach().numpy()) for r in flat_outputs(res)])
        return outs
    from edgekit.backends.base import LoadOptions
    from edgekit.backends.onnxruntime import load
    from edgekit.errors import UnsupportedModelError

    try:
        sess = load(model.onnx_path, LoadOptions(extra={"optimization": "none"}))
    except UnsupportedModelError as exc:  # no target helps: every one is verified against this run
        raise UnsupportedModelError(f"the source model: {exc.message} (ONNX Runtime computes the reference outputs "
                                    "every target is verified against)",
                                    hint="replace the operator in the source model with standard ONNX ops") from exc
    return [sess.run(feed) for feed in samples]


def run_all(session: Any, samples: Iterable[dict[str, np.ndarray]]) -> list[Outputs]:
    return [[_as_output(o) for o in session.run(feed)] for feed in samples]


def _as_output(value: Any) -> np.ndarray:
    """float32, except integer and bool outputs (argmax indices, ids, masks), which `compare` judges exactly."""
    return np.asarray(value) if is_integer(value) else np.asarray(value, dtype=np.float32)


def _finite(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, c, |r - c|) where the same non-finite value on both sides (a masked -inf log-probability, a NaN the
    source computes too) is a match, counted as 0 in both; a non-finite value on one side only is an infinite error."""
    if np.isfinite(r).all() and np.isfinite(c).all():
        return r, c, np.abs(r - c)
    same = (r == c) | (np.isnan(r) & np.isnan(c))
    both = np.isfinite(r) & np.isfinite(c)
    d = np.where(both, np.abs(np.where(both, r, 0.0) - np.where(both, c, 0.0)), np.where(same, 0.0, np.inf))
    return np.where(both, r, 0.0), np.where(both, c, 0.0), d


def cosine(r: Any, c: Any) -> float:
    """Cosine similarity of two arrays, flattened (1.0 when both are all zeros)."""
    r, c = np.asarray(r, np.float64).ravel(), np.asarray(c, np.float64).ravel()
    if np.array_equal(r, c):  # exactly 1 (r @ r / |r|^2 rounds to 0.9999999999999998: a floor of 1 then fails)
        return 1.0
    denom = np.linalg.norm(r) * np.linalg.norm(c)
    return float(np.clip(r @ c / denom, -1.0, 1.0)) if denom > 0 else float(np.allclose(r, c))


def _paired(refs: list[Outputs], cands: list[Outputs]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """(reference, candidate) arrays per sample and output, the candidate in the reference's shape."""
    if len(refs) != len(cands) or not refs:
        raise ValueError("reference and candidate must have the same, non-zero number of samples")
    pairs = []
    for ref, cand in zip(refs, cands):
        if len(ref) != len(cand):
            raise ValueError(f"artifact has {len(cand)} outputs, the source model {len(ref)}")
        row = []
        for r, c in zip(ref, cand):
            r, c = np.asarray(r), np.asarray(c)
            if r.shape != c.shape:
                if r.size != c.size:
                    raise ValueError(f"output shape {c.shape} differs from the source model's {r.shape}")
                c = c.reshape(r.shape)
            row.append((r, c))
        pairs.append(row)
    return pairs


def _finite_f64(v: Any) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(v, np.float64)
    ok = np.isfinite(v)
    return np.where(ok, v, 0.0), ok


def feature_axis(shape: tuple[int, ...]) -> int | None:
    """The axis whose entries are different quantities: the shortest non-batch axis longer than 1, when it is at
    most half as long as another (a YOLO head's 4 + K columns of (1, 8400, 4 + K) or its (1, 4 + K, 8400), a
    segmentation map's classes, a pose net's joints, an image's colours); None for a plain vector or map."""
    long = [(d, i) for i, d in enumerate(shape) if i >= 1 and d > 1]
    if len(long) < 2:
        return None
    d, axis = min(long)
    return axis if 2 * d <= max(e for e, i in long if i != axis) else None


def _standardizer(values: list[np.ndarray]) -> tuple[Any, Any]:
    """(centre, scale) a generic output is compared with, from the reference over every sample (accumulated sample
    by sample: 100 segmentation maps of 21x512x512 are 4 GB as one float64 array).

    Centre: the reference's mean; per feature (feature_axis) with each feature scaled by its spread, so that one
    tensor of box corners in pixels and class scores in 0..1 does not hide all-zero scores behind its boxes.
    (0, 1) (the plain cosine) for an output that varies by no more than 1e-3 of its magnitude: about its mean
    that is float32 rounding (10 ulps of a value around 40 are 5e-5)."""
    n, total = 0, 0.0
    for v in values:
        v, ok = _finite_f64(v)
        n, total = n + int(ok.sum()), total + float(v.sum())
    if not n:
        return 0.0, 1.0
    mu = total / n
    spread = np.sqrt(sum(float(np.square(np.where(ok, v - mu, 0.0)).sum()) for v, ok in map(_finite_f64, values)) / n)
    if not spread > 1e-3 * abs(mu):
        return 0.0, 1.0
    shape = np.shape(values[0])
    axis = feature_axis(shape)
    if axis is None or any(np.shape(v) != shape for v in values):
        return mu, 1.0
    others = tuple(i for i in range(len(shape)) if i != axis)
    count = sum(ok.sum(axis=others, keepdims=True) for _, ok in map(_finite_f64, values))
    mu_f = sum(v.sum(axis=others, keepdims=True) for v, _ in map(_finite_f64, values)) / np.maximum(count, 1)
    var_f = sum(np.where(ok, np.square(v - mu_f), 0.0).sum(axis=others, keepdims=True)
                for v, ok in map(_finite_f64, values)) / np.maximum(count, 1)
    sd_f = np.sqrt(var_f)
    scale = np.maximum(sd_f, np.maximum(1e-3 * np.abs(mu_f), 1e-3 * spread))
    if float(np.sqrt(np.mean(np.square(sd_f / scale)))) < 0.1:  # no feature varies beyond rounding: whole-output
        return mu, 1.0
    return mu_f, scale


def _scored(r: np.ndarray, c: np.ndarray, d: np.ndarray) -> float:
    """cosine(r, c); 0 (unrelated) when a value is inf/NaN on one side only, which the cosine cannot see."""
    return 0.0 if np.isinf(d).any() else cosine(r, c)


def output_scores(refs: list[Outputs], cands: list[Outputs], task: str) -> list[list[float]]:
    """Per sample, per output: the cosine of a float output, the share of equal elements of an integer one.

    A generic model's float outputs are compared about the reference's mean (over every sample and element; per
    feature, each scaled by its spread, see _standardizer): depth in metres, boxes in pixels, scores near 0.5, an
    image are far from zero, and a plain cosine called an output stuck at its mean 0.999 (a depth map), and a
    YOLO-style (1, M, 4 + K) tensor with all-zero scores 0.9999995. An
    output of one value per sample (a similarity, an angle) has no direction of its own: it is judged over the
    samples together. Classifier logits and embeddings keep the plain cosine."""
    return _scores(_paired(refs, cands), task)


def _agree(r: np.ndarray, c: np.ndarray, quantity: bool) -> np.ndarray:
    """Which integer elements agree: equal labels, or a rounded quantity (a uint8 image) within one level
    (verify_quantities.py)."""
    if quantity:
        return np.abs(r.astype(np.int64) - c.astype(np.int64)) <= 1
    return r == c


def _scores(pairs: list[list[tuple[np.ndarray, np.ndarray]]], task: str,
            quantities: Sequence[int] = ()) -> list[list[float]]:
    scores = [[0.0] * len(row) for row in pairs]
    for o in range(len(pairs[0])):
        column = [row[o] for row in pairs]
        if is_integer(column[0][0]):
            for s, (r, c) in enumerate(column):
                scores[s][o] = float(np.mean(_agree(r, c, o in quantities))) if r.size else 1.0
            continue
        mu, scale = _standardizer([r for r, _ in column]) if task == "generic" else (0.0, 1.0)
        if task == "generic" and all(r.size == 1 for r, _ in column) and len(column) > 1:
            r, c, d = _finite(*(np.array([np.asarray(p[i], np.float64).ravel()[0] for p in column]) for i in (0, 1)))
            joint = _scored(r - mu, c - mu, d)
            for s in range(len(column)):
                scores[s][o] = joint
            continue
        for s, (r, c) in enumerate(column):
            r, c, d = _finite(np.asarray(r, np.float64), np.asarray(c, np.float64))
            scores[s][o] = _scored((r - mu) / scale, (c - mu) / scale, d)
    return scores


def compare(refs: list[Outputs], cands: list[Outputs], task: str, quantities: Sequence[int] = ()) -> dict[str, Any]:
    """Figures of `cands` against `refs`. quantities: indices of integer outputs that are rounded quantities (a uint8
    image; verify_quantities.quantity_outputs), whose elements agree within one level."""
    pairs = _paired(refs, cands)
    scores = _scores(pairs, task, quantities)
    max_abs, abs_sum, count, cosines, agree, ref_peak = 0.0, 0.0, 0, [], 0, 0.0
    confident, confident_agree = 0, 0
    exact, n_int, int_equal, int_count, one_sided = 0, 0, 0, 0, 0
    classes: set[int] = set()  # the source's top-1 classes over the samples
    for ref, row, score in zip(refs, pairs, scores):
        per_output: list[float] = []
        integer = [is_integer(r) for r in ref]
        for o, ((r, c), is_int, cos) in enumerate(zip(row, integer, score)):
            if is_int:
                # indices, ids, masks: labels, not magnitudes (500 -> 3 is no further off than 500 -> 501), judged
                # by the share of equal elements; a segmentation map's near-tie pixels may flip in fp32 as well
                int_equal += int(np.count_nonzero(_agree(r, c, o in quantities)))
                int_count += r.size
                continue
            r, c, d = _finite(np.asarray(r, dtype=np.float64), np.asarray(c, dtype=np.float64))
            max_abs = max(max_abs, float(d.max(initial=0.0)))
            one_sided += int(np.count_nonzero(np.isinf(d)))
            abs_sum += float(d.sum())
            count += d.size
            ref_peak = max(ref_peak, float(np.abs(r).max(initial=0.0)))
            # each output on its own: a large output (decoded boxes in pixels) would hide a broken small one (scores)
            per_output.append(cos)
        if any(integer):
            n_int += 1
            exact += all(np.array_equal(r, c) for (r, c), i in zip(row, integer) if i)
        if per_output:
            cosines.append(min(per_output))
        if task == "classification":
            same = top1_same(ref[0], row[0][1])
            agree += same
            classes.update(np.asarray(ref[0]).reshape(-1, np.shape(ref[0])[-1]).argmax(-1).tolist()
                           if np.ndim(ref[0]) else [])
            if top1_probability(ref[0]) >= CONFIDENT:
                confident += 1
                confident_agree += same
    floats = bool(count)  # float figures are None for a model whose every output is integer (an argmax map)
    return {
        "max_abs_error": max_abs if floats else None,
        "mean_abs_error": abs_sum / count if floats else None,
        "cosine": min(cosines) if floats else None,
        "cosine_mean": float(np.mean(cosines)) if floats else None,
        "top1_agreement": agree / len(refs) if task == "classification" else None,
        # context, not a gate: agreement where the source model itself is decisive (inputs like a labelled
        # benchmark's); disagreements elsewhere are near-ties that any perturbation may flip
        "top1_agreement_confident": confident_agree / confident if confident else None,
        "confident_samples": confident if task == "classification" else None,
        # one class for every sample (a skewed set, a collapsed model): top-1 agreement cannot show a changed answer
        "reference_classes": len(classes) if task == "classification" else None,
        "samples": len(refs),
        "reference_peak": ref_peak,
        # inf/NaN on one side only (an int8 log of a value rounded to 0): always a failure
        "non_finite_mismatches": one_sided,
        "integer_agreement": int_equal / int_count if int_count else None,  # share of equal integer elements
        "integer_outputs_exact": exact / n_int if n_int else None,  # share of samples with all of them equal
    }


def summary(figures: dict[str, Any]) -> str:
    """One log line's worth of figures: errors and cosine of the float outputs, top-1 agreement, integer outputs."""
    parts = []
    if figures.get("cosine") is not None:
        parts.append(f"max abs error {figures['max_abs_error']:.3g}, cosine {figures['cosine_mean']:.6f} "
                     f"(worst {figures['cosine']:.6f})")
    if figures.get("top1_agreement") is not None:
        top1 = f"top-1 agreement {figures['top1_agreement']:.3f}"
        if figures.get("top1_agreement_confident") is not None and figures["top1_agreement"] < 1.0:
            top1 += (f" ({figures['top1_agreement_confident']:.3f} on the {figures['confident_samples']} samples "
                     f"the source classifies with p >= 0.5)")
        if figures.get("reference_classes") == 1 and figures.get("samples", 0) > 1:
            top1 += " (the source gives every sample one class: top-1 agreement shows nothing here, cosine does)"
        parts.append(top1)
    if figures.get("integer_agreement") is not None:
        parts.append(f"integer outputs: {figures['integer_agreement']:.4f} of elements equal, "
                     f"{figures['integer_outputs_exact']:.3f} of samples identical")
    return ", ".join(parts)


CONFIDENT = 0.5  # a sample is "confident" when the source's top-1 probability is at least this


def _rows(outputs: list[Any]) -> np.ndarray:
    """One output over several samples as float64 rows of its last axis."""
    return np.concatenate([np.asarray(o, np.float64).reshape(-1, np.shape(o)[-1]) for o in outputs])


def looks_like_class_scores(outputs: list[Any]) -> bool:
    """Whether a single (N, C) output, seen on real samples, can be class scores: logits (some negative somewhere)
    or probabilities (rows summing to 1). All non-negative rows that do not sum to 1 are regression values
    (landmarks or a box in pixels, a sigmoid-scaled measure), multi-label scores or indices: top-1 agreement
    means nothing there."""
    x = _rows(outputs)
    x = x[np.isfinite(x).all(-1)]
    if not x.size or (x < 0).any():
        return True
    return bool(np.allclose(x.sum(-1), 1.0, atol=1e-3))


def looks_like_unit_embeddings(outputs: list[Any]) -> bool:
    """Whether a single (N, D) output holds L2-normalized rows (a sentence or image embedding model ending in a
    normalization): every row's norm within 1e-3 of 1, and not probabilities (those sum to 1 instead)."""
    x = _rows(outputs)
    if x.shape[-1] < 2 or not x.size or not np.isfinite(x).all():
        return False
    return bool(np.allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-3) and not np.allclose(x.sum(-1), 1.0, atol=1e-3))


def class_rows(output: Any) -> np.ndarray:
    """A classifier output as (rows, classes): the class axis is the last axis longer than 1 past the batch
    axis, so (N, C), (N, 1, C) and a conv head's (N, C, 1, 1) are N rows of C (argmax over a trailing axis of
    1 always agreed), (N, T, C) token logits N*T rows."""
    x = np.asarray(output)
    long = [d for d in x.shape[1:] if d != 1]
    return x.reshape(-1, long[-1] if long else 1)


def top1_same(ref: Any, cand: Any) -> float:
    """The share of a sample's rows (one for an image classifier) whose argmax agrees."""
    r = class_rows(ref)
    c = class_rows(np.asarray(cand).reshape(np.shape(ref)))
    return float(np.mean(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))


def class_axis_problem(output: Any) -> str | None:
    """Why an output cannot be judged by top-1 agreement: more than (rows, classes) of long axes (a segmentation
    map (N, C, H, W), whose argmax over W means nothing); None when it can."""
    shape = np.shape(output)
    if len([d for d in shape[1:] if d != 1]) > 2:
        return f"its shape {tuple(shape)} is a dense map, not (N, C) or (N, T, C) class scores"
    return None


def top1_probability(output: Any) -> float:
    """The smallest top-1 probability over the rows of a classifier output: its own values when they are
    already probabilities (non-negative, rows summing to 1), else their softmax (logits)."""
    x = class_rows(np.asarray(output, dtype=np.float64))
    if not np.isfinite(x).all():
        return 0.0
    if x.min() >= 0 and np.allclose(x.sum(-1), 1.0, atol=1e-3):
        p = x
    else:
        e = np.exp(x - x.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
    return float(p.max(-1).min())


def is_integer(value: Any) -> bool:
    """Outputs judged exactly, by their share of equal elements: integers, bools, and strings (a classifier's label
    output, scikit-learn style: read as float32 it was an internal error 'could not convert string to float')."""
    return np.asarray(value).dtype.kind in "iubOSU"


def check(figures: dict[str, Any], tolerances: dict[str, float]) -> tuple[bool, list[str]]:
    """Apply a target's tolerances; returns (passed, reasons it failed). A figure that is None (no float
    output, not a classifier) is not gated."""
    failures = []
    floats = figures.get("cosine") is not None
    if figures.get("non_finite_mismatches"):
        failures.append(f"{figures['non_finite_mismatches']} output value(s) are inf or NaN where the source model's "
                        "are finite, or the reverse")
    if "max_abs_error" in tolerances and floats:
        limit = tolerances["max_abs_error"] * max(1.0, figures.get("reference_peak", 1.0))
        if not figures["max_abs_error"] <= limit:
            failures.append(f"max abs error {figures['max_abs_error']:.3g} > {limit:.3g}")
    if "cosine" in tolerances and floats and not figures["cosine"] >= tolerances["cosine"]:
        failures.append(f"cosine {figures['cosine']:.6f} < {tolerances['cosine']} (worst sample)")
    if "cosine_mean" in tolerances and floats and not figures["cosine_mean"] >= tolerances["cosine_mean"]:
        failures.append(f"mean cosine {figures['cosine_mean']:.6f} < {tolerances['cosine_mean']}")
    hub = figures.get("quantized_graph")  # the int8 ONNX graph's own figures against the source
    margin = tolerances.get("max_loss_vs_quantized_graph")
    if hub is not None and margin is not None and floats and figures["cosine_mean"] < hub["cosine_mean"] - margin \
            and not hub.get("within_one_step"):  # one int8 step from the graph is its rounding (verify_steps.py)
        failures.append(f"mean cosine {figures['cosine_mean']:.4f} trails the int8 ONNX graph's "
                        f"{hub['cosine_mean']:.4f} by more than {margin} (the backend lowered it wrongly)")
    if "top1_agreement" in tolerances and figures.get("top1_agreement") is not None:
        if not figures["top1_agreement"] >= tolerances["top1_agreement"]:
            failures.append(f"top-1 agreement {figures['top1_agreement']:.3f} < {tolerances['top1_agreement']}")
    agreement = figures.get("integer_agreement")
    if agreement is not None:
        floor = integer_floor(tolerances)
        if not agreement >= floor:
            failures.append(f"integer outputs agree on {agreement:.4f} of their elements < {floor}")
        if hub is not None and margin is not None and hub.get("integer_agreement") is not None \
                and agreement < hub["integer_agreement"] - margin:
            failures.append(f"integer outputs agree on {agreement:.4f} of their elements, the int8 ONNX graph's "
                            f"on {hub['integer_agreement']:.4f} (the backend lowered it wrongly)")
    return (not failures), failures


INTEGER_AGREEMENT = 0.999  # fp32: one element in a thousand may flip (a near-tie of an argmax map)


def integer_floor(tolerances: dict[str, float]) -> float:
    """The least share of equal elements integer outputs (argmax labels, ids, masks) need: the target's
    `integer_agreement`, else its top-1 agreement floor (an argmax label is a top-1 decision), else 0.999."""
    return float(tolerances.get("integer_agreement", tolerances.get("top1_agreement", INTEGER_AGREEMENT)))
