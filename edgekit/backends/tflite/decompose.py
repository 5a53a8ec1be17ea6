"""ONNX ops rewritten into ops that have a TFLite lowering, before lowering (static shapes known).

One function per op in RULES: (graph, node) -> replacement nodes (new constants go into graph.consts).
  Einsum           transposes + reshapes around one batched MatMul per operand pair (sums, broadcasting
                   size-1 batch axes and diagonals aside)
  Sum / Mean       a chain of Add (Mean then scales by 1/n)
  Elu (alpha != 1) relu(x) + alpha * elu(min(x, 0)) (TFLite's ELU has alpha 1)
  Selu, Celu       Elu scaled (gamma * Elu(x, alpha); alpha * Elu(x / alpha))
  Softsign         x / (1 + |x|)
  ThresholdedRelu  Where(x > alpha, x, 0)
  Mish             x * tanh(softplus(x))
  Pad (mode edge)  first/last slices tiled and concatenated around the input, per padded axis
  GroupNormalization  reshape to (N, groups, -1), InstanceNormalization, reshape back, per-channel scale + bias
  Resize (cubic)   one constant matrix product per resized axis (cubic.py)
  ReduceL1/LogSum/LogSumExp, LpNormalization, MeanVarianceNormalization  (decompose_reduce.py)
  Trilu            Where(constant triangle mask, x, 0) (decompose_mask.py)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from edgekit.backends.tflite.ops.common import OTHER_TARGETS
from edgekit.errors import UnsupportedModelError


class _Emit:
    def __init__(self, g, node) -> None:
        self.g, self.node, self.nodes, self.k = g, node, [], 0
        self.base = node.output[0] or node.name

    def name(self, tag: str) -> str:
        self.k += 1
        return f"{self.base}/{tag}{self.k}"

    def const(self, value: np.ndarray, tag: str = "c") -> str:
        n = self.name(tag)
        arr = np.asarray(value)
        self.g.consts[n] = arr
        self.g.shapes[n], self.g.dtypes[n] = tuple(arr.shape), arr.dtype
        return n

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def scalar(self, v: float, like: str) -> str:
        return self.const(np.asarray(v, dtype=self.g.dtypes.get(like, np.dtype(np.float32))))


def _unsupported(node: onnx.NodeProto, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"op {node.op_type} (node '{node.name or node.output[0]}'): {what} has no TFLite "
                                 "lowering in edgekit", hint=OTHER_TARGETS)


def _attr(node: onnx.NodeProto, key: str, default):
    for a in node.attribute:
        if a.name == key:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


# --- einsum ------------------------------------------------------------------------------------
def _parse(eq: str, ranks: list[int]) -> tuple[list[str], str]:
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    used = set(c for c in eq if c.isalpha())
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used]
    ell = ""
    if "..." in eq:
        n = max(r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t)
        ell = "".join(spare[:n])
        terms = [t.replace("...", ell[len(ell) - (r - len(t.replace("...", ""))):]) if "..." in t else t
                 for t, r in zip(terms, ranks)]
    if "->" in eq:
        out = rhs.replace("...", ell)
    else:
        counts = {c: sum(t.count(c) for t in terms) for c in "".join(terms)}
        out = ell + "".join(sorted(c for c, k in counts.items() if k == 1 and c not in ell))
    return terms, out


def _transpose(e: _Emit, x: str, have: str, want: str) -> str:
    if have == want:
        return x
    return e.op("Transpose", [x], perm=[have.index(c) for c in want])


def _reduce(e: _Emit, x: str, letters: str, drop: str) -> tuple[str, str]:
    axes = [letters.index(c) for c in drop]
    if not axes:
        return x, letters
    if e.g.opset >= 13:
        y = e.op("ReduceSum", [x, e.const(np.asarray(axes, np.int64), "axes")], keepdims=0)
    else:
        y = e.op("ReduceSum", [x], axes=axes, keepdims=0)
    return y, "".join(c for c in letters if c not in drop)


def _pair(e: _Emit, a: str, la: str, b: str, lb: str, keep: str, dims: dict[str, int]) -> tuple[str, str]:
    """Contract operands a (letters la) and b (lb), keeping the letters in `keep`."""
    a, la = _reduce(e, a, la, "".join(c for c in la if c not in lb and c not in keep))
    b, lb = _reduce(e, b, lb, "".join(c for c in lb if c not in la and c not in keep))
    batch = "".join(c for c in la if c in lb and c in keep)
    contract = "".join(c for c in la if c in lb and c not in keep)
    free_a = "".join(c for c in la if c not in lb)
    free_b = "".join(c for c in lb if c not in la)

    def size(s: str) -> int:
        return int(np.prod([dims[c] for c in s])) if s else 1

    a = _transpose(e, a, la, batch + free_a + contract)
    b = _transpose(e, b, lb, batch + contract + free_b)
    a = e.op("Reshape", [a, e.const(np.asarray([size(batch), size(free_a), size(contract)], np.int64), "shape")])
    b = e.op("Reshape", [b, e.const(np.asarray([size(batch), size(contract), size(free_b)], np.int64), "shape")])
    y = e.op("MatMul", [a, b])
    letters = batch + free_a + free_b
    y = e.op("Reshape", [y, e.const(np.asarray([dims[c] for c in letters], np.int64), "shape")])
    return y, letters


def einsum(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    e = _Emit(g, node)
    ranks = [len(g.shapes[i]) for i in node.input]
    terms, out = _parse(str(_attr(node, "equation", "")), ranks)
    dims: dict[str, int] = {}
    for t, name in zip(terms, node.input):
        if len(set(t)) != len(t):
            raise _unsupported(node, f"a repeated index in '{t}' (diagonal)")
        for c, d in zip(t, g.shapes[name]):
            if dims.setdefault(c, d) != d:
                raise _unsupported(node, f"index '{c}' broadcast from size {min(d, dims[c])}")
    cur, letters = node.input[0], terms[0]
    for i in range(1, len(terms)):
        later = "".join(terms[i + 1:]) + out
        keep = "".join(c for c in dict.fromkeys(letters + terms[i]) if c in later)
        cur, letters = _pair(e, cur, letters, node.input[i], terms[i], keep, dims)
    cur, letters = _reduce(e, cur, letters, "".join(c for c in letters if c not in out))
    if letters == out:
        e.op("Identity", [cur], node.output[0])
    else:
        e.op("Transpose", [cur], node.output[0], perm=[letters.index(c) for c in out])
    return e.nodes


# --- elementwise -------------------------------------------------------------------------------
def variadic(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    e = _Emit(g, node)
    cur = node.input[0]
    last = node.op_type == "Sum" or len(node.input) == 1
    for i, x in enumerate(node.input[1:], start=2):
        cur = e.op("Add", [cur, x], node.output[0] if last and i == len(node.input) else None)
    if node.op_type == "Mean":
        e.op("Mul", [cur, e.scalar(1.0 / len(node.input), node.input[0])], node.output[0])
    elif len(node.input) == 1:
        e.op("Identity", [cur], node.output[0])
    return e.nodes


def _elu(e: _Emit, x: str, alpha: float, out: str | None = None) -> str:
    """Elu with any alpha from TFLite's alpha-1 ELU: relu(x) + alpha * elu(min(x, 0))."""
    neg = e.op("Elu", [e.op("Min", [x, e.scalar(0.0, x)])], alpha=1.0)
    return e.op("Add", [e.op("Relu", [x]), e.op("Mul", [neg, e.scalar(alpha, x)])], out)


