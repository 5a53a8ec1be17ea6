"""Full-int8 lowering of QDQ graphs (ORT quantize_static, per-channel): within one quantization step of ORT."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check_int8, make_model, one_node
from onnx import helper

from edgekit.backends.tflite import describe


def _x(rng, shape=(1, 4, 8, 8), scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


CONVS = [(4, 8, 1, 3, 1, [1, 1, 1, 1]), (4, 8, 1, 3, 2, [0, 0, 1, 1]), (4, 4, 4, 3, 1, [1, 1, 1, 1]),
         (4, 8, 4, 3, 2, [1, 1, 1, 1]), (4, 8, 2, 3, 1, [1, 1, 1, 1]), (4, 6, 1, 1, 1, [0, 0, 0, 0]),
         (4, 8, 1, 3, 2, [1, 1, 1, 1])]


@pytest.mark.parametrize("c,m,group,k,s,pads", CONVS)
@pytest.mark.parametrize("activation", ["uint8", "int8"])
def test_conv_int8(tmp_path, rng, c, m, group, k, s, pads, activation):
    x = _x(rng, (1, c, 8, 8))
    inits = {"w": rng.standard_normal((m, c // group, k, k)).astype(np.float32) * 0.5,
             "b": rng.standard_normal(m).astype(np.float32) * 0.1}
    model = one_node("Conv", {"x": x}, inits, group=group, strides=[s, s], pads=pads)
    path = check_int8(model, {"x": x}, tmp_path, activation=activation)
    d = describe(path)
    assert d["float_ops"] == 0, d["float_op_types"]


def test_conv_relu_chain_int8(tmp_path, rng):
    x = _x(rng, (1, 3, 10, 10))
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.4, "w2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
             "w3": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["b"], pads=[1, 1, 1, 1], group=8), helper.make_node("Relu", ["b"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"])]
    path = check_int8(make_model(nodes, {"x": x}, ["y"], inits), {"x": x}, tmp_path, steps=2.0)
    d = describe(path)
    assert d["float_ops"] == 0 and d["int8_ops"] >= 3


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("shape_b", [(1, 4, 8, 8), (4, 1, 1), (1, 1, 1, 8)])
def test_binary_int8(tmp_path, rng, op, shape_b):
    a, b = _x(rng), _x(rng, shape_b)
    check_int8(one_node(op, {"a": a, "b": b}), {"a": a, "b": b}, tmp_path)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_int8(tmp_path, rng, trans_b):
    a = _x(rng, (1, 16))
    w = rng.standard_normal((10, 16) if trans_b else (16, 10)).astype(np.float32) * 0.3
    model = one_node("Gemm", {"a": a}, {"w": w, "c": rng.standard_normal(10).astype(np.float32)}, transB=trans_b)
    path = check_int8(model, {"a": a}, tmp_path)
    assert describe(path)["float_ops"] == 0


@pytest.mark.parametrize("sa,sb,const_b", [((2, 6, 16), (16, 8), True), ((1, 2, 6, 16), (1, 2, 16, 6), False), ((6, 16), (16, 4), True)])
def test_matmul_int8(tmp_path, rng, sa, sb, const_b):
    a, b = _x(rng, sa), _x(rng, sb, 0.3)
    model = one_node("MatMul", {"a": a}, {"b": b}) if const_b else one_node("MatMul", {"a": a, "b": b})
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    check_int8(model, feeds, tmp_path)


ORT_KEEPS_FLOAT = {"GlobalMaxPool", "Tanh", "HardSwish", "DepthToSpace"}  # not in ORT's QDQ op registry


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}), ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}), ("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
    ("Sigmoid", {}), ("Tanh", {}), ("Softmax", {"axis": -1}), ("Softmax", {"axis": 1}), ("LeakyRelu", {"alpha": 0.1}),
    ("HardSwish", {}), ("Relu", {}), ("Transpose", {"perm": [0, 2, 3, 1]}), ("Flatten", {"axis": 1}),
    ("Resize", None), ("DepthToSpace", {"blocksize": 2}),
])
def test_unary_int8(tmp_path, rng, op, attrs):
    """x -> Conv (quantized) -> op: the op runs on int8 when the quantizer quantized it."""
    x = _x(rng)
    w = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    conv = helper.make_node("Conv", ["x", "w"], ["c"])
    if op == "Resize":
        w["s"] = np.asarray([1, 1, 2, 2], np.float32)
        node = helper.make_node("Resize", ["c", "", "s"], ["y"], mode="nearest", nearest_mode="floor",
                                coordinate_transformation_mode="asymmetric")
    else:
        node = helper.make_node(op, ["c"], ["y"], **attrs)
    path = check_int8(make_model([conv, node], {"x": x}, ["y"], w), {"x": x}, tmp_path)
    d = describe(path)
    if op in ORT_KEEPS_FLOAT:  # the quantizer left it in float on purpose: the only float ops are that op's region
        assert 0 < d["float_ops"] <= 2 and d["int8_ops"] >= 1
    else:
        assert d["float_ops"] == 0, d["float_op_types"]


def test_concat_requantizes_inputs(tmp_path, rng):
    """Concat inputs with different ranges: TFLite needs equal params, so inputs are requantized to the output's."""
    a, b = _x(rng, scale=1.0), _x(rng, scale=4.0)
    nodes = [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Concat", ["ra", "b"], ["y"], axis=1)]
    check_int8(make_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b}, tmp_path)


