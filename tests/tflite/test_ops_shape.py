"""Shape and data-movement ops, alone and after a channels-last producer (layout mapping)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, make_model, one_node
from onnx import TensorProto, helper


def _after_conv(rng, nodes_after, x_shape=(1, 3, 6, 6), inits=None, opset=17):
    """x -> Conv (channels-last inside) -> nodes_after; the op under test sees an NHWC-stored tensor."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((4, x_shape[1], 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"])] + nodes_after
    all_inits = {"w": w, **(inits or {})}
    return make_model(nodes, {"x": x}, ["y"], all_inits, opset=opset), {"x": x}


@pytest.mark.parametrize("shape,target", [((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((1, 4, 6, 6), (1, 4, 36)),
                                          ((1, 4, 6, 6), (1, -1)), ((2, 12), (2, 3, 4)), ((1, 4, 6, 6), (1, 6, 24))])
@pytest.mark.parametrize("after_conv", [False, True])
def test_reshape(tmp_path, rng, shape, target, after_conv):
    shp = {"s": np.asarray(target, np.int64)}
    if after_conv and len(shape) == 4:
        m, feeds = _after_conv(rng, [helper.make_node("Reshape", ["c", "s"], ["y"])], (1, 3, 6, 6), shp)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
        m, feeds = one_node("Reshape", {"x": x}, shp), {"x": x}
    check(m, feeds, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_flatten(tmp_path, rng, axis):
    m, feeds = _after_conv(rng, [helper.make_node("Flatten", ["c"], ["y"], axis=axis)])
    check(m, feeds, tmp_path, atol=1e-5)


def test_flatten_after_global_pool_is_free(tmp_path, rng):
    from edgekit.backends.tflite import describe

    m, feeds = _after_conv(rng, [helper.make_node("GlobalAveragePool", ["c"], ["g"]),
                                 helper.make_node("Flatten", ["g"], ["y"])])
    path = check(m, feeds, tmp_path, atol=1e-5)
    assert describe(path)["transposes"] == 1


@pytest.mark.parametrize("op,axes,shape", [("Squeeze", [1], (2, 1, 3)), ("Squeeze", [0, 2], (1, 3, 1, 4)),
                                           ("Unsqueeze", [0], (2, 3)), ("Unsqueeze", [1, 3], (2, 3)), ("Unsqueeze", [-1], (2, 3))])
def test_squeeze_unsqueeze(tmp_path, rng, op, axes, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    check(one_node(op, {"x": x}, {"axes": np.asarray(axes, np.int64)}), {"x": x}, tmp_path)


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (3, 2, 1, 0), (0, 1, 3, 2), (1, 0, 2, 3)])
@pytest.mark.parametrize("after_conv", [False, True])
def test_transpose(tmp_path, rng, perm, after_conv):
    if after_conv:
        m, feeds = _after_conv(rng, [helper.make_node("Transpose", ["c"], ["y"], perm=list(perm))], (1, 3, 5, 6))
    else:
        x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
        m, feeds = one_node("Transpose", {"x": x}, perm=list(perm)), {"x": x}
    check(m, feeds, tmp_path, atol=1e-5)


def test_nchw_to_nhwc_transpose_is_free(tmp_path, rng):
    """conv -> Transpose(0,2,3,1): the tensor is already NHWC inside, so no op is emitted for it."""
    from edgekit.backends.tflite import describe

    m, feeds = _after_conv(rng, [helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])])
    path = check(m, feeds, tmp_path, atol=1e-5)
    assert describe(path)["transposes"] == 1  # the input boundary only


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
@pytest.mark.parametrize("after_conv", [False, True])
def test_concat(tmp_path, rng, axis, after_conv):
    if after_conv:
        other = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
        m, feeds = _after_conv(rng, [helper.make_node("Concat", ["c", "k", "c"], ["y"], axis=axis)], inits={"k": other})
    else:
        a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
        b = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
        m, feeds = one_node("Concat", {"a": a, "b": b}, axis=axis), {"a": a, "b": b}
    check(m, feeds, tmp_path, atol=1e-5)


@pytest.mark.parametrize("axis,split", [(1, [1, 3]), (2, [2, 2, 2]), (3, [5, 1]), (-1, [3, 3])])
@pytest.mark.parametrize("after_conv", [False, True])
def test_split(tmp_path, rng, axis, split, after_conv):
    n = len(split)
    outs = [f"s{i}" for i in range(n)]
    nodes = [helper.make_node("Split", ["c" if after_conv else "x", "sp"], outs, axis=axis),
             helper.make_node("Concat", outs[::-1], ["y"], axis=axis)]
    inits = {"sp": np.asarray(split, np.int64)}
    if after_conv:
        m, feeds = _after_conv(rng, nodes, inits=inits)
    else:
        x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
        m, feeds = make_model(nodes, {"x": x}, ["y"], inits), {"x": x}
    check(m, feeds, tmp_path, atol=1e-5)


SLICES = [([0], [2], [1], None), ([1], [-1], [2], None), ([-3], [100], [3], None), ([0, 1], [2, 5], [2, 3], [1, 2]),
          ([5], [0], [3], [-1]), ([-1], [-100], [2], [-2]), ([1, 1], [4, 4], [2, 3], None)]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
