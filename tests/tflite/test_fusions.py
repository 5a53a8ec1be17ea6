"""Graph fusions: MatMul + constant bias Add -> one FULLY_CONNECTED with its bias (fp32 and int8, 2-D to 4-D)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, check_int8, make_model, ort_run, tflite_run
from onnx import TensorProto, helper, numpy_helper

from edgekit.backends import tflite
from edgekit.backends.tflite.writer import read_model


def _fc_options(path):
    m = read_model(path.read_bytes())
    from ai_edge_litert import schema_py_generated as fb

    codes = [c.builtinCode for c in m.operatorCodes]
    return [op.builtinOptions for op in m.subgraphs[0].operators if codes[op.opcodeIndex] == fb.BuiltinOperator.FULLY_CONNECTED]


def _model(rng, a_shape, bias_shape, bias_first=False):
    a = rng.standard_normal(a_shape).astype(np.float32)
    k = a_shape[-1]
    inits = {"w": rng.standard_normal((k, 6)).astype(np.float32), "bias": rng.standard_normal(bias_shape).astype(np.float32)}
    add_in = ["bias", "m"] if bias_first else ["m", "bias"]
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", add_in, ["y"])]
    return make_model(nodes, {"a": a}, ["y"], inits), {"a": a}


BIASES = [((6,), False), ((6,), True), ((1, 6), False), ((1, 1, 6), True)]
CASES = [(a, b, f) for a in [(3, 8), (1, 5, 8), (2, 5, 8), (2, 2, 3, 8)] for b, f in BIASES if len(b) <= len(a)]


@pytest.mark.parametrize("a_shape,bias_shape,bias_first", CASES)
def test_matmul_bias_fp32(tmp_path, rng, a_shape, bias_shape, bias_first):
    model, feeds = _model(rng, a_shape, bias_shape, bias_first)
    path = check(model, feeds, tmp_path, atol=1e-5)
    d = tflite.describe(path)
    assert d["ops"] == {"FULLY_CONNECTED": 1}, d["ops"]
    (opts,) = _fc_options(path)
    assert bool(opts.keepNumDims) == (len(a_shape) > 2)


@pytest.mark.parametrize("why", ["bias varies along rows", "product also read elsewhere", "bias not constant"])
def test_matmul_bias_not_fused(tmp_path, rng, why):
    a = rng.standard_normal((4, 8)).astype(np.float32)
    inits = {"w": rng.standard_normal((8, 6)).astype(np.float32)}
    ins = {"a": a}
    outs = ["y"]
    if why == "bias varies along rows":
        inits["bias"] = rng.standard_normal((4, 1)).astype(np.float32)
    elif why == "bias not constant":
        ins["bias"] = rng.standard_normal(6).astype(np.float32)
    else:
        inits["bias"] = rng.standard_normal(6).astype(np.float32)
        outs = ["y", "m"]
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["y"])]
    path = check(make_model(nodes, ins, outs, inits), ins, tmp_path, atol=1e-5)
    assert tflite.describe(path)["ops"].get("ADD") == 1


@pytest.mark.parametrize("a_shape", [(4, 16), (1, 6, 16)])
def test_matmul_bias_int8_both_quantized(tmp_path, rng, a_shape):
    """ORT's quantizer puts QDQ on the product and on the sum: one int8 FULLY_CONNECTED, no float op."""
    model, feeds = _model(rng, a_shape, (6,))
    path = check_int8(model, feeds, tmp_path, steps=2.0)
    d = tflite.describe(path)
    assert d["float_ops"] == 0 and d["ops"].get("FULLY_CONNECTED") == 1 and "ADD" not in d["ops"], d