@pytest.mark.parametrize("io_dtype", ["float", "int8"])
def test_io_dtype(tmp_path, rng, io_dtype):
    x = _x(rng)
    inits = {"w": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3}
    model = one_node("Conv", {"x": x}, inits, pads=[1, 1, 1, 1])
    path = check_int8(model, {"x": x}, tmp_path, io_dtype=io_dtype)
    d = describe(path)
    assert d["float_ops"] == 0
    if io_dtype == "int8":
        assert "QUANTIZE" not in d["ops"] and "DEQUANTIZE" not in d["ops"]
    else:
        assert d["ops"].get("QUANTIZE") == 1 and d["ops"].get("DEQUANTIZE") == 1


def test_float_model_cannot_be_int8(tmp_path, rng):
    from conftest import tflite_convert

    from edgekit.errors import UsageError

    x = _x(rng)
    with pytest.raises(UsageError, match="QDQ"):
        tflite_convert(one_node("Relu", {"x": x}), tmp_path, precision="int8")


def _qdq(name: str, scale: float, zp: int, dtype=np.uint8) -> tuple[list, dict]:
    """Q -> DQ nodes on `name` (output `name`_dq) and their initializers."""
    inits = {f"{name}_s": np.asarray(scale, np.float32), f"{name}_z": np.asarray(zp, dtype)}
    return [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"])], inits


def test_softmax_with_a_fine_output_step_runs_float(tmp_path, rng):
    """Attention-like softmax over 200 positions whose QDQ output step (calibrated on its own range, as edgekit
    does) is far finer than the int8 SOFTMAX kernel's fixed 1/256: lowered in float, then quantized to the
    graph's step for the next int8 MatMul, it matches ORT's QDQ run within 2 output steps. The int8 kernel
    would round most probabilities to 0 or 1/256 (error ~25 steps here)."""
    from conftest import ort_run, tflite_run

    from edgekit.backends import tflite

    x = (rng.standard_normal((1, 8, 200)) * 1.5).astype(np.float32)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    v = rng.standard_normal((200, 8)).astype(np.float32)
    sv = float(np.abs(v).max() / 127)
    y = p @ (np.round(v / sv) * sv)
    nodes, inits = [], {"v_q": np.round(v / sv).astype(np.int8), "v_s": np.asarray(sv, np.float32)}
    for name, scale, zp in (("x", 12 / 255, 128), ("p", float(p.max()) / 255, 0), ("y", 2 * float(np.abs(y).max()) / 255, 128)):
        qn, qi = _qdq(name, scale, zp)
        inits.update(qi)
        nodes.append((name, qn))
    q = dict(nodes)
    graph = [*q["x"], helper.make_node("Softmax", ["x_dq"], ["p"], axis=-1), *q["p"],
             helper.make_node("DequantizeLinear", ["v_q", "v_s"], ["v_dq"]),
             helper.make_node("MatMul", ["p_dq", "v_dq"], ["y"]), *q["y"]]
    model = make_model(graph, {"x": x}, ["y_dq"], inits)
    src = tmp_path / "qdq.onnx"
    import onnx

    onnx.save(model, str(src))
    ref = ort_run(model, {"x": x})[0]
    path = tflite.lower(src, None, tmp_path / "int8", {"precision": "int8"})[0]
    got = tflite_run(path, {"x": x})[0]
    step = 2 * float(np.abs(y).max()) / 255
    assert float(np.abs(got - ref).max()) <= 2 * step + 1e-6
    d = tflite.describe(path)
    assert d["float_op_types"].get("SOFTMAX") == 1 and d["int8_ops"] >= 1


def test_softmax_with_the_kernels_step_stays_int8(tmp_path, rng):
    """ORT's quantizer gives a softmax output the 1/255 step of [0, 1]: the int8 SOFTMAX kernel fits."""
    from edgekit.backends.tflite import describe

    small = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    conv = {"k": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"]), helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    path = check_int8(make_model(nodes, {"x": small}, ["y"], conv), {"x": small}, tmp_path)
    assert "SOFTMAX" not in describe(path)["float_op_types"]
