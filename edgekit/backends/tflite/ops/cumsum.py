"""CumSum -> TFLite CUMSUM (float; exclusive and reverse map to its options), in whatever layout the input has."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register


@register("CumSum")
def cumsum(ctx, node) -> None:
    if not ctx.is_const(node.input[1]):
        raise unsupported(node, "axis computed at run time (TFLite needs it constant here)")
    a = ctx.attrs(node)
    rank = ctx.rank(node.input[0])
    axis = int(np.asarray(ctx.const(node.input[1])).reshape(-1)[0]) % rank
    v = ctx.x(node.input[0], float_=True)
    y = ctx.out(node.output[0], v.perm)
    ctx.op("CUMSUM", [v.idx, ctx.const_tensor(np.asarray(v.perm.index(axis), np.int32), f"{node.output[0]}/axis")],
           [y], "CumsumOptions", exclusive=bool(a.get("exclusive", 0)), reverse=bool(a.get("reverse", 0)))