def elu(g, node):
    alpha = float(_attr(node, "alpha", 1.0))
    if alpha == 1.0:
        return [node]
    e = _Emit(g, node)
    _elu(e, node.input[0], alpha, node.output[0])
    return e.nodes


def selu(g, node):
    e = _Emit(g, node)
    alpha, gamma = float(_attr(node, "alpha", 1.67326319217681884765625)), float(_attr(node, "gamma", 1.05070102214813232421875))
    e.op("Mul", [_elu(e, node.input[0], alpha), e.scalar(gamma, node.input[0])], node.output[0])
    return e.nodes


def celu(g, node):
    e = _Emit(g, node)
    alpha = float(_attr(node, "alpha", 1.0))
    x = node.input[0]
    inner = e.op("Elu", [e.op("Div", [x, e.scalar(alpha, x)])], alpha=1.0)
    e.op("Mul", [inner, e.scalar(alpha, x)], node.output[0])
    return e.nodes


def softsign(g, node):
    e = _Emit(g, node)
    x = node.input[0]
    e.op("Div", [x, e.op("Add", [e.op("Abs", [x]), e.scalar(1.0, x)])], node.output[0])
    return e.nodes


def thresholded_relu(g, node):
    e = _Emit(g, node)
    x = node.input[0]
    above = e.op("Greater", [x, e.scalar(float(_attr(node, "alpha", 1.0)), x)])
    e.op("Where", [above, x, e.scalar(0.0, x)], node.output[0])
    return e.nodes


def mish(g, node):
    e = _Emit(g, node)
    x = node.input[0]
    e.op("Mul", [x, e.op("Tanh", [e.op("Softplus", [x])])], node.output[0])
    return e.nodes


