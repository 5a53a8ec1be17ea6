"""Whether a clean-up pass kept an ONNX graph's meaning: both graphs run in ONNX Runtime on one random input.

onnxslim folds shape arithmetic with its own symbolic shape inference. On milesial/Pytorch-UNet's odd-size skip
(F.pad of the upsampled map by the size difference read from the tensors: a Slice with step -1 reverses the pad
pairs) it folded the pads to [0, 0, 1, 1, 0, 0, 0, 0] where the exporter's graph computes [0, 0, 0, 0, 0, 0, 1, 1]:
the map moved by one pixel, and every target failed fp32 verification (max abs error 0.003, exit 3) on a correct
model. A pass whose graph disagrees with its input is not taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHECK_MAX_BYTES = 1 << 30  # larger graphs are not copied to be run twice (memory; protobuf's 2 GB limit)
RTOL = 1e-3  # of the output's largest magnitude: fusions (GELU, LayerNorm) move float results by ~1e-6


def _feeds(model: Any, seed: int = 0) -> dict[str, np.ndarray] | None:
    """One random input per graph input (dynamic axes of size 1), or None for a type this check does not draw."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError):
            return None
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iub":
            feeds[vi.name] = np.zeros(shape, dtype)  # ids 0, masks off: valid for any table
        else:
            return None
    return feeds


def _run(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def same_outputs(before: bytes, after: Any, before_model: Any = None) -> tuple[bool, float]:
    """(agree, largest difference relative to the output's magnitude) of the serialized graph `before` and the
    ModelProto `after`. A graph that cannot be fed or run here (a type not drawn, an input ONNX Runtime refuses)
    counts as agreeing: nothing to compare. before_model: `before` as a ModelProto when the caller has it (its
    inputs are drawn from it; parsing `before` again only for them copied every weight once more)."""
    import onnx

    feeds = _feeds(before_model if before_model is not None else onnx.load_from_string(before))
    if feeds is None:
        return True, 0.0
    try:
        ref = _run(before, feeds)
    except Exception:  # noqa: BLE001  the exporter's graph itself does not run on this input: no reference
        return True, 0.0
    try:
        got = _run(after.SerializeToString(), feeds)
    except Exception:  # noqa: BLE001  the cleaned graph fails where the original runs
        return False, float("inf")
    if len(ref) != len(got):
        return False, float("inf")
    worst = 0.0
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            return False, float("inf")
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        both = np.isfinite(a64) & np.isfinite(b64)
        if not np.array_equal(np.isfinite(a64), np.isfinite(b64)):
            return False, float("inf")
        if both.any():
            scale = max(1.0, float(np.abs(a64[both]).max()))
            worst = max(worst, float(np.abs(a64[both] - b64[both]).max()) / scale)
    return worst <= RTOL, worst
