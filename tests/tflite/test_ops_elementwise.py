"""Elementwise ops: arithmetic with numpy broadcasting (inputs and constants), unary math, activations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, make_model, one_node
from onnx import TensorProto, helper

SHAPES = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (5,)),
    ((2, 3, 4, 5), (3, 1, 1)),
    ((2, 3, 4, 5), (1, 3, 1, 5)),
    ((1, 3, 4, 5), (2, 1, 1, 1)),
    ((3, 4), (4,)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (2, 3, 4)),
    ((2, 3, 4), ()),
    ((6,), (6,)),
]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"]


def _operands(rng, op, sa, sb):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if op == "Div":
        b = np.asarray(np.where(np.abs(b) < 0.3, 1.0, b), dtype=np.float32)
    if op == "Pow":
        a = np.abs(a) + 0.5
        b = np.asarray(np.clip(b, -2, 2), dtype=np.float32)
    return a, b


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("sa,sb", SHAPES, ids=[f"{a}x{b}" for a, b in SHAPES])
@pytest.mark.parametrize("const_b", [False, True])
def test_binary(tmp_path, rng, op, sa, sb, const_b):
    a, b = _operands(rng, op, sa, sb)
    if const_b:
        m, feeds = one_node(op, {"a": a}, {"b": b}), {"a": a}
    else:
        m, feeds = one_node(op, {"a": a, "b": b}), {"a": a, "b": b}
    check(m, feeds, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub"])
def test_binary_const_first(tmp_path, rng, op):
    a = rng.standard_normal((3, 1, 1)).astype(np.float32)
    b = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    node = helper.make_node(op, ["a", "b"], ["y"])
    check(make_model([node], {"b": b}, ["y"], {"a": a}), {"b": b}, tmp_path)


@pytest.mark.parametrize("exponent", [2.0, 0.5, 1.0, 3.0])
def test_pow_scalar(tmp_path, rng, exponent):
    x = (np.abs(rng.standard_normal((2, 3, 4))) + 0.1).astype(np.float32)
    check(one_node("Pow", {"x": x}, {"e": np.asarray(exponent, np.float32)}), {"x": x}, tmp_path, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_variadic(tmp_path, rng, n, op):
    ins = {f"x{i}": rng.standard_normal((2, 3, 4)).astype(np.float32) for i in range(n)}
    check(one_node(op, ins), ins, tmp_path)


UNARY = {
    "Sqrt": lambda x: np.abs(x) + 0.01, "Reciprocal": lambda x: np.where(np.abs(x) < 0.2, 1.0, x),
    "Neg": None, "Abs": None, "Exp": None, "Log": lambda x: np.abs(x) + 0.01, "Floor": None, "Ceil": None,
    "Sin": None, "Cos": None, "Sign": None, "Erf": None, "Relu": None, "Sigmoid": None, "Tanh": None,
    "HardSwish": None, "HardSigmoid": None, "Softplus": None, "Elu": None, "Identity": None,
}


@pytest.mark.parametrize("op", list(UNARY))
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), (3, 8)])
def test_unary(tmp_path, rng, op, shape):
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    if UNARY[op] is not None:
        x = UNARY[op](x).astype(np.float32)
    check(one_node(op, {"x": x}), {"x": x}, tmp_path, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(tmp_path, rng, approximate):
    x = (rng.standard_normal((2, 8, 16)) * 2).astype(np.float32)
    check(one_node("Gelu", {"x": x}, opset=20, approximate=approximate), {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)


def test_gelu_erf_pattern_fused(tmp_path, rng):
    """torch's exported x * 0.5 * (1 + erf(x / sqrt 2)) becomes one GELU op."""
    from edgekit.backends.tflite import describe

    x = (rng.standard_normal((2, 8, 16)) * 2).astype(np.float32)
    c = {"s2": np.asarray(1.4142135, np.float32), "one": np.asarray(1.0, np.float32), "half": np.asarray(0.5, np.float32)}
    nodes = [helper.make_node("Div", ["x", "s2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    path = check(make_model(nodes, {"x": x}, ["y"], c), {"x": x}, tmp_path, atol=1e-5)
    assert describe(path)["ops"] == {"GELU": 1}


@pytest.mark.parametrize("alpha", [0.01, 0.2])
def test_leaky_relu(tmp_path, rng, alpha):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    check(one_node("LeakyRelu", {"x": x}, alpha=alpha), {"x": x}, tmp_path)


@pytest.mark.parametrize("slope_shape", [(4, 1, 1), (1,), (1, 4, 1, 1)])
def test_prelu(tmp_path, rng, slope_shape):
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    s = rng.uniform(0, 0.5, slope_shape).astype(np.float32)
    check(one_node("PRelu", {"x": x}, {"s": s}), {"x": x}, tmp_path)


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (0.0, None), (-1.0, 1.0), (-0.5, 0.7), (None, 0.3), (0.2, None)])
def test_clip(tmp_path, rng, lo, hi):
    x = (rng.standard_normal((1, 3, 4, 4)) * 4).astype(np.float32)
    inits, names = {}, ["x"]
    names.append("lo" if lo is not None else "")
    names.append("hi" if hi is not None else "")
    if lo is not None:
        inits["lo"] = np.asarray(lo, np.float32)
    if hi is not None:
        inits["hi"] = np.asarray(hi, np.float32)
    node = helper.make_node("Clip", names, ["y"])
    check(make_model([node], {"x": x}, ["y"], inits), {"x": x}, tmp_path)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((2, 10), -1), ((2, 3, 10), -1), ((2, 3, 10), 1), ((1, 4, 5, 6), 1), ((1, 4, 5, 6), 3)])
def test_softmax(tmp_path, rng, op, shape, axis):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    check(one_node(op, {"x": x}, axis=axis), {"x": x}, tmp_path, rtol=1e-5, atol=1e-6)


def test_softmax_opset11_flatten_semantics(tmp_path, rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    check(one_node("Softmax", {"x": x}, opset=11, axis=1), {"x": x}, tmp_path, atol=1e-6)


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_compare_where(tmp_path, rng, op):
    a = np.round(rng.standard_normal((2, 3, 4))).astype(np.float32)
    b = np.round(rng.standard_normal((3, 4))).astype(np.float32)
    nodes = [helper.make_node(op, ["a", "b"], ["c"]), helper.make_node("Where", ["c", "a", "b"], ["y"])]
    check(make_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b}, tmp_path)


@pytest.mark.parametrize("to", [TensorProto.INT32, TensorProto.INT64, TensorProto.FLOAT])
def test_cast(tmp_path, rng, to):
    x = (rng.standard_normal((3, 4)) * 5).astype(np.float32)
    out_dtype = to
    check(one_node("Cast", {"x": x}, out_dtype=out_dtype, to=to), {"x": x}, tmp_path)
