"""A float16 ONNX model, made float32 inside before int8 quantization (the quantizer and its calibration
work on float32 graphs). Graph inputs and outputs keep their float16 type through Cast nodes, so the int8
artifact has the interface of the model it came from."""

from __future__ import annotations

from typing import Any

import numpy as np

F16, F32 = 10, 1  # onnx.TensorProto.FLOAT16 / FLOAT


def _upcast_tensor(t: Any) -> None:
    from onnx import numpy_helper

    if t.data_type == F16:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))


def has_float16(model: Any) -> bool:
    g = model.graph
    typed = list(g.input) + list(g.output) + list(g.value_info)
    return any(t.data_type == F16 for t in g.initializer) or \
        any(v.type.tensor_type.elem_type == F16 for v in typed)


def to_float32(model: Any) -> tuple[Any, bool]:
    """(model computing in float32 with float16 I/O kept, whether anything changed)."""
    import onnx
    from onnx import helper

    if not has_float16(model):
        return model, False
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    for t in g.initializer:
        _upcast_tensor(t)
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == F16:
                a.i = F32
            elif a.type == onnx.AttributeProto.TENSOR:
                _upcast_tensor(a.t)
    inits = {t.name for t in g.initializer}
    rename: dict[str, str] = {}
    head, tail = [], []
    for vi in g.input:
        if vi.name not in inits and vi.type.tensor_type.elem_type == F16:
            rename[vi.name] = vi.name + "/float32"
            head.append(helper.make_node("Cast", [vi.name], [rename[vi.name]], to=F32, name=vi.name + "/to_float32"))
    for n in g.node:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    for vo in g.output:
        if vo.type.tensor_type.elem_type == F16:
            inner = vo.name + "/float32"
            for n in g.node:
                n.output[:] = [inner if o == vo.name else o for o in n.output]
                n.input[:] = [inner if x == vo.name else x for x in n.input]
            tail.append(helper.make_node("Cast", [inner], [vo.name], to=F16, name=vo.name + "/to_float16"))
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale float16 types; shape inference stamps them again
    return model, True
