"""Small real artifacts for the profile tests: a CNN as ONNX (built with onnx.helper, seeded weights),
the same as OpenVINO IR, a QDQ int8 version, and a tiny .tflite written with the LiteRT flatbuffer schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_cnn_onnx(path: Path, channels: int = 8, size: int = 32, seed: int = 0, dynamic_batch: bool = True) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    c = channels
    inits = [init("w1", (c, 3, 3, 3)), init("b1", (c,)), init("w2", (2 * c, c, 3, 3)), init("b2", (2 * c,)),
             init("fc_w", (10, 2 * c)), init("fc_b", (10,))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    batch = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_ov_ir(onnx_path: Path, xml_path: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def make_qdq_onnx(fp32_path: Path, out: Path, size: int = 32) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.it = iter([{"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(4)])

        def get_next(self):  # noqa: ANN201
            return next(self.it, None)

    quantize_static(str(fp32_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def make_tflite(path: Path, in_features: int = 64, out_features: int = 16, seed: int = 0) -> Path:
    """A FULLY_CONNECTED + RELU model, float32, input [1, in_features]."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out_features, in_features)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(out_features) * 0.1).astype(np.float32)

    def buf(data: bytes | None) -> s.BufferT:
        bt = s.BufferT()
        bt.data = list(data) if data is not None else None
        return bt

    def tensor(name: str, shape: list[int], buffer: int) -> s.TensorT:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, s.TensorType.FLOAT32, buffer
        return t

    model = s.ModelT()
    model.version = 3
    model.description = "edgekit test model"
    model.buffers = [buf(None), buf(w.tobytes()), buf(b.tobytes()), buf(None), buf(None), buf(None)]
    fc_code, relu_code = s.OperatorCodeT(), s.OperatorCodeT()
    fc_code.builtinCode = fc_code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    relu_code.builtinCode = relu_code.deprecatedBuiltinCode = s.BuiltinOperator.RELU
    fc_code.version = relu_code.version = 1
    model.operatorCodes = [fc_code, relu_code]
    sg = s.SubGraphT()
    sg.name = "main"
    sg.tensors = [tensor("input", [1, in_features], 3), tensor("w", [out_features, in_features], 1),
                  tensor("b", [out_features], 2), tensor("fc", [1, out_features], 4),
                  tensor("output", [1, out_features], 5)]
    sg.inputs, sg.outputs = [0], [4]
    fc = s.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 0, [0, 1, 2], [3]
    fc.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = s.FullyConnectedOptionsT()
    relu = s.OperatorT()
    relu.opcodeIndex, relu.inputs, relu.outputs = 1, [3], [4]
    sg.operators = [fc, relu]
    model.subgraphs = [sg]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
