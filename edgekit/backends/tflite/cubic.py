"""Resize mode=cubic as constant matrix products (static shapes: bicubic resizing is a separable linear map).

Each resized axis k of the channels-last tensor (N, s1, ..., sn, C) is one product M_k @ X with the tensor
reshaped to (N * s1..s(k-1), s_k, s(k+1)..sn * C) and M_k the (out, in) matrix of ONNX's cubic weights for that
axis: coordinate mapping per coordinate_transformation_mode, the 4-tap kernel with cubic_coeff_a, taps outside the
input clamped to the border (or dropped and the rest renormalized with exclude_outside). The products lower to
BATCH_MATMUL with a constant left operand; the transposes in and out of channels-last are relabellings when the
input is already stored channels-last (the usual case after a convolution).
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from edgekit.backends.tflite.decompose import _attr, _Emit, _unsupported

COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")


def _kernel(t: float, a: float) -> list[float]:
    """Weights of the taps at floor(x) - 1 .. floor(x) + 2 for fractional offset t (Keys' cubic convolution)."""
    def w(d: float) -> float:
        d = abs(d)
        if d <= 1:
            return ((a + 2) * d - (a + 3)) * d * d + 1
        if d < 2:
            return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return 0.0

    return [w(t + 1), w(t), w(1 - t), w(2 - t)]


def source_coord(i: int, n_in: int, n_out: int, scale: float, mode: str) -> float:
    if mode == "align_corners":
        return 0.0 if n_out == 1 else i * (n_in - 1) / (n_out - 1)
    if mode == "asymmetric":
        return i / scale
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if n_out > 1 else 0.0
    if mode == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        return n_in / 2 * (1 - adjustment) + (i + 0.5) / scale - 0.5
    return (i + 0.5) / scale - 0.5  # half_pixel


def cubic_matrix(n_in: int, n_out: int, scale: float, mode: str, a: float, exclude_outside: bool) -> np.ndarray:
    """The (n_out, n_in) matrix M with resized = M @ x along one axis."""
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        x = source_coord(i, n_in, n_out, scale, mode)
        x0 = math.floor(x)
        taps = [(x0 - 1 + k, c) for k, c in enumerate(_kernel(x - x0, a))]
        if exclude_outside:
            taps = [(j, c) for j, c in taps if 0 <= j < n_in]
            total = sum(c for _, c in taps)
            taps = [(j, c / total) for j, c in taps] if total else taps
        for j, c in taps:
            m[i, min(max(j, 0), n_in - 1)] += c
    return m


def _scales(g, node, rank: int) -> np.ndarray | None:
    """The scale per axis given by the node (None when it gives output sizes)."""
    if g.opset < 11:
        name = node.input[1] if len(node.input) > 1 else ""
    else:
        if len(node.input) > 3 and node.input[3]:
            return None
        name = node.input[2] if len(node.input) > 2 else ""
    if not name or name not in g.consts or np.size(g.consts[name]) == 0:
        return None
    given = np.asarray(g.consts[name], np.float64).reshape(-1)
    full = np.ones(rank)
    axes = [int(ax) % rank for ax in _attr(node, "axes", list(range(rank)))][:given.size]
    full[axes] = given
    return full


def resize_cubic(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    if _attr(node, "mode", "nearest") != "cubic":
        return [node]
    x, out = node.input[0], node.output[0]
    shape, out_shape = g.shapes.get(x), g.shapes.get(out)
    if shape is None or out_shape is None:
        return [node]
    mode = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode not in COORD_MODES:
        raise _unsupported(node, f"cubic resizing with coordinate_transformation_mode={mode}")
    rank = len(shape)
    if rank < 3 or tuple(shape[:2]) != tuple(out_shape[:2]):
        raise _unsupported(node, "cubic resizing of the batch or channel axis")
    if int(_attr(node, "antialias", 0)) and any(o < i for o, i in zip(out_shape[2:], shape[2:])):
        raise _unsupported(node, "antialiased cubic downscaling")
    a, excl = float(_attr(node, "cubic_coeff_a", -0.75)), bool(int(_attr(node, "exclude_outside", 0)))
    scales = _scales(g, node, rank)
    e = _Emit(g, node)
    q = g.act_quant.get(out)  # int8 graph: every intermediate takes the output's params

    def tensor(name: str, shp: tuple[int, ...]) -> str:
        g.shapes[name], g.dtypes[name] = shp, g.dtypes.get(x, np.dtype(np.float32))
        if q is not None:
            g.act_quant[name] = q
        return name

    last = [0, *range(2, rank), 1]
    cur = e.op("Transpose", [x], tensor(e.name("nhwc"), tuple(shape[p] for p in last)), perm=last)
    sizes = [int(s) for s in shape[2:]]
    n, c = int(shape[0]), int(shape[1])
    for k in range(rank - 2):
        n_in, n_out = sizes[k], int(out_shape[2 + k])
        scale = float(scales[2 + k]) if scales is not None else n_out / n_in
        if n_in == n_out and (mode == "align_corners" or scale == 1.0):
            continue  # the identity map
        mat = cubic_matrix(n_in, n_out, scale, mode, a, excl).astype(np.float32)
        before, after = n * int(np.prod(sizes[:k])), int(np.prod(sizes[k + 1:])) * c
        flat = e.op("Reshape", [cur, e.const(np.asarray([before, n_in, after], np.int64), "shape")],
                    tensor(e.name("flat"), (before, n_in, after)))
        cur = e.op("MatMul", [e.const(mat, "cubic"), flat], tensor(e.name("resized"), (before, n_out, after)))
        sizes[k] = n_out
        full = (n, *sizes, c)
        cur = e.op("Reshape", [cur, e.const(np.asarray(full, np.int64), "shape")], tensor(e.name("axes"), full))
    back = [0, rank - 1, *range(1, rank - 1)]
    e.op("Transpose", [cur], out, perm=back)
    return e.nodes