def edge_pad(g, node):
    """Pad mode 'edge' (torch's ReplicationPad): per padded axis, the first/last slice tiled and concatenated
    around the input. Other modes, and pads TFLite's own lowering refuses (negative, computed), stay as they are."""
    if _attr(node, "mode", "constant") != "edge":
        return [node]
    pads = _attr(node, "pads", None) if g.opset < 11 else (
        g.consts.get(node.input[1]) if len(node.input) > 1 else None)
    x = node.input[0]
    shape = g.shapes.get(x)
    if pads is None or shape is None or np.min(pads) < 0:
        return [node]
    rank = len(shape)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(rank)) if g.opset < 18 or len(node.input) < 4 or not node.input[3] else [
        int(a) % rank for a in np.asarray(g.consts[node.input[3]]).reshape(-1)]
    e = _Emit(g, node)
    y = x
    for k, axis in enumerate(axes):
        before, after = pads[k], pads[k + len(axes)]
        if not before and not after:
            continue
        parts = []
        for count, start in ((before, 0), (after, -1)):
            if not count:
                continue
            end = start + 1 if start >= 0 else 2**62
            if g.opset < 10:
                edge = e.op("Slice", [y], starts=[start], ends=[end], axes=[axis])
            else:
                edge = e.op("Slice", [y, e.const(np.asarray([start], np.int64)), e.const(np.asarray([end], np.int64)),
                                      e.const(np.asarray([axis], np.int64))])
            reps = np.ones(rank, np.int64)
            reps[axis] = count
            parts.append((start, e.op("Tile", [edge, e.const(reps, "reps")]) if count > 1 else edge))
        pieces = [p for s0, p in parts if s0 == 0] + [y] + [p for s0, p in parts if s0 == -1]
        y = e.op("Concat", pieces, axis=axis)
    e.op("Identity", [y], node.output[0])
    return e.nodes


def group_norm(g, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """GroupNormalization: x reshaped to (N, groups, -1), normalized by InstanceNormalization (scale 1, bias 0: one
    mean/variance per group), reshaped back, then scaled and shifted per channel (opset 18's per-group scale and
    bias repeated over each group's channels)."""
    x, scale, bias = node.input[:3]
    shape = list(g.shapes[x])
    groups, c = int(_attr(node, "num_groups", 1)), shape[1]
    if scale not in g.consts or bias not in g.consts:
        raise _unsupported(node, "a scale or bias computed in the graph")
    e = _Emit(g, node)
    dtype = g.dtypes.get(x, np.dtype(np.float32))
    per_channel = [c] + [1] * (len(shape) - 2)
    params = []
    for name in (scale, bias):
        v = np.asarray(g.consts[name], dtype).reshape(-1)
        if v.size == groups and g.opset < 21:  # opset 18: one scale and bias per group
            v = np.repeat(v, c // groups)
        if v.size != c:
            raise _unsupported(node, f"a scale/bias of {v.size} values for {c} channels")
        params.append(e.const(v.reshape(per_channel)))
    y = e.op("Reshape", [x, e.const(np.asarray([shape[0], groups, -1], np.int64), "shape")])
    y = e.op("InstanceNormalization", [y, e.const(np.ones(groups, dtype)), e.const(np.zeros(groups, dtype))],
             epsilon=float(_attr(node, "epsilon", 1e-5)))
    y = e.op("Reshape", [y, e.const(np.asarray(shape, np.int64), "shape")])
    e.op("Add", [e.op("Mul", [y, params[0]]), params[1]], node.output[0])
    return e.nodes


RULES: dict[str, Callable] = {"Einsum": einsum, "Elu": elu, "Sum": variadic, "Mean": variadic, "Selu": selu, "Celu": celu,
                              "Softsign": softsign, "ThresholdedRelu": thresholded_relu, "Mish": mish, "Pad": edge_pad,
                              "GroupNormalization": group_norm}


def _more_rules() -> None:
    from edgekit.backends.tflite.cubic import resize_cubic
    from edgekit.backends.tflite.decompose_mask import RULES as mask_rules
    from edgekit.backends.tflite.decompose_reduce import RULES as reduce_rules

    RULES["Resize"] = resize_cubic
    RULES.update(reduce_rules)
    RULES.update(mask_rules)


_more_rules()


def decompose(g):
    """The graph with every RULES op replaced (shapes of the new tensors are inferred by the caller)."""
    if not any(n.op_type in RULES and n.domain in ("", "ai.onnx") for n in g.nodes):
        return g, False
    nodes: list[onnx.NodeProto] = []
    changed = False
    for n in g.nodes:
        fn = RULES.get(n.op_type) if n.domain in ("", "ai.onnx") else None
        new = fn(g, n) if fn else [n]
        changed = changed or len(new) != 1 or new[0] is not n
        nodes.extend(new)
    g.nodes = nodes
    return g, changed
