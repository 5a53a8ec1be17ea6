"""Pooling and reductions against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, make_model, one_node
from onnx import helper

POOLS = [
    # kernel, stride, pads, ceil_mode, extra
    (2, 2, [0, 0, 0, 0], 0, {}),
    (3, 2, [1, 1, 1, 1], 0, {}),
    (3, 1, [1, 1, 1, 1], 0, {}),
    (3, 2, [0, 0, 0, 0], 1, {}),
    (3, 2, [0, 0, 1, 1], 0, {}),
    (2, 1, [0, 0, 0, 0], 0, {}),
    ((3, 2), (2, 1), [1, 0, 1, 0], 0, {}),
    (3, 2, None, 0, {"auto_pad": "SAME_UPPER"}),
    (3, 3, [0, 0, 0, 0], 1, {}),
]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("case", POOLS, ids=[f"pool{i}" for i in range(len(POOLS))])
def test_pool(tmp_path, rng, op, case):
    k, s, pads, ceil, extra = case
    k = [k, k] if isinstance(k, int) else list(k)
    s = [s, s] if isinstance(s, int) else list(s)
    x = rng.standard_normal((1, 3, 9, 10)).astype(np.float32)
    attrs = dict(kernel_shape=k, strides=s, ceil_mode=ceil, **extra)
    if pads is not None:
        attrs["pads"] = pads
    if op == "AveragePool" and pads and any(pads) and attrs.get("auto_pad") is None:
        attrs["count_include_pad"] = 1
    check(one_node(op, {"x": x}, **attrs), {"x": x}, tmp_path, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,s,pads", [(3, 2, [0, 0, 0, 0]), (3, 2, [1, 1, 1, 1]), (2, 2, [1, 1, 0, 0]), (3, 1, [0, 1, 2, 0]),
                                    (3, 3, [1, 1, 0, 0])])
@pytest.mark.parametrize("ceil", [0, 1])
@pytest.mark.parametrize("include", [0, 1])
def test_avgpool_divisor(tmp_path, rng, k, s, pads, ceil, include):
    """Every padding / ceil_mode / count_include_pad combination: windows clipped and divided as ONNX does."""
    x = rng.standard_normal((1, 3, 9, 10)).astype(np.float32)
    m = one_node("AveragePool", {"x": x}, kernel_shape=[k, k], strides=[s, s], pads=pads, ceil_mode=ceil,
                 count_include_pad=include)
    check(m, {"x": x}, tmp_path, rtol=1e-5, atol=1e-6)


def test_avgpool_ceil_mode_int8(tmp_path, rng):
    from conftest import check_int8

    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)]
    from edgekit.backends.tflite import describe

    path = check_int8(make_model(nodes, {"x": x}, ["y"], w), {"x": x}, tmp_path, steps=2.0)
    assert describe(path)["float_ops"] == 0


def test_avgpool_same_excludes_pad(tmp_path, rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    m = one_node("AveragePool", {"x": x}, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    check(m, {"x": x}, tmp_path, atol=1e-6)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(1, 8, 7, 7), (2, 3, 4, 5), (1, 6, 10)])
def test_global_pool(tmp_path, rng, op, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    check(one_node(op, {"x": x}), {"x": x}, tmp_path, atol=1e-6)


REDUCE = ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceSumSquare", "ReduceL2"]


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axes,keep", [([1], 1), ([1], 0), ([2, 3], 1), ([2, 3], 0), ([-1], 0), (None, 1), ([0, 2], 0)])
def test_reduce(tmp_path, rng, op, axes, keep):
    x = rng.uniform(0.5, 1.5, (2, 3, 4, 5)).astype(np.float32)
    inits = {} if axes is None else {"axes": np.asarray(axes, np.int64)}
    opset = 18
    node = helper.make_node(op, ["x"] + (["axes"] if axes is not None else []), ["y"], keepdims=keep)
    check(make_model([node], {"x": x}, ["y"], inits, opset=opset), {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_reduce_after_conv_uses_nhwc(tmp_path, rng, op):
    """A reduction over a channels-last tensor maps its axes instead of transposing back."""
    from edgekit.backends.tflite import describe

    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c", "axes"], ["y"], keepdims=0)]
    m = make_model(nodes, {"x": x}, ["y"], {"w": w, "axes": np.asarray([2, 3], np.int64)}, opset=18)
    path = check(m, {"x": x}, tmp_path, rtol=1e-4, atol=1e-5)
    assert describe(path)["transposes"] == 1  # only the input


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keep", [(1, 1), (1, 0), (-1, 0)])
def test_argmax(tmp_path, rng, op, axis, keep):
    from onnx import TensorProto

    x = rng.standard_normal((2, 5, 7)).astype(np.float32)
    check(one_node(op, {"x": x}, out_dtype=TensorProto.INT64, axis=axis, keepdims=keep), {"x": x}, tmp_path)


@pytest.mark.parametrize("op,include", [("MaxPool", None), ("AveragePool", 0), ("AveragePool", 1)])
@pytest.mark.parametrize("k,s,pads,ceil", [(3, 2, [0, 0], 0), (3, 2, [1, 1], 0), (2, 2, [0, 0], 1), (4, 3, [1, 2], 0)])
def test_pool_1d(tmp_path, rng, op, include, k, s, pads, ceil):
    """1-D pooling (N, C, L): lowered as 2-D pooling over (N, 1, L, C) and reshaped back."""
    x = rng.standard_normal((2, 5, 23)).astype(np.float32)
    attrs = dict(kernel_shape=[k], strides=[s], pads=pads, ceil_mode=ceil)
    if include is not None:
        attrs["count_include_pad"] = include
    check(one_node(op, {"x": x}, **attrs), {"x": x}, tmp_path, rtol=1e-5, atol=1e-6)


def test_pool_1d_int8(tmp_path, rng):
    from conftest import check_int8

    x = rng.standard_normal((1, 4, 31)).astype(np.float32)
    w = {"w": rng.standard_normal((6, 4, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3], strides=[2]),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[2], strides=[2], ceil_mode=1)]
    check_int8(make_model(nodes, {"x": x}, ["y"], w), {"x": x}, tmp_path, steps=2.0)
