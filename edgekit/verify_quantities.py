"""Integer outputs that are rounded quantities, not labels: judged within one level, not by exact equality.

A super-resolution net or a generator that writes its image (clamp(0, 1) * 255, round, uint8) has an integer
output, which verification took for labels (argmax maps, ids) and judged by its share of exactly equal elements:
int8 on LiteRT had 72.6% of the pixels equal (most others one level off), just above the 0.7 floor, so a slightly
deeper net failed on a correct artifact, while a lowering that broke a quarter of the pixels would pass. An
integer output computed by a Cast of a float tensor (through layout ops) is such a quantity: an element counts as
agreeing when it is within one level of the reference. ArgMax/TopK indices, comparisons and Casts of integers
(a label map stored as uint8) stay labels.
"""

from __future__ import annotations

from typing import Any

LAYOUT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Concat", "Split",
          "Expand", "Tile", "Gather", "Clip", "Max", "Min", "Relu"}


def quantity_outputs(model: Any) -> list[int]:
    """Indices of the graph outputs that are a Cast of float values to an integer type (see the module doc)."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    g = model.graph
    try:
        from edgekit.onnx_shapes import infer_shapes

        typed = infer_shapes(model, keep_data=False).graph
    except Exception:  # noqa: BLE001
        typed = g
    elem = {v.name: v.type.tensor_type.elem_type for v in [*typed.value_info, *typed.input, *typed.output]}
    elem.update({t.name: t.data_type for t in g.initializer})
    producer = {o: n for n in g.node for o in n.output}
    out = []
    for index, vi in enumerate(g.output):
        if vi.type.tensor_type.elem_type in floats:
            continue
        node = producer.get(vi.name)
        while node is not None and node.op_type in LAYOUT and node.input:
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Cast" and elem.get(node.input[0]) in floats:
            out.append(index)
    return out
