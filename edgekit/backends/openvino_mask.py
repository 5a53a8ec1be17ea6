"""Attention masks made additive as `(1 - mask) * finfo.min`, computed in integers before OpenVINO sees them.

OpenVINO's CPU plugin distributes `(c - m) * C` into `m * -C + c * C` and folds `c * C` into a neighbouring
constant: with Hugging Face's `C = torch.finfo(float32).min` and a constant bias beside the mask (T5's relative
position bias, ALiBi, once the sequence length is fixed), `bias + c * C` rounds to `c * C` and the bias vanishes
(T5 encoder, fp32: max abs error 0.38, cosine 0.995; openvino 2026.4). When `m` is a Cast of an integer or bool
tensor (the mask input), `c - m` is exact in integers: the subtraction is done there and cast back, and the Cast
between it and the Mul keeps the plugin from distributing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MOVES = ("Unsqueeze", "Reshape", "Expand", "Squeeze", "Identity", "Transpose", "Flatten")  # values kept as they are
INTS = {2, 3, 4, 5, 6, 7, 9, 12, 13}  # TensorProto UINT8, INT8, UINT16, INT16, INT32, INT64, BOOL, UINT32, UINT64


def _types(model: Any) -> dict[str, int]:

    try:
        from edgekit.onnx_shapes import infer_shapes

        model = infer_shapes(model, keep_data=False)
    except Exception:  # noqa: BLE001 - graph inputs and initializers then
        pass
    g = model.graph
    out = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        out.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return out


def _const(model: Any, producers: dict[str, Any], name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    init = next((t for t in model.graph.initializer if t.name == name), None)
    if init is not None:
        return numpy_helper.to_array(init)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _from_int_cast(name: str, producers: dict[str, Any], types: dict[str, int] | None) -> Any:
    """The Cast-to-float of an integer/bool tensor that `name` is (through ops that only move values), else None
    (types None: any Cast)."""
    node = producers.get(name)
    while node is not None and node.op_type in MOVES:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Cast" or (types is not None and types.get(node.input[0]) not in INTS):
        return None
    return node


def _matches(model: Any, types: dict[str, int] | None = None) -> list[tuple[Any, int, np.ndarray, Any]]:
    """(Sub node, index of its mask operand, the other operand's integer constant, the Cast) for each rewrite."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    muls = {i for n in g.node if n.op_type == "Mul" for i in n.input}
    subs = [n for n in g.node if n.op_type == "Sub" and n.domain in ("", "ai.onnx") and n.output[0] in muls
            and any(_from_int_cast(i, producers, None) is not None for i in n.input)]
    if not subs:
        return []
    types = types if types is not None else _types(model)  # shape inference only when a candidate is there
    found = []
    for node in subs:
        for k in (1, 0):
            cast = _from_int_cast(node.input[k], producers, types)
            const = _const(model, producers, node.input[1 - k]) if cast is not None else None
            if const is not None and const.size and np.all(np.isfinite(const)) and np.all(const == np.round(const)):
                found.append((node, k, const, cast))
                break
    return found


def needs_int_mask(model: Any) -> bool:
    return any(n.op_type == "Sub" for n in model.graph.node) and bool(_matches(model))


def int_mask_sub(model: Any) -> int:
    """Rewrite each `c - Cast(int mask)` (either order) feeding a Mul as Cast(c_int - mask_int); returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    done = 0
    for node, k, const, cast in _matches(model):
        to = next(a.i for a in cast.attribute if a.name == "to")
        p = f"{node.output[0]}/ov_int"
        model.graph.initializer.append(numpy_helper.from_array(const.astype(np.int64), p + "/const"))
        ints = [p + "/mask", p + "/const"] if k == 0 else [p + "/const", p + "/mask"]
        new = [helper.make_node("Cast", [node.input[k]], [p + "/mask"], to=TensorProto.INT64),
               helper.make_node("Sub", ints, [p + "/sub"]),
               helper.make_node("Cast", [p + "/sub"], [node.output[0]], to=to)]
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for i, n in enumerate(new):
            model.graph.node.insert(at + i, n)
        done += 1
    return done
