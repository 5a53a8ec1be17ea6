"""Operator versions: every emitted op carries the lowest version that supports its use, and LiteRT runs it."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as fb
from conftest import check, check_int8, make_model
from onnx import helper

from edgekit.backends import tflite
from edgekit.backends.tflite.versions import Sig, model_versions, required_version
from edgekit.backends.tflite.writer import Quant, read_model


def _cnn(rng):
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    inits = {"w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3,
             "w2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3,
             "fc": rng.standard_normal((5, 16)).astype(np.float32) * 0.3, "fcb": rng.standard_normal(5).astype(np.float32),
             "lo": np.asarray(0, np.float32), "hi": np.asarray(6, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2"], ["b"], pads=[2, 2, 2, 2], dilations=[2, 2], group=8),
             helper.make_node("Clip", ["b", "lo", "hi"], ["br"]), helper.make_node("Add", ["br", "ar"], ["s"]),
             helper.make_node("AveragePool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxPool", ["s"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Concat", ["p", "m"], ["c"], axis=1), helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["l"], transB=1),
             helper.make_node("Softmax", ["l"], ["y"], axis=-1)]
    return make_model(nodes, {"x": x}, ["y"], inits), {"x": x}


def _seq_fc(rng):
    a = rng.standard_normal((1, 5, 16)).astype(np.float32)
    inits = {"w": rng.standard_normal((16, 6)).astype(np.float32) * 0.3, "bias": rng.standard_normal(6).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["y"])]
    return make_model(nodes, {"a": a}, ["y"], inits), {"a": a}


def _assert_minimal(path):
    rows = model_versions(read_model(path.read_bytes()))
    wrong = [(name, got, want) for name, got, want in rows if got != want]
    assert not wrong, wrong
    return tflite.describe(path)["op_versions"]


FP32_EXPECTED = {"CONV_2D": [1], "DEPTHWISE_CONV_2D": [2], "FULLY_CONNECTED": [1], "AVERAGE_POOL_2D": [1],
                 "MAX_POOL_2D": [1], "SOFTMAX": [1], "CONCATENATION": [1], "MEAN": [1], "ADD": [1]}
INT8_EXPECTED = {"CONV_2D": [3], "DEPTHWISE_CONV_2D": [3], "FULLY_CONNECTED": [4], "AVERAGE_POOL_2D": [2],
                 "MAX_POOL_2D": [2], "SOFTMAX": [2], "CONCATENATION": [2], "MEAN": [2], "ADD": [2],
                 "QUANTIZE": [1], "DEQUANTIZE": [2]}


def test_fp32_versions(tmp_path, rng):
    model, feeds = _cnn(rng)
    path = check(model, feeds, tmp_path, atol=1e-5)  # converted and run in LiteRT
    versions = _assert_minimal(path)
    for op, want in FP32_EXPECTED.items():
        assert versions.get(op) == want, (op, versions)


def test_int8_versions(tmp_path, rng):
    model, feeds = _cnn(rng)
    path = check_int8(model, feeds, tmp_path, steps=3.0)
    versions = _assert_minimal(path)
    for op, want in INT8_EXPECTED.items():
        assert versions.get(op) == want, (op, versions)


@pytest.mark.parametrize("int8", [False, True])
def test_fully_connected_keep_num_dims_is_version_5(tmp_path, rng, int8):
    model, feeds = _seq_fc(rng)
    path = check_int8(model, feeds, tmp_path, steps=2.0) if int8 else check(model, feeds, tmp_path, atol=1e-5)
    assert _assert_minimal(path)["FULLY_CONNECTED"] == [5]


def _t(shape, dtype=fb.TensorType.INT8, q: Quant | None = None):
    t = fb.TensorT()
    t.shape, t.type = list(shape), dtype
    if q is not None:
        t.quantization = fb.QuantizationParametersT()
        t.quantization.scale = q.scale
    return t


def _opts(kind: str, **fields):
    o = getattr(fb, kind + "T")()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


@pytest.mark.parametrize("name,sig,want", [
    ("MUL", Sig([_t((4,), q=Quant(0.5, 0)), _t((4,), q=Quant(4.0, 0))], [_t((4,), q=Quant(1.0, 0))], None), 3),
    ("MUL", Sig([_t((4,), q=Quant(0.1, 0)), _t((4,), q=Quant(0.1, 0))], [_t((4,), q=Quant(1.0, 0))], None), 2),
    ("MUL", Sig([_t((4,), fb.TensorType.FLOAT32)] * 2, [_t((4,), fb.TensorType.FLOAT32)], None), 1),
    ("DEQUANTIZE", Sig([_t((8, 3), q=Quant(np.ones(8), 0))], [_t((8, 3), fb.TensorType.FLOAT32)], None), 5),
    ("TRANSPOSE", Sig([_t((1, 2, 3, 4, 5), fb.TensorType.FLOAT32)], [_t((1, 2, 3, 4, 5), fb.TensorType.FLOAT32)], None), 4),
    ("FULLY_CONNECTED", Sig([_t((2, 4)), _t((3, 4)), None], [_t((2, 3))], _opts("FullyConnectedOptions")), 6),
    ("SUB", Sig([_t((1, 2, 3, 4, 5), fb.TensorType.FLOAT32), _t((5,), fb.TensorType.FLOAT32)], [_t((1, 2, 3, 4, 5))], None), 3),
    ("RESIZE_BILINEAR", Sig([_t((1, 4, 4, 2))], [_t((1, 8, 8, 2))], _opts("ResizeBilinearOptions", halfPixelCenters=True)), 3),
    ("BROADCAST_TO", Sig([_t((1, 4), fb.TensorType.FLOAT32)], [_t((3, 4), fb.TensorType.FLOAT32)], None), 2),
    ("RESHAPE", Sig([_t((1, 4))], [_t((4,))], None), 1),
])
def test_version_rules(name, sig, want):
    assert required_version(name, sig) == want
