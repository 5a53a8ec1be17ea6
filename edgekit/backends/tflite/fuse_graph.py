"""Graph-level fusions on the prepared ONNX graph, run after shapes are known (each returns a new Graph).

propagate_through_moves: a Reshape/Transpose/Squeeze/... whose input is int8 and whose output the
quantizer left float gets its input's parameters (its values are the input's values, so this is exact),
so data movement between int8 ops stays int8 instead of DEQUANTIZE -> float op -> QUANTIZE.

fuse_matmul_bias: MatMul(x, W) + b, W a 2-D constant and b a constant along the last axis, becomes one
`edgekit.MatMulBias` node, lowered to FULLY_CONNECTED with its bias input (keep_num_dims for 3-D and
higher inputs). In int8 the bias is added in int32 before the single requantization; when the quantizer
left the sum unquantized (only the product carries QDQ), the fused output takes the product's range
widened by the bias range, so nothing clips.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgekit.backends.tflite.prepare import Graph
from edgekit.backends.tflite.writer import Quant

MOVES = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}  # same values, other shape
FUSED_MATMUL = "MatMulBias"
DOMAIN = "edgekit"


def _consumers(g: Graph) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in g.nodes:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def _last_axis_bias(g: Graph, name: str, out_shape: tuple[int, ...]) -> np.ndarray | None:
    """The bias as a (N,) vector when constant `name` only varies along the last axis of `out_shape`."""
    if name not in g.consts or not out_shape:
        return None
    b = np.asarray(g.consts[name])
    if b.dtype.kind != "f" or b.ndim > len(out_shape):
        return None
    n = out_shape[-1]
    if b.ndim == 0 or any(d != 1 for d in b.shape[:-1]) or b.shape[-1] not in (1, n):
        return None
    return np.broadcast_to(b.reshape(-1).astype(np.float32), (n,)).copy()


def widened(q: Quant, bias: np.ndarray) -> Quant:
    """int8 params covering the range of `q` shifted by every value of `bias` (and zero)."""
    s, z = float(q.scale[0]), int(q.zero_point[0])
    lo = min((-128 - z) * s + float(bias.min()), 0.0)
    hi = max((127 - z) * s + float(bias.max()), 0.0)
    scale = (hi - lo) / 255.0 or s
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return Quant(scale, zp)


def fuse_matmul_bias(g: Graph) -> Graph:
    users = _consumers(g)
    producer = {o: n for n in g.nodes for o in n.output}
    replace: dict[int, onnx.NodeProto] = {}
    remove: set[int] = set()
    act_quant = dict(g.act_quant)
    for add in g.nodes:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            continue
        for k in (0, 1):
            mm = producer.get(add.input[k])
            if mm is None or mm.op_type != "MatMul" or id(mm) in remove:
                continue
            m_out, b_name, y = mm.output[0], add.input[1 - k], add.output[0]
            w = g.consts.get(mm.input[1])
            if w is None or np.ndim(w) != 2 or mm.input[0] in g.consts or len(g.shapes.get(mm.input[0], ())) < 2:
                continue
            if len(users.get(m_out, [])) != 1 or m_out in g.outputs or g.shapes.get(m_out) != g.shapes.get(y):
                continue
            bias = _last_axis_bias(g, b_name, g.shapes[y])
            if bias is None:
                continue
            if m_out in act_quant and y not in act_quant:
                act_quant[y] = widened(act_quant[m_out], bias)
            bname = f"{y}/bias"
            g.consts[bname] = bias
            g.shapes[bname], g.dtypes[bname] = bias.shape, np.dtype(np.float32)
            fused = helper.make_node(FUSED_MATMUL, [mm.input[0], mm.input[1], bname], [y], domain=DOMAIN,
                                     name=(mm.name or m_out) + "/bias")
            remove.add(id(mm))
            replace[id(add)] = fused
            break
    if not replace:
        return g
    nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in remove]
    return Graph(nodes, g.consts, g.inputs, g.outputs, g.shapes, g.dtypes, act_quant, g.weight_quant, g.opset, g.notes)


def propagate_through_moves(g: Graph) -> Graph:
    act_quant = dict(g.act_quant)
    changed = False
    for n in g.nodes:  # topological order: chains of moves propagate in one sweep
        if n.op_type not in MOVES or n.domain not in ("", "ai.onnx") or not n.input or not n.output[0]:
            continue
        src, out = n.input[0], n.output[0]
        if src in act_quant and out not in act_quant and np.dtype(g.dtypes.get(out, np.float32)).kind == "f":
            act_quant[out] = act_quant[src]
            changed = True
    if not changed:
        return g
    return Graph(g.nodes, g.consts, g.inputs, g.outputs, g.shapes, g.dtypes, act_quant, g.weight_quant, g.opset, g.notes)
