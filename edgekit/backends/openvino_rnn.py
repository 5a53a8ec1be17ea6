"""LSTM / GRU / RNN with a sequence_lens OpenVINO's CPU plugin reads at run time.

Found by comparing with ONNX Runtime (openvino 2026.4): an LSTMSequence / GRUSequence / RNNSequence given
the ONNX node's sequence_lens (a graph input, computed, or even a constant), compiled with any dynamic
dimension, ignores it: every sequence runs to the full length (Y past a sequence's end not zero, Y_h / Y_c of
the last padded step; errors ~0.5). Static shapes compute it right, and so does OpenVINO's own
sequence -> TensorIterator conversion at any shape; that conversion only handles one direction, so a
bidirectional node with such a sequence_lens is first split (in ONNX) into a forward and a reverse node.
"""

from __future__ import annotations

from typing import Any

RNN_OPS = {"LSTM": 3, "GRU": 2, "RNN": 1}  # activations per direction
CELL_ACTIVATIONS = {"sigmoid", "tanh", "relu"}
SEQUENCES = ("LSTMSequence", "GRUSequence", "RNNSequence")


def _with_lens(node: Any) -> bool:
    return (node.domain in ("", "ai.onnx") and node.op_type in RNN_OPS and len(node.input) > 4
            and bool(node.input[4]))


def _bidirectional(node: Any) -> bool:
    return any(a.name == "direction" and a.s == b"bidirectional" for a in node.attribute)


def _dynamic(model: Any) -> bool:
    constants = {t.name for t in model.graph.initializer}
    return any(not d.HasField("dim_value") for i in model.graph.input if i.name not in constants
               for d in i.type.tensor_type.shape.dim)


def needs_tensor_iterator(model: Any) -> bool:
    """A dynamic-shape graph with an RNN node given a sequence_lens (an input, computed or constant: the
    plugin ignores all three; without one the frontend's full lengths are right)."""
    return any(_with_lens(n) for n in model.graph.node) and _dynamic(model)


def needs_split(model: Any) -> bool:
    return needs_tensor_iterator(model) and any(_with_lens(n) and _bidirectional(n) for n in model.graph.node)


def split_bidirectional(model: Any) -> int:
    """Replace each bidirectional LSTM/GRU/RNN of the main graph with a run-time sequence_lens by a forward
    and a reverse node (weights, biases, initial states and activations taken per direction) whose outputs
    are concatenated along the direction axis; returns how many."""
    from onnx import TensorProto, helper

    if not needs_split(model):
        return 0
    g = model.graph
    out, count = [], 0
    for node in g.node:
        if not (_with_lens(node) and _bidirectional(node)):
            out.append(node)
            continue
        count += 1
        p = f"{node.name or node.output[0] or node.op_type}/ov_split{count}"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        layout = int(attrs.get("layout", 0))
        per = RNN_OPS[node.op_type]
        for d in (0, 1):
            g.initializer.append(helper.make_tensor(f"{p}/dir{d}", TensorProto.INT64, [1], [d]))
        halves: list[list[str]] = [[], []]
        for k, name in enumerate(node.input):
            if not name or k == 4 or k == 0:  # X and sequence_lens are shared
                for h in halves:
                    h.append(name)
                continue
            axis = 1 if (layout == 1 and k in (5, 6)) else 0  # initial_h / initial_c are [batch, dirs, H]
            for d in (0, 1):
                out.append(helper.make_node("Gather", [name, f"{p}/dir{d}"], [f"{p}/in{k}_{d}"], axis=axis))
                halves[d].append(f"{p}/in{k}_{d}")
        outs: list[list[str]] = [[], []]
        for k, name in enumerate(node.output):
            for d in (0, 1):
                outs[d].append(f"{p}/out{k}_{d}" if name else "")
        for d, direction in enumerate(("forward", "reverse")):
            kw = {k: v for k, v in attrs.items() if k != "direction"}
            for key in ("activations", "activation_alpha", "activation_beta"):
                if key in kw and len(kw[key]) == 2 * per:
                    kw[key] = list(kw[key])[d * per:(d + 1) * per]
            out.append(helper.make_node(node.op_type, halves[d], outs[d], name=f"{p}/{direction}",
                                        direction=direction, **kw))
        for k, name in enumerate(node.output):
            if name:  # Y: [T, dirs, B, H] (layout 1: [B, T, dirs, H]); Y_h, Y_c: [dirs, B, H] ([B, dirs, H])
                axis = (1 if k == 0 else 0) + layout
                out.append(helper.make_node("Concat", [outs[0][k], outs[1][k]], [name], axis=axis))
    del g.node[:]
    g.node.extend(out)
    return count


def lens_to_tensor_iterator(model: Any) -> bool:
    """Convert the OpenVINO model's RNN sequences to TensorIterators (not when one has an activation the CPU
    plugin's cell decomposition refuses, e.g. HardSigmoid: it would not compile); call it when
    needs_tensor_iterator(the ONNX graph)."""
    from openvino._offline_transformations import convert_sequence_to_tensor_iterator_transformation

    seqs = [op for op in model.get_ordered_ops() if op.get_type_name() in SEQUENCES]
    if not seqs or any(set(op.get_attributes().get("activations", [])) - CELL_ACTIVATIONS for op in seqs):
        return False
    convert_sequence_to_tensor_iterator_transformation(model)
    return True
