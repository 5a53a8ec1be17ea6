"""Per-op MACs and bytes of an OpenVINO IR (.xml), for roofline.py. Dynamic dims are fixed (batch 1, others 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelLoadError

_FREE = {"Parameter", "Result", "Constant", "Convert", "FakeQuantize", "Reshape", "Squeeze", "Unsqueeze", "ShapeOf",
         "ReadValue"}
_COMPUTE = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}
_FUSED_ACT = {"Relu", "Clamp", "Swish", "HSwish", "HSigmoid", "Sigmoid", "Tanh", "PRelu", "Elu", "Gelu", "Mish"}


def _elems(shape: Any) -> int:
    return int(np.prod([int(d) for d in shape], dtype=np.int64)) if len(shape) else 1


def _is_constant(node: Any) -> bool:
    """A Constant, or an op computed from constants only (folded before inference)."""
    kind = node.get_type_name()
    if kind == "Constant":
        return True
    if kind in ("Parameter", "ReadValue") or not node.inputs():
        return False
    return all(_is_constant(v.get_node()) for v in node.input_values())


def _is_bias(op: Any) -> bool:
    return op.get_type_name() in ("Add", "Multiply", "Subtract") and len(op.inputs()) == 2 and \
        op.input_value(0).get_node().get_type_name() in _COMPUTE and _is_constant(op.input_value(1).get_node())


def _after_compute(node: Any) -> bool:
    """True when `node` is a conv / matmul, or the fused bias right after one."""
    return node.get_type_name() in _COMPUTE or _is_bias(node)


def analyze_openvino(path: Path) -> list[dict[str, Any]]:
    import openvino as ov

    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: not a readable OpenVINO IR: {exc}") from exc
    shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        if not ps.is_static:
            shapes[port.get_any_name()] = [d.get_length() if d.is_static else (1 if i == 0 else 16)
                                           for i, d in enumerate(ps)]
    if shapes:
        model.reshape(shapes)

    def source(out: Any) -> Any:
        return out.get_node()

    def quantized_input(inp: Any) -> bool:
        """True when the value reaches this op from int8 data: a FakeQuantize, or an i8/u8 constant through
        Convert / Subtract (zero point) / Multiply (scale), as OpenVINO represents QDQ weights."""
        node = source(inp.get_source_output())
        for _ in range(5):
            kind = node.get_type_name()
            if kind == "FakeQuantize":
                return True
            if kind == "Constant":
                return node.get_element_type().get_type_name() in ("i8", "u8")
            if kind == "Convert" and node.input_value(0).get_element_type().get_type_name() in ("i8", "u8"):
                return True
            if kind not in ("Convert", "Reshape", "Transpose", "Multiply", "Subtract") or not node.inputs():
                return False
            node = source(node.input_value(0))
        return False

    def input_bytes(inp: Any) -> int:
        """Stored width: 1 byte when the value comes from int8 data (FakeQuantize / i8 weights)."""
        n = _elems(inp.get_shape()) if inp.get_partial_shape().is_static else 0
        return n * (1 if quantized_input(inp) else inp.get_element_type().size)

    def feeds_quantize(node: Any, depth: int = 3) -> bool:
        """Every consumer is a FakeQuantize, looking through the fused bias / activation after a conv."""
        users = [t.get_node() for t in node.output(0).get_target_inputs()] if node.get_output_size() else []
        if not users:
            return False
        for u in users:
            kind = u.get_type_name()
            if kind == "FakeQuantize":
                continue
            if depth and (_is_bias(u) or kind in _FUSED_ACT) and feeds_quantize(u, depth - 1):
                continue
            return False
        return True

    def output_bytes(op: Any, elems: int) -> int:
        return elems * (1 if feeds_quantize(op) else op.get_output_element_type(0).size)

    rows = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in _FREE:
            continue
        if op.inputs() and all(_is_constant(source(v)) for v in op.input_values()):
            continue  # a constant subgraph (weight decompression: Convert -> Subtract -> Multiply), folded
        if kind in _FUSED_ACT and op.inputs() and _after_compute(source(op.input_value(0))):
            continue  # activation fused into the conv / matmul (through its bias) before it
        if _is_bias(op):
            continue  # the bias / scale of the conv or matmul before it, fused by the plugin
        out_elems = _elems(op.get_output_shape(0)) if op.get_output_size() and \
            op.get_output_partial_shape(0).is_static else 0
        macs = 0
        int8 = bool(op.inputs()) and all(quantized_input(i) for i in op.inputs()[:2])
        if kind in ("Convolution", "GroupConvolution") and len(op.inputs()) > 1:
            w = list(op.input(1).get_shape())
            macs = out_elems * _elems(w[1:] if kind == "Convolution" else w[2:])
        elif kind == "ConvolutionBackpropData":
            w = list(op.input(1).get_shape())
            macs = _elems(op.input(0).get_shape()) * _elems(w[1:])
        elif kind == "MatMul":
            a = list(op.input(0).get_shape())
            k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
            macs = out_elems * int(k)
        moved = sum(input_bytes(i) for i in op.inputs()) + output_bytes(op, out_elems)
        rows.append({"name": op.get_friendly_name(), "op_type": kind, "macs": int(macs),
                     "ops": int(2 * macs if macs else out_elems), "bytes": int(moved),
                     "precision": "int8" if int8 and kind in _COMPUTE else "fp32"})
    return rows
