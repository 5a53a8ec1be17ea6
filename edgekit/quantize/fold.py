"""Constant folding before quantization: nodes that only rearrange or combine initializers become initializers.

Exporters (torch's dynamo exporter: an LSTM/GRU's W and R are Concat-ed from per-gate initializers at run time)
leave weights computed by such nodes. The quantizer then puts Q/DQ pairs around them, so the weight is no longer
a constant: OpenVINO's CPU plugin refuses an LSTMSequence / GRUSequence whose weights are not Constant (an
internal error), and the runtimes would recompute the weights on every run. Folding first gives every consumer
plain initializers. Only ops that do not grow their data are folded (no Expand, Tile, ConstantOfShape, Range).
"""

from __future__ import annotations

from typing import Any

FOLDABLE = {"Concat", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split", "Cast", "Identity",
            "Flatten", "Neg", "Add", "Sub", "Mul", "Div"}


def fold_constant_nodes(model: Any) -> int:
    """Replace, in place, every FOLDABLE main-graph node whose inputs are all initializers by initializers holding
    its outputs (in graph order, so chains fold too). Returns how many nodes were folded."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    keep, folded = [], 0
    for node in graph.node:
        ins = [i for i in node.input if i]
        if (node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx") or not ins
                or any(i not in values for i in ins) or any(o in outputs for o in node.output)):
            keep.append(node)
            continue
        g = helper.make_graph([node], "fold", [], [helper.make_value_info(o, helper.TypeProto()) for o in node.output],
                              [values[i] for i in dict.fromkeys(ins)])
        try:
            results = ReferenceEvaluator(helper.make_model(g, opset_imports=opset)).run(None, {})
        except Exception:  # noqa: BLE001 - left to the runtime
            keep.append(node)
            continue
        if sum(np.asarray(r).size for r in results) > sum(int(np.prod(values[i].dims)) for i in ins):
            keep.append(node)  # a broadcast that grows the data: computed at run time, as written
            continue
        for name, arr in zip(node.output, results):
            t = numpy_helper.from_array(np.asarray(arr), name)
            values[name] = t
            graph.initializer.append(t)
        folded += 1
    if folded:
        from edgekit.quantize.qdq import graph_reads

        del graph.node[:]
        graph.node.extend(keep)
        used = graph_reads(graph) | {i.name for i in graph.input}  # old IRs list initializers as inputs
        inits = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(inits)
    return folded
