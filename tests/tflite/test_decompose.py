"""Ops rewritten into others before lowering (decompose.py), against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, make_model, one_node
from onnx import helper

EINSUM = [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 5, 4), (1, 2, 6, 4)]),
    ("bhqk,bhkd->bqhd", [(1, 2, 5, 6), (1, 2, 6, 4)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("bij->bj", [(2, 3, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("ij,k->ijk", [(2, 3), (4,)]),
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 6)]),
    ("nchw,oc->nohw", [(1, 3, 4, 5), (6, 3)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum(tmp_path, rng, eq, shapes):
    feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    check(one_node("Einsum", feeds, equation=eq), feeds, tmp_path, rtol=1e-4, atol=1e-5)


def test_einsum_with_a_constant_operand(tmp_path, rng):
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    w = {"w": rng.standard_normal((4, 3)).astype(np.float32)}
    m = make_model([helper.make_node("Einsum", ["x", "w"], ["y"], equation="bsd,de->bse")], {"x": x}, ["y"], w)
    check(m, {"x": x}, tmp_path, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,attrs", [("Selu", {}), ("Selu", {"alpha": 1.5, "gamma": 2.0}), ("Celu", {"alpha": 0.7}),
                                      ("Softsign", {}), ("ThresholdedRelu", {"alpha": 0.3}), ("Mish", {}),
                                      ("Elu", {"alpha": 0.4})])
def test_unary(tmp_path, rng, op, attrs):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32) * 2
    opset = 18 if op == "Mish" else 17
    check(one_node(op, {"x": x}, opset=opset, **attrs), {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["Sum", "Mean"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_variadic(tmp_path, rng, op, n):
    feeds = {f"x{i}": rng.standard_normal((2, 4) if i else (1, 4)).astype(np.float32) for i in range(n)}
    check(one_node(op, feeds), feeds, tmp_path, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,groups,opset", [((2, 8, 5, 6), 4, 21), ((1, 6, 10), 3, 21), ((1, 4, 3, 3), 1, 21),
                                                ((1, 8, 4, 4), 2, 18)])
def test_group_normalization(tmp_path, rng, shape, groups, opset):
    """GroupNormalization had no TFLite lowering (exit 4). Opset 21: per-channel scale and bias; 18: per group."""
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    n = shape[1] if opset >= 21 else groups
    inits = {"s": rng.standard_normal(n).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)}
    model = one_node("GroupNormalization", {"x": x}, inits, opset=opset, num_groups=groups, epsilon=1e-3)
    model.ir_version = 10 if opset >= 21 else 8
    check(model, {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)


def test_supported_ops_lists_the_rewritten_ops():
    from edgekit.backends.tflite import supported_ops

    assert {"Einsum", "Sum", "Mean", "Selu", "Mish"} <= set(supported_ops())
