"""Reductions and normalizations without a TFLite builtin, rewritten into ones that have a lowering (decompose.py).

  ReduceL1            ReduceSum(Abs(x))
  ReduceLogSum        Log(ReduceSum(x))
  ReduceLogSumExp     m + Log(ReduceSum(Exp(x - m))), m = ReduceMax(x): no overflow for large x
  LpNormalization     x / ReduceL2(x) (p=2) or x / ReduceSum(Abs(x)) (p=1) along `axis`
  MeanVarianceNormalization  (x - mean) / (sqrt(mean((x - mean)^2)) + 1e-9) over `axes` (ONNX's function body)
"""

from __future__ import annotations

import numpy as np
import onnx

from edgekit.backends.tflite.decompose import _attr, _Emit, _unsupported

# the opset from which each reduce op takes its axes as an input instead of an attribute
_AXES_INPUT = {"ReduceSum": 13, "ReduceMax": 18, "ReduceMean": 18, "ReduceL2": 18}


def _reduce(e: _Emit, op: str, x: str, axes: list[int], keep: bool, out: str | None = None) -> str:
    if e.g.opset >= _AXES_INPUT[op]:
        return e.op(op, [x, e.const(np.asarray(axes, np.int64), "axes")], out, keepdims=int(keep))
    return e.op(op, [x], out, axes=axes, keepdims=int(keep))


def _axes(g, node: onnx.NodeProto) -> list[int] | None:
    """Sorted non-negative axes; None for noop_with_empty_axes with none given."""
    rank = len(g.shapes[node.input[0]])
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in g.consts:
            raise _unsupported(node, "axes computed at run time")
        axes = [int(a) for a in np.asarray(g.consts[node.input[1]]).reshape(-1)]
    if not axes:
        return None if int(_attr(node, "noop_with_empty_axes", 0)) else list(range(rank))
    return sorted(int(a) % rank for a in axes)


def reduce_composite(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    e = _Emit(g, node)
    x, out = node.input[0], node.output[0]
    keep = bool(int(_attr(node, "keepdims", 1)))
    axes = _axes(g, node)
    if axes is None:  # no reduction: the elementwise part only
        e.op({"ReduceL1": "Abs", "ReduceLogSum": "Log", "ReduceLogSumExp": "Identity"}[node.op_type], [x], out)
        return e.nodes
    if node.op_type == "ReduceL1":
        _reduce(e, "ReduceSum", e.op("Abs", [x]), axes, keep, out)
    elif node.op_type == "ReduceLogSum":
        e.op("Log", [_reduce(e, "ReduceSum", x, axes, keep)], out)
    else:
        m = _reduce(e, "ReduceMax", x, axes, True)
        s = _reduce(e, "ReduceSum", e.op("Exp", [e.op("Sub", [x, m])]), axes, keep)
        shift = m if keep else e.op("Reshape", [m, e.const(np.asarray(g.shapes[out], np.int64), "shape")])
        e.op("Add", [e.op("Log", [s]), shift], out)
    return e.nodes


def lp_normalization(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    p = int(_attr(node, "p", 2))
    if p not in (1, 2):
        raise _unsupported(node, f"p={p} (1 and 2 are supported)")
    e = _Emit(g, node)
    x = node.input[0]
    axis = int(_attr(node, "axis", -1)) % len(g.shapes[x])
    norm = _reduce(e, "ReduceL2", x, [axis], True) if p == 2 else _reduce(e, "ReduceSum", e.op("Abs", [x]), [axis], True)
    e.op("Div", [x, norm], node.output[0])
    return e.nodes


def mean_variance_normalization(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    e = _Emit(g, node)
    x = node.input[0]
    rank = len(g.shapes[x])
    axes = sorted(int(a) % rank for a in _attr(node, "axes", [0, 2, 3]))
    d = e.op("Sub", [x, _reduce(e, "ReduceMean", x, axes, True)])
    std = e.op("Sqrt", [_reduce(e, "ReduceMean", e.op("Mul", [d, d]), axes, True)])
    e.op("Div", [d, e.op("Add", [std, e.scalar(1e-9, x)])], node.output[0])
    return e.nodes


RULES = {"ReduceL1": reduce_composite, "ReduceLogSum": reduce_composite, "ReduceLogSumExp": reduce_composite,
         "LpNormalization": lp_normalization, "MeanVarianceNormalization": mean_variance_normalization}
