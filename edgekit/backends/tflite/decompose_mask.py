"""Trilu of a run-time tensor (torch.tril/triu of an activation: causal masks built at run time) as
Where(constant mask, x, 0): a select, not a product, so -inf entries above/below the diagonal stay -inf."""

from __future__ import annotations

import numpy as np
import onnx

from edgekit.backends.tflite.decompose import _attr, _Emit, _unsupported


def trilu(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    x = node.input[0]
    k = 0
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in g.consts:
            raise _unsupported(node, "a diagonal offset k computed at run time")
        k = int(np.asarray(g.consts[node.input[1]]).reshape(()))
    rows, cols = g.shapes[x][-2:]
    offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = offset >= k if int(_attr(node, "upper", 1)) else offset <= k
    e = _Emit(g, node)
    e.op("Where", [e.const(keep, "mask"), x, e.scalar(0, x)], node.output[0])
    return e.nodes


RULES = {"Trilu": trilu}