def _qdq_product_only(rng, a):
    """x -Q/DQ-> MatMul(DQ(W int8 per-channel)) -Q/DQ-> Add(float bias): the sum left in float, as for transformers."""
    w = rng.standard_normal((16, 6)).astype(np.float32) * 0.3
    bias = (rng.standard_normal(6) * 2.0).astype(np.float32)
    w_scale = np.abs(w).max(axis=0) / 127.0
    wq = np.round(w / w_scale).astype(np.int8)
    prod = a @ (wq * w_scale)
    a_scale, m_scale = np.float32(np.ptp(a) / 255), np.float32(np.ptp(prod) / 255)
    a_zp = np.uint8(np.round(-a.min() / a_scale))
    m_zp = np.uint8(np.round(-prod.min() / m_scale))
    inits = {"wq": wq, "ws": w_scale.astype(np.float32), "wz": np.zeros(6, np.int8), "bias": bias,
             "as": a_scale, "az": a_zp, "ms": m_scale, "mz": m_zp}
    nodes = [helper.make_node("QuantizeLinear", ["a", "as", "az"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "as", "az"], ["ad"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
             helper.make_node("MatMul", ["ad", "wd"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", "ms", "mz"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "ms", "mz"], ["md"]),
             helper.make_node("Add", ["bias", "md"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), m_scale, bias


def test_matmul_bias_int8_product_only_quantized(tmp_path, rng):
    """Only the product has QDQ: the fused int8 op's output range is the product's widened by the bias range."""
    a = rng.standard_normal((1, 8, 16)).astype(np.float32)
    model, m_scale, bias = _qdq_product_only(rng, a)
    src = tmp_path / "qdq.onnx"
    src.write_bytes(model.SerializeToString())
    ref = ort_run(model, {"a": a})[0]
    path = tflite.lower(src, None, tmp_path / "m", {"precision": "int8"})[0]
    got = tflite_run(path, {"a": a})[0]
    d = tflite.describe(path)
    assert d["ops"].get("FULLY_CONNECTED") == 1 and "ADD" not in d["ops"] and d["float_ops"] == 0, d["ops"]
    widened_step = (float(np.ptp(ref)) + float(np.ptp(bias))) / 255 + m_scale
    assert np.abs(got - ref).max() <= widened_step, (np.abs(got - ref).max(), widened_step)


def _qdq_pair(name: str, values: np.ndarray, inits: dict) -> list:
    """Q -> DQ of tensor `name` with uint8 params covering `values` (as a calibrator would set them)."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    inits[f"{name}_s"] = np.float32((hi - lo) / 255)
    inits[f"{name}_z"] = np.uint8(np.round(-lo / inits[f"{name}_s"]))
    return [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"])]


def test_moves_between_int8_ops_stay_int8(tmp_path, rng):
    """MatMul (QDQ out) -> Reshape (left float) -> Transpose (QDQ out) -> MatMul: the Reshape runs in int8 too."""
    a = rng.standard_normal((1, 8, 16)).astype(np.float32)
    w1 = (rng.standard_normal((16, 12)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((8, 5)) * 0.3).astype(np.float32)
    m = a @ w1
    t = m.reshape(1, 8, 3, 4).transpose(0, 2, 3, 1)
    inits = {"w1": w1, "w2": w2, "shape": np.asarray([1, 8, 3, 4], np.int64)}
    nodes = _qdq_pair("a", a, inits)
    nodes += [helper.make_node("MatMul", ["a_dq", "w1"], ["m"])] + _qdq_pair("m", m, inits)
    nodes += [helper.make_node("Reshape", ["m_dq", "shape"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1])]
    nodes += _qdq_pair("t", t, inits) + [helper.make_node("MatMul", ["t_dq", "w2"], ["y"])]
    nodes += _qdq_pair("y", t @ w2, inits)
    model = make_model(nodes, {"a": a}, ["y_dq"], inits)
    src = tmp_path / "qdq.onnx"
    src.write_bytes(model.SerializeToString())
    ref = ort_run(model, {"a": a})[0]
    path = tflite.lower(src, None, tmp_path / "m", {"precision": "int8"})[0]
    d = tflite.describe(path)
    assert d["float_ops"] == 0, d["float_op_types"]
    got = tflite_run(path, {"a": a})[0]
    assert np.abs(got - ref).max() <= 2 * float(inits["y_s"]) + 1e-6


def test_relu_after_concat_is_not_fused(tmp_path, rng):
    """LiteRT's CONCATENATION kernel refuses a fused activation at prepare time (a grouped conv lowered as
    split -> convs -> concat, then ReLU: RegNet/ResNeXt blocks could not be loaded)."""
    a, b = (rng.standard_normal((1, 4, 5, 5)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=1), helper.make_node("Relu", ["c"], ["y"])]
    path = check(make_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b}, tmp_path, atol=1e-6)
    assert tflite.describe(path)["ops"].get("RELU") == 1
