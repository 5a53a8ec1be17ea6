"""ONNX nodes OpenVINO's ONNX frontend computes wrongly, rewritten into equivalent nodes before convert_model.

Found by comparing with ONNX Runtime (openvino 2026.4):
  Softmax, opset 11-12 (softmax over the input flattened to 2-D at `axis`): computed over `axis` alone.
  ReduceL1 / ReduceLogSum / ReduceLogSumExp with an `axes` attribute, opset 13-17: reduce every axis.
The rewrites use only ops the frontend gets right (Flatten, 2-D Softmax, Reshape, Shape, ReduceSum, ReduceMax,
Abs, Exp, Log, Sub, Add), so they hold for any opset they are applied at.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REDUCE_OPS = ("ReduceL1", "ReduceLogSum", "ReduceLogSumExp")


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def needs_rewrite(model: Any) -> bool:
    opset = _opset(model)
    return any(_wrong(n, opset) for n in model.graph.node)


def _wrong(node: Any, opset: int) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type == "Softmax":
        return opset < 13
    return node.op_type in REDUCE_OPS and any(a.name == "axes" for a in node.attribute)


def rewrite(model: Any) -> int:
    """Rewrite the main graph's affected nodes in place; returns how many."""
    from onnx import helper

    opset = _opset(model)
    out, count = [], 0
    for node in model.graph.node:
        if not _wrong(node, opset):
            out.append(node)
            continue
        count += 1
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        out.extend(_softmax(node, attrs) if node.op_type == "Softmax" else _reduce(model, node, attrs, opset))
    del model.graph.node[:]
    model.graph.node.extend(out)
    return count


def _softmax(node: Any, attrs: dict) -> list:
    """Softmax-11: Flatten at `axis` -> softmax over the last axis of the 2-D result -> back to the input shape."""
    from onnx import helper

    x, y, p = node.input[0], node.output[0], f"{node.output[0]}/ov_softmax"
    return [helper.make_node("Flatten", [x], [p + "/2d"], axis=int(attrs.get("axis", 1))),
            helper.make_node("Softmax", [p + "/2d"], [p + "/sm"], axis=1),
            helper.make_node("Shape", [x], [p + "/shape"]),
            helper.make_node("Reshape", [p + "/sm", p + "/shape"], [y])]


def _reduce(model: Any, node: Any, attrs: dict, opset: int) -> list:
    from onnx import TensorProto, helper

    x, y, p = node.input[0], node.output[0], f"{node.output[0]}/ov_{node.op_type}"
    axes, keep = list(attrs["axes"]), int(attrs.get("keepdims", 1))

    def reduce_sum(src: str, dst: str) -> list:
        if opset < 13:
            return [helper.make_node("ReduceSum", [src], [dst], axes=axes, keepdims=keep)]
        name = p + "/axes"
        if name not in {t.name for t in model.graph.initializer}:
            model.graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [len(axes)], axes))
        return [helper.make_node("ReduceSum", [src, name], [dst], keepdims=keep)]

    if node.op_type == "ReduceL1":
        return [helper.make_node("Abs", [x], [p + "/abs"])] + reduce_sum(p + "/abs", y)
    if node.op_type == "ReduceLogSum":
        return reduce_sum(x, p + "/sum") + [helper.make_node("Log", [p + "/sum"], [y])]
    # ReduceLogSumExp, stable: max + log(sum(exp(x - max)))
    return [helper.make_node("ReduceMax", [x], [p + "/max1"], axes=axes, keepdims=1),
            helper.make_node("Sub", [x, p + "/max1"], [p + "/centred"]),
            helper.make_node("Exp", [p + "/centred"], [p + "/exp"])] + reduce_sum(p + "/exp", p + "/sum") + [
            helper.make_node("Log", [p + "/sum"], [p + "/log"]),
            helper.make_node("ReduceMax", [x], [p + "/max"], axes=axes, keepdims=keep),
            helper.make_node("Add", [p + "/log", p + "/max"], [y])]


@contextmanager
def frontend_input(onnx_path: Path) -> Iterator[Path]:
    """The path to hand to convert_model: `onnx_path` itself, or a rewritten copy (alive inside the block)."""
    import onnx

    from edgekit.backends.openvino_mask import int_mask_sub, needs_int_mask
    from edgekit.backends.openvino_rnn import needs_split, split_bidirectional
    from edgekit.backends.openvino_size import fold_bias_dequantize, has_bias_dequantize

    head = onnx.load(str(onnx_path), load_external_data=False)
    if not needs_rewrite(head) and not has_bias_dequantize(head) and not needs_split(head) and not needs_int_mask(head):
        yield onnx_path
        return
    model = onnx.load(str(onnx_path))
    rewrite(model)
    split_bidirectional(model)  # bidirectional RNNs with a run-time sequence_lens (openvino_rnn.py)
    int_mask_sub(model)  # (1 - mask) * finfo.min beside a constant bias: the plugin's folding erased it (openvino_mask.py)
    fold_bias_dequantize(model)  # not a correctness fix: a smaller IR (openvino_size.py)
    with tempfile.TemporaryDirectory(prefix="edgekit-ov-") as tmp:
        path = Path(tmp) / onnx_path.name
        onnx.save(model, str(path), save_as_external_data=model.ByteSize() > 1 << 30, location=path.name + ".data")
        yield path
