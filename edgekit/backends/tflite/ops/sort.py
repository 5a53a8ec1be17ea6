"""TopK (TFLite TOPK_V2: the k largest along the last axis, sorted, int32 indices)."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity, permute
from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register


def _axis_last(ctx, name: str, axis: int):
    """Value of `name` stored with ONNX `axis` last (its current layout when that already holds)."""
    v = ctx.x(name, float_=True)
    if v.perm[-1] == axis:
        return v
    rank = len(v.perm)
    return ctx.x(name, tuple(a for a in identity(rank) if a != axis) + (axis,), float_=True)


@register("TopK")
def top_k(ctx, node) -> None:
    a = ctx.attrs(node)
    x = node.input[0]
    rank = ctx.rank(x)
    axis = int(a.get("axis", -1)) % rank
    if not ctx.is_const(node.input[1]):
        raise unsupported(node, "k computed at run time (TFLite needs it constant here)")
    k = int(np.asarray(ctx.const(node.input[1])).reshape(-1)[0])
    largest = bool(a.get("largest", 1))
    if not np.issubdtype(ctx.dtype(x), np.floating) and not largest:
        raise unsupported(node, "largest=0 on an integer tensor")
    v = _axis_last(ctx, x, axis)
    src = v.idx
    if not largest:  # the k smallest are the k largest of -x
        src = ctx.tensor(x + "/neg", permute(ctx.shape(x), v.perm), v.dtype)
        ctx.op("NEG", [v.idx], [src])
    values, indices = (list(node.output) + ["", ""])[:2]
    shape = permute(ctx.shape(values or indices), v.perm)
    top_v = ctx.out(values, v.perm) if values and largest else ctx.tensor(f"{node.output[0]}/values", shape, v.dtype)
    top_i = ctx.tensor(f"{node.output[0]}/indices", shape, np.int32)
    ctx.op("TOPK_V2", [src, ctx.const_tensor(np.asarray(k, np.int32), f"{node.output[0]}/k")], [top_v, top_i],
           "TopKV2Options")
    if values and not largest:
        ctx.op("NEG", [top_v], [ctx.out(values, v.perm)])
    if indices:
        out_i = ctx.out(indices, v.perm)
        if np.dtype(ctx.dtype(indices)) == np.int32:
            ctx.op("RESHAPE", [top_i, ctx.i32(list(shape))], [out_i], "ReshapeOptions", newShape=list(shape))
        else:
            from edgekit.backends.tflite.writer import tensor_type

            ctx.op("CAST", [top_i], [out_i], "CastOptions", inDataType=tensor_type(np.int32),
                   outDataType=tensor_type(ctx.dtype(indices)))
