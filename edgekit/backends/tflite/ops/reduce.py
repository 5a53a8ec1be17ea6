"""ReduceMean/Max/Min/Sum/Prod/SumSquare/L2 and ArgMax/ArgMin, in whatever layout the input is stored."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import drop_axes
from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register

_REDUCE = {"ReduceMean": "MEAN", "ReduceMax": "REDUCE_MAX", "ReduceMin": "REDUCE_MIN", "ReduceSum": "SUM",
           "ReduceProd": "REDUCE_PROD"}
_SAME_Q = {"REDUCE_MAX", "REDUCE_MIN"}


def _axes(ctx, node) -> list[int] | None:
    a = ctx.attrs(node)
    rank = len(ctx.shape(node.input[0]))
    if "axes" in a:
        axes = list(a["axes"])
    elif len(node.input) > 1 and node.input[1]:
        if not ctx.is_const(node.input[1]):
            raise unsupported(node, "axes must be constant")
        axes = [int(v) for v in ctx.const(node.input[1]).reshape(-1)]
    else:
        axes = []
    if not axes:
        return None if a.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(ax % rank for ax in axes)


def reduce(ctx, tfl: str, x: str, out: str, axes: list[int], keep: bool, src=None) -> None:
    v = src if src is not None else ctx.x(x)
    stored = sorted(v.perm.index(ax) for ax in axes)
    perm = v.perm if keep else drop_axes(v.perm, set(axes))
    y = ctx.out(out, perm, q=v.q if tfl in _SAME_Q and v.q is not None else None)
    ctx.op(tfl, [v.idx, ctx.i32(np.asarray(stored), "axes")], [y], "ReducerOptions", keepDims=keep)


def _is_int8_reduce(ctx, node) -> bool:
    return node.op_type in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum")


@register(*_REDUCE, int8=_is_int8_reduce)
def reduce_op(ctx, node) -> None:
    axes = _axes(ctx, node)
    if axes is None:
        ctx.alias(node.output[0], ctx.x(node.input[0]))
        return
    keep = bool(ctx.attrs(node).get("keepdims", 1))
    reduce(ctx, _REDUCE[node.op_type], node.input[0], node.output[0], axes, keep)


@register("ReduceSumSquare", "ReduceL2")
def reduce_square(ctx, node) -> None:
    axes = _axes(ctx, node) or list(range(len(ctx.shape(node.input[0]))))
    keep = bool(ctx.attrs(node).get("keepdims", 1))
    v = ctx.x(node.input[0])
    sq = ctx.tensor(node.output[0] + "/square", ctx.w.shape_of(v.idx), np.float32)
    ctx.op("MUL", [v.idx, v.idx], [sq], "MulOptions")
    from edgekit.backends.tflite.context import Val

    if node.op_type == "ReduceSumSquare":
        reduce(ctx, "SUM", node.input[0], node.output[0], axes, keep, src=Val(sq, v.perm, v.dtype))
        return
    perm = v.perm if keep else drop_axes(v.perm, set(axes))
    stored = sorted(v.perm.index(ax) for ax in axes)
    from edgekit.backends.tflite.context import permute

    s = ctx.tensor(node.output[0] + "/sum", permute(ctx.shape(node.output[0]), perm), np.float32)
    ctx.op("SUM", [sq, ctx.i32(np.asarray(stored), "axes")], [s], "ReducerOptions", keepDims=keep)
    y = ctx.out(node.output[0], perm)
    ctx.op("SQRT", [s], [y])


@register("ArgMax", "ArgMin")
def arg_max(ctx, node) -> None:
    a = ctx.attrs(node)
    if a.get("select_last_index", 0):
        raise unsupported(node, "select_last_index=1")
    x = node.input[0]
    rank = len(ctx.shape(x))
    axis = int(a.get("axis", 0)) % rank
    keep = bool(a.get("keepdims", 1))
    v = ctx.x(x)
    tfl, opts = ("ARG_MAX", "ArgMaxOptions") if node.op_type == "ArgMax" else ("ARG_MIN", "ArgMinOptions")
    from edgekit.backends.tflite.context import permute
    from edgekit.backends.tflite.writer import tensor_type

    perm = drop_axes(v.perm, {axis})
    reduced_shape = tuple(d for i, d in enumerate(ctx.shape(x)) if i != axis)
    out_dt = ctx.dtype(node.output[0])
    src = v.idx
    if np.dtype(v.dtype) in (np.dtype(np.int64), np.dtype(np.uint64)):  # LiteRT's ARG_MAX refuses int64 ('type: 4')
        src = ctx.tensor(node.output[0] + "/i32", ctx.w.shape_of(v.idx), np.int32)
        ctx.op("CAST", [v.idx], [src], "CastOptions", inDataType=tensor_type(v.dtype), outDataType=tensor_type(np.int32))
    target = ctx.out(node.output[0], v.perm if keep else perm)
    mid = target
    if keep:
        mid = ctx.tensor(node.output[0] + "/nokeep", permute(reduced_shape, perm), out_dt)
    ctx.op(tfl, [src, ctx.const_tensor(np.asarray([v.perm.index(axis)], np.int32), "axis")], [mid], opts,
           outputType=tensor_type(out_dt))
    if keep:
        shp = list(ctx.w.shape_of(target))
        ctx.op("RESHAPE", [mid, ctx.i32(shp)], [target], "ReshapeOptions", newShape=shp)
