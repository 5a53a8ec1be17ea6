"""GatherElements -> GATHER_ND: out[i..] = data[i.. with index[i..] on `axis`]. The full coordinates are a constant
grid (each output element's own position) with the `axis` column taken from the indices (run-time or constant;
negative indices wrapped with FLOOR_MOD)."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.ops.registry import register
from edgekit.backends.tflite.writer import tensor_type


@register("GatherElements", int8=True)
def gather_elements(ctx, node) -> None:
    data, ind = node.input[0], node.input[1]
    shape = ctx.shape(ind)
    rank = len(shape)
    axis = int(ctx.attrs(node).get("axis", 0)) % rank
    dim = ctx.shape(data)[axis]
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.int32)
    v = ctx.x(data, identity(rank))
    name = node.output[0]
    if ctx.is_const(ind):
        grid[..., axis] = np.mod(ctx.const(ind).astype(np.int64), dim)
        coords = ctx.const_tensor(grid, f"{name}/coords")
    else:
        vi = ctx.x(ind, identity(rank))
        col = vi.idx
        if np.dtype(vi.dtype) != np.int32:
            col = ctx.tensor(f"{name}/i32", shape, np.int32)
            ctx.op("CAST", [vi.idx], [col], "CastOptions", inDataType=tensor_type(vi.dtype), outDataType=tensor_type(np.int32))
        wrapped = ctx.tensor(f"{name}/wrapped", shape, np.int32)
        ctx.op("FLOOR_MOD", [col, ctx.const_tensor(np.asarray([dim], np.int32), f"{name}/dim")], [wrapped])
        column = ctx.tensor(f"{name}/column", (*shape, 1), np.int32)
        ctx.op("RESHAPE", [wrapped, ctx.i32([*shape, 1])], [column], "ReshapeOptions", newShape=[*shape, 1])
        parts = [ctx.const_tensor(np.ascontiguousarray(grid[..., :axis]), f"{name}/before")] if axis else []
        parts.append(column)
        if axis < rank - 1:
            parts.append(ctx.const_tensor(np.ascontiguousarray(grid[..., axis + 1:]), f"{name}/after"))
        coords = ctx.tensor(f"{name}/coords", (*shape, rank), np.int32)
        ctx.op("CONCATENATION", parts, [coords], "ConcatenationOptions", axis=rank)
    y = ctx.out(name, identity(rank), q=v.q)
    ctx.op("GATHER_ND", [v.idx, coords], [y])
