"""Gemm / MatMul (2-D, batched, broadcast) and the normalizations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, make_model, one_node
from onnx import helper


@pytest.mark.parametrize("trans_a,trans_b,alpha,beta,c_shape", [
    (0, 0, 1.0, 1.0, (5,)), (0, 1, 1.0, 1.0, (5,)), (1, 0, 1.0, 1.0, (1, 5)), (0, 1, 0.5, 2.0, (5,)),
    (0, 0, 1.0, 1.0, None), (0, 1, 1.0, 1.0, (3, 5)), (0, 0, 1.0, 0.5, (1,)),
])
@pytest.mark.parametrize("const_b", [True, False])
def test_gemm(tmp_path, rng, trans_a, trans_b, alpha, beta, c_shape, const_b):
    a = rng.standard_normal((4, 3) if trans_a else (3, 4)).astype(np.float32)
    b = rng.standard_normal((5, 4) if trans_b else (4, 5)).astype(np.float32)
    inits, ins = {}, {"a": a}
    (inits if const_b else ins)["b"] = b
    names = ["a", "b"]
    if c_shape is not None:
        inits["c"] = rng.standard_normal(c_shape).astype(np.float32)
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    ordered = {k: ins[k] for k in names if k in ins}
    check(make_model([node], ordered, ["y"], inits), ordered, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 2, 3, 4), (2, 2, 4, 5)),
                                   ((2, 2, 3, 4), (4, 6)), ((1, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (1, 3, 4, 2))])
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul(tmp_path, rng, sa, sb, const_b):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if const_b:
        m, feeds = one_node("MatMul", {"a": a}, {"b": b}), {"a": a}
    else:
        m, feeds = one_node("MatMul", {"a": a, "b": b}), {"a": a, "b": b}
    check(m, feeds, tmp_path, rtol=1e-5, atol=1e-5)


def test_matmul_add_bias(tmp_path, rng):
    a = rng.standard_normal((2, 6, 8)).astype(np.float32)
    inits = {"w": rng.standard_normal((8, 4)).astype(np.float32), "bias": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["y"])]
    check(make_model(nodes, {"a": a}, ["y"], inits), {"a": a}, tmp_path, atol=1e-5)


@pytest.mark.parametrize("shape,axis", [((2, 5, 16), -1), ((2, 5, 16), 1), ((3, 8), -1), ((1, 4, 3, 3), 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm(tmp_path, rng, shape, axis, with_bias):
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    pshape = shape[axis:]
    inits = {"s": rng.standard_normal(pshape).astype(np.float32)}
    names = ["x", "s"]
    if with_bias:
        inits["b"] = rng.standard_normal(pshape).astype(np.float32)
        names.append("b")
    node = helper.make_node("LayerNormalization", names, ["y"], axis=axis, epsilon=1e-5)
    check(make_model([node], {"x": x}, ["y"], inits), {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 4, 5, 5), (2, 3, 7), (2, 6)])
def test_batch_norm(tmp_path, rng, shape):
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    inits = {"s": rng.standard_normal(c).astype(np.float32), "b": rng.standard_normal(c).astype(np.float32),
             "m": rng.standard_normal(c).astype(np.float32), "v": rng.uniform(0.5, 2, c).astype(np.float32)}
    check(one_node("BatchNormalization", {"x": x}, inits, epsilon=1e-3), {"x": x}, tmp_path, rtol=1e-4, atol=1e-5)


def test_instance_norm(tmp_path, rng):
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    inits = {"s": rng.standard_normal(3).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    check(one_node("InstanceNormalization", {"x": x}, inits), {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)