@pytest.mark.parametrize("after_conv", [False, True])
def test_slice(tmp_path, rng, starts, ends, axes, steps, after_conv):
    inits = {"st": np.asarray(starts, np.int64), "en": np.asarray(ends, np.int64), "ax": np.asarray(axes, np.int64)}
    names = ["c" if after_conv else "x", "st", "en", "ax"]
    if steps is not None:
        inits["sp"] = np.asarray(steps, np.int64)
        names.append("sp")
    nodes = [helper.make_node("Slice", names, ["y"])]
    if after_conv:
        m, feeds = _after_conv(rng, nodes, inits=inits)
    else:
        x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
        m, feeds = make_model(nodes, {"x": x}, ["y"], inits), {"x": x}
    check(m, feeds, tmp_path, atol=1e-5)


@pytest.mark.parametrize("indices", [np.asarray(1), np.asarray([0, 2]), np.asarray([-1]), np.asarray([[0, 1], [2, 0]])])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_const_indices(tmp_path, rng, indices, axis):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    check(one_node("Gather", {"x": x}, {"i": indices.astype(np.int64)}, axis=axis), {"x": x}, tmp_path)


def test_gather_embedding(tmp_path, rng):
    table = rng.standard_normal((50, 8)).astype(np.float32)
    ids = rng.integers(0, 50, (2, 7)).astype(np.int64)
    node = helper.make_node("Gather", ["t", "ids"], ["y"])
    check(make_model([node], {"ids": ids}, ["y"], {"t": table}), {"ids": ids}, tmp_path)


@pytest.mark.parametrize("pads,mode,value", [([0, 0, 1, 1, 0, 0, 1, 1], "constant", 0.0), ([0, 1, 2, 0, 0, 0, 1, 3], "constant", 1.5),
                                             ([0, 0, 2, 1, 0, 0, 1, 2], "reflect", 0.0), ([1, 0, 0, 0, 0, 0, 0, 0], "constant", 0.0)])
@pytest.mark.parametrize("after_conv", [False, True])
def test_pad(tmp_path, rng, pads, mode, value, after_conv):
    inits = {"p": np.asarray(pads, np.int64), "v": np.asarray(value, np.float32)}
    nodes = [helper.make_node("Pad", ["c" if after_conv else "x", "p", "v"], ["y"], mode=mode)]
    if after_conv:
        m, feeds = _after_conv(rng, nodes, inits=inits)
    else:
        x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
        m, feeds = make_model(nodes, {"x": x}, ["y"], inits), {"x": x}
    check(m, feeds, tmp_path, atol=1e-5)


RESIZES = [("nearest", "asymmetric", "floor", [1, 1, 2, 2]), ("nearest", "half_pixel", "round_prefer_ceil", [1, 1, 2, 3]),
           ("nearest", "asymmetric", "floor", [1, 1, 0.5, 0.5]), ("linear", "half_pixel", None, [1, 1, 2, 2]),
           ("linear", "align_corners", None, [1, 1, 2, 1.5]), ("linear", "asymmetric", None, [1, 1, 3, 2]),
           ("linear", "pytorch_half_pixel", None, [1, 1, 2, 2]), ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 2, 2])]


@pytest.mark.parametrize("mode,coord,nearest,scales", RESIZES)
def test_resize(tmp_path, rng, mode, coord, nearest, scales):
    x = rng.standard_normal((1, 3, 4, 6)).astype(np.float32)
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if nearest:
        attrs["nearest_mode"] = nearest
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], **attrs)
    m = make_model([node], {"x": x}, ["y"], {"sc": np.asarray(scales, np.float32)})
    check(m, {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((1, 4, 1, 1), (1, 4, 5, 5)), ((4,), (3, 4))])
def test_expand(tmp_path, rng, shape, target):
    x = rng.standard_normal(shape).astype(np.float32)
    check(one_node("Expand", {"x": x}, {"s": np.asarray(target, np.int64)}), {"x": x}, tmp_path)


def test_tile_and_depth_space(tmp_path, rng):
    x = rng.standard_normal((1, 8, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("DepthToSpace", ["x"], ["d"], blocksize=2),
             helper.make_node("SpaceToDepth", ["d"], ["s"], blocksize=2),
             helper.make_node("Tile", ["s", "r"], ["y"])]
    check(make_model(nodes, {"x": x}, ["y"], {"r": np.asarray([1, 2, 1, 2], np.int64)}), {"x": x}, tmp_path)


def test_shape_subgraph_folded(tmp_path, rng):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (dynamic-shape export style) folds into one RESHAPE."""
    from edgekit.backends.tflite import describe

    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Gather", ["sh", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"]), helper.make_node("Concat", ["bu", "m1"], ["ns"], axis=0),
             helper.make_node("Reshape", ["x", "ns"], ["y"])]
    inits = {"zero": np.asarray(0, np.int64), "ax0": np.asarray([0], np.int64), "m1": np.asarray([-1], np.int64)}
    path = check(make_model(nodes, {"x": x}, ["y"], inits), {"x": x}, tmp_path)
    assert describe(path)["ops"] == {"RESHAPE": 1}


def test_int_inputs_and_cast(tmp_path, rng):
    ids = rng.integers(0, 5, (2, 6)).astype(np.int64)
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["f", "k"], ["y"])]
    check(make_model(nodes, {"ids": ids}, ["y"], {"k": np.asarray(0.5, np.float32)}), {"ids": ids}, tmp_path)
