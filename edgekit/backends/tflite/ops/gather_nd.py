"""GatherND (batch_dims 0) -> GATHER_ND: out[i..] = data[index[i..]], the last index axis addressing the leading
data axes. torch.export / the dynamo exporter write advanced indexing as GatherND (CLIP's EOS pooling
`x[torch.arange(B), ids.argmax(-1)]`). Negative indices are wrapped (FLOOR_MOD by each addressed axis's size);
run-time indices are cast to int32."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register
from edgekit.backends.tflite.writer import tensor_type


@register("GatherND", int8=True)
def gather_nd(ctx, node) -> None:
    data, ind = node.input[0], node.input[1]
    if int(ctx.attrs(node).get("batch_dims", 0)):
        raise unsupported(node, "batch_dims > 0")
    shape, dshape, name = ctx.shape(ind), ctx.shape(data), node.output[0]
    dims = np.asarray(dshape[:shape[-1]], np.int32)
    v = ctx.x(data, identity(len(dshape)))
    if ctx.is_const(ind):
        index = ctx.const_tensor(np.mod(ctx.const(ind).astype(np.int64), dims).astype(np.int32), f"{name}/indices")
    else:
        vi = ctx.x(ind, identity(len(shape)))
        col = vi.idx
        if np.dtype(vi.dtype) != np.int32:
            col = ctx.tensor(f"{name}/i32", shape, np.int32)
            ctx.op("CAST", [vi.idx], [col], "CastOptions", inDataType=tensor_type(vi.dtype),
                   outDataType=tensor_type(np.int32))
        index = ctx.tensor(f"{name}/wrapped", shape, np.int32)
        ctx.op("FLOOR_MOD", [col, ctx.const_tensor(dims, f"{name}/dims")], [index])
    y = ctx.out(name, identity(len(ctx.shape(name))), q=v.q)
    ctx.op("GATHER_ND", [v.idx, index], [y])
