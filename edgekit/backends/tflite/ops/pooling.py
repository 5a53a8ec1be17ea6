"""MaxPool, AveragePool (1-D and 2-D), GlobalAveragePool, GlobalMaxPool (channels-last)."""

from __future__ import annotations

import math

import numpy as np

from edgekit.backends.tflite.context import channels_last
from edgekit.backends.tflite.ops.common import explicit_pads, pad_nhwc, tf_padding, unsupported
from edgekit.backends.tflite.ops.conv import as_2d
from edgekit.backends.tflite.ops.registry import register


def _pool(ctx, node, tfl: str) -> None:
    """2-D pooling on NCHW; 1-D pooling on NCL runs as 2-D on (N, 1, L, C) and is reshaped back."""
    x = node.input[0]
    rank = len(ctx.shape(x))
    if rank not in (3, 4):
        raise unsupported(node, f"{rank - 2}-D pooling (only 1-D and 2-D)")
    a = ctx.attrs(node)
    nsp = rank - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nsp))
    if any(d != 1 for d in a.get("dilations", [1] * nsp)):
        raise unsupported(node, "dilated pooling")
    in_sp = list(ctx.shape(x)[2:])
    pads = explicit_pads(node, a, in_sp, kernel, strides, [1] * nsp)
    out_sp = list(ctx.shape(node.output[0])[2:])
    if nsp == 1:
        kernel, strides, pads, in_sp, out_sp = [1, *kernel], [1, *strides], [(0, 0), *pads], [1, *in_sp], [1, *out_sp]
    # ceil_mode (or any extra output rows): grow the end padding until floor arithmetic gives ONNX's size
    extra = []
    for i in range(2):
        floor_out = (in_sp[i] + pads[i][0] + pads[i][1] - kernel[i]) // strides[i] + 1
        extra.append(max(0, (out_sp[i] - floor_out) * strides[i]))
    grown = [(b, e + x_) for (b, e), x_ in zip(pads, extra)]
    v = ctx.x(x, channels_last(rank))
    if rank == 3:
        v = as_2d(ctx, node, v, rank)
    padding = tf_padding(grown, in_sp, kernel, strides, [1, 1]) if not any(extra) else None
    factor = None
    if tfl == "AVERAGE_POOL_2D":
        include = int(a.get("count_include_pad", 0))
        if not (padding == "VALID" or (padding == "SAME" and not include)):
            # zero-pad explicitly, average over the full window, then rescale each output position to
            # ONNX's divisor (pads counted or not; ceil_mode windows clipped to the padded input)
            v, _ = pad_nhwc(ctx, v, grown, x)
            padding = "VALID"
            factor = avg_rescale(in_sp, kernel, strides, pads, out_sp, bool(include))
    elif padding is None:
        v, _ = pad_nhwc(ctx, v, grown, x, value=-3.0e38)
        padding = "VALID"
    from ai_edge_litert import schema_py_generated as fb

    n, c = ctx.shape(x)[:2]
    shape4 = (n, *out_sp, c)
    y = ctx.out(node.output[0], channels_last(4), q=v.q) if factor is None and rank == 4 else \
        ctx.tensor(node.output[0] + "/window", shape4, v.dtype, q=v.q)
    # floor arithmetic of SAME/VALID must reproduce the ONNX size
    ctx.op(tfl, [v.idx], [y], "Pool2DOptions", padding=getattr(fb.Padding, padding), strideH=strides[0],
           strideW=strides[1], filterHeight=kernel[0], filterWidth=kernel[1])
    if factor is not None:
        f = ctx.const_like(factor.reshape(1, 1, *out_sp), node.output[0] + "/divisor", 4, channels_last(4))
        out = ctx.out(node.output[0], channels_last(4)) if rank == 4 else ctx.tensor(
            node.output[0] + "/2d", shape4, np.int8 if ctx.wants_int8(node.output[0]) else np.float32,
            q=ctx.out_q_of(node.output[0]))
        ctx.op("MUL", [y, f.idx], [out], "MulOptions")
        y = out
    got = ctx.w.shape_of(y)
    if padding == "SAME":
        assert list(got[1:3]) == [math.ceil(s / st) for s, st in zip(in_sp, strides)]
    if rank == 3:
        final = ctx.out(node.output[0], channels_last(3), q=v.q if factor is None else None)
        shp = [n, out_sp[1], c]
        ctx.op("RESHAPE", [y, ctx.i32(shp)], [final], "ReshapeOptions", newShape=shp)


def avg_rescale(in_sp: list[int], kernel: list[int], strides: list[int], pads: list[tuple[int, int]],
                out_sp: list[int], include_pad: bool) -> np.ndarray | None:
    """(OH, OW) factors turning a mean over the full k*k window of the zero-padded input into ONNX's
    average: k*k / (number of counted positions). None when every factor is 1."""
    counts = []
    for size, k, s, (pb, pe), n_out in zip(in_sp, kernel, strides, pads, out_sp):
        start = np.arange(n_out) * s - pb
        end = start + k
        if include_pad:
            cnt = np.minimum(end, size + pe) - start
        else:
            cnt = np.minimum(end, size) - np.maximum(start, 0)
        counts.append(np.maximum(cnt, 1))
    divisor = np.outer(counts[0], counts[1]).astype(np.float64)
    factor = (kernel[0] * kernel[1] / divisor).astype(np.float32)
    return None if np.all(factor == 1.0) else factor


@register("MaxPool", int8=True)
def max_pool(ctx, node) -> None:
    if len(node.output) > 1 and node.output[1]:
        raise unsupported(node, "the Indices output")
    if int(ctx.attrs(node).get("storage_order", 0)):
        raise unsupported(node, "storage_order=1")
    _pool(ctx, node, "MAX_POOL_2D")


@register("AveragePool", int8=True)
def average_pool(ctx, node) -> None:
    _pool(ctx, node, "AVERAGE_POOL_2D")


def _global(ctx, node, tfl: str, same_q: bool) -> None:
    x = node.input[0]
    rank = len(ctx.shape(x))
    perm = channels_last(rank)
    v = ctx.x(x, perm)
    axes = list(range(1, rank - 1))
    y = ctx.out(node.output[0], perm, q=v.q if same_q else None)
    ctx.op(tfl, [v.idx, ctx.i32(np.asarray(axes), "axes")], [y], "ReducerOptions", keepDims=True)


@register("GlobalAveragePool", int8=True)
def global_average_pool(ctx, node) -> None:
    _global(ctx, node, "MEAN", same_q=False)


@register("GlobalMaxPool", int8=True)
def global_max_pool(ctx, node) -> None:
    _global(ctx, node, "REDUCE_MAX", same_q=True)
