"""The OpenVINO IR of an int8 graph stores biases as float (folded DequantizeLinear) and shares identical small
constants: a smaller IR that computes bit-identical outputs and still compiles to int8 convolutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")


def _qdq_conv(path: Path, group: int = 1) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c_in = 8 if group == 1 else group
    w = rng.normal(size=(16, c_in // group, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(16, -1).max(1) / 127).astype(np.float32)
    x_scale = np.float32(4 / 255)
    b = rng.normal(size=16).astype(np.float32)
    b_scale = (x_scale * w_scale).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.round(w / w_scale[:, None, None, None]).astype(np.int8), "w_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(16, np.int8), "w_zero"),
        numpy_helper.from_array(np.round(b / b_scale).astype(np.int32), "b_q"),
        numpy_helper.from_array(b_scale, "b_scale"),
        numpy_helper.from_array(np.array(x_scale), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1], group=group),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "x_scale", "x_zero"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "x_scale", "x_zero"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_int8_ir_has_float_biases_shared_constants_and_the_same_outputs(tmp_path: Path) -> None:
    from edgekit.backends import openvino as ovb
    from edgekit.backends.openvino_size import fold_bias_dequantize
    from edgekit.targets import get_target

    src = _qdq_conv(tmp_path / "qdq.onnx")
    model = onnx.load(str(src))
    assert fold_bias_dequantize(model) == 1
    assert "b_q" not in {t.name for t in model.graph.initializer}

    xml, _ = ovb.lower(src, get_target("openvino"), tmp_path / "m", {"precision": "int8"})
    plain = ov.convert_model(str(src))  # what the frontend alone writes
    ov.save_model(plain, str(tmp_path / "plain.xml"), compress_to_fp16=False)
    assert xml.stat().st_size + xml.with_suffix(".bin").stat().st_size < \
        (tmp_path / "plain.xml").stat().st_size + (tmp_path / "plain.bin").stat().st_size

    core = ov.Core()
    ir = core.read_model(str(xml))
    consts = [op for op in ir.get_ordered_ops() if op.get_type_name() == "Constant"]
    assert not [c for c in consts if str(c.get_element_type()) == "<Type: 'int32_t'>"]
    small = [(str(c.get_element_type()), tuple(c.get_output_shape(0)), c.get_data().tobytes())
             for c in consts if c.get_byte_size() <= 64]
    assert len(small) == len(set(small))

    x = np.random.default_rng(1).normal(size=(1, 8, 12, 12)).astype(np.float32)
    compiled = core.compile_model(ir, "CPU")
    got = compiled({0: x})[0]
    want = core.compile_model(plain, "CPU")({0: x})[0]
    assert np.array_equal(got, want)
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions <= {"u8", "i8"} and precisions


@pytest.mark.parametrize("group", [16, 4])
def test_grouped_int8_ir_stores_weights_grouped_scalar_ranges_and_no_indentation(tmp_path: Path, group: int) -> None:
    """Depthwise / grouped int8 weights are stored in the 5-D grouped layout (no Reshape after their
    dequantization), per-tensor FakeQuantize ranges are scalars, the XML has no indentation: the same outputs,
    bit for bit, and the convolution still runs u8."""
    from edgekit.backends import openvino as ovb
    from edgekit.targets import get_target

    src = _qdq_conv(tmp_path / "dw.onnx", group=group)
    xml, _ = ovb.lower(src, get_target("openvino"), tmp_path / "m", {"precision": "int8"})
    text = xml.read_text()
    assert not [line for line in text.splitlines() if line[:1].isspace()]
    core = ov.Core()
    ir = core.read_model(str(xml))
    types = [op.get_type_name() for op in ir.get_ordered_ops()]
    assert "Reshape" not in types and "GroupConvolution" in types
    for op in ir.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            assert all(len(op.get_input_shape(k)) == 0 for k in range(1, 5))

    plain = ov.convert_model(str(src))
    x = np.random.default_rng(1).normal(size=(1, group, 12, 12)).astype(np.float32)
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    want = core.compile_model(plain, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x})[0]
    assert np.array_equal(compiled({0: x})[0], want)
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions <= {"u8", "i8"} and precisions
