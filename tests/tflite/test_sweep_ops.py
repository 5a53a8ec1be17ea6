"""TFLite lowerings of constructs found by the ONNX robustness sweep (graphs as other exporters write them)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, make_model
from onnx import TensorProto, helper


def test_float64_arithmetic_runs_in_float32(tmp_path, rng):
    """Cast to double, arithmetic in double, Cast back (numpy-minded exporters): TFLite has no float64 kernels;
    it was 'failed to lower: TypeError: TFLite has no tensor type for float64'."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["d", "k"], ["m"]),
             helper.make_node("Cast", ["m"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["f"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    check(make_model(nodes, {"x": x}, ["y"], {"k": np.array(1.5, np.float64)}), {"x": x}, tmp_path, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("axis,largest", [(-1, 1), (1, 1), (2, 0)])
def test_topk_values_and_int64_indices(tmp_path, rng, axis, largest):
    """TopK (ONNX's top-5 classifier head) had no lowering; TOPK_V2 works on the last axis, int32 indices."""
    x = rng.standard_normal((1, 3, 6, 7)).astype(np.float32)
    w = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),  # channels-last inside: axis 1 is stored last
             helper.make_node("TopK", ["c", "k"], ["v", "i"], axis=axis, largest=largest)]
    m = make_model(nodes, {"x": x}, ["v", "i"], {"w": w, "k": np.array([3], np.int64)})
    m.graph.output[1].type.tensor_type.elem_type = TensorProto.INT64
    check(m, {"x": x}, tmp_path)


@pytest.mark.parametrize("node,named", [(helper.make_node("Det", ["x"], ["y"], name="det0"), "op Det (node 'det0')"),
                                        (helper.make_node("MaxPool", ["x"], ["y"], name="mp0", kernel_shape=[2, 2],
                                                          dilations=[2, 2]), "MaxPool node 'mp0'")])
def test_a_refusal_names_the_op_and_the_targets_that_take_it(tmp_path, rng, node, named):
    from edgekit.errors import UnsupportedModelError

    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    with pytest.raises(UnsupportedModelError) as info:
        check(make_model([node], {"x": x}, ["y"]), {"x": x}, tmp_path)
    line = str(info.value) + " " + (info.value.hint or "")
    assert named in line and "-t onnxruntime or -t openvino" in line and "\n" not in line


def test_fused_gelu_in_an_opset_11_graph_whose_shapes_need_a_run():
    """torch's opset-11 export of gelu then flatten(2) on a dynamic batch: shapes after the fused Gelu (an opset-20
    op) need a run of the graph, which ONNX Runtime refused ('could not derive static shapes ... invalid model')."""
    from edgekit.backends.tflite.prepare import _to_graph, infer_shapes

    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["g"]), helper.make_node("Relu", ["g"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    g = infer_shapes(_to_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), 11))
    assert g.shapes["g"] == g.shapes["y"] == (1, 3, 4)


@pytest.mark.parametrize("mode", ["CRD", "DCR"])
def test_depth_to_space_both_modes(tmp_path, rng, mode):
    """CRD (torch's PixelShuffle export) was refused ('TFLite implements DCR'); its channels are gathered into
    DCR order first."""
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((12, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode=mode)]
    check(make_model(nodes, {"x": x}, ["y"], {"w": w}), {"x": x}, tmp_path)


def test_depth_to_space_crd_int8(tmp_path, rng):
    from conftest import check_int8

    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((12, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD")]
    check_int8(make_model(nodes, {"x": x}, ["y"], {"w": w}), {"x": x}, tmp_path)


@pytest.mark.parametrize("axis,exclusive,reverse", [(2, 0, 0), (1, 1, 1), (-1, 0, 1)])
def test_cumsum(tmp_path, rng, axis, exclusive, reverse):
    """CumSum (position ids, running sums in exported models) had no lowering."""
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),  # channels-last inside: the axis moves
             helper.make_node("CumSum", ["c", "ax"], ["y"], exclusive=exclusive, reverse=reverse)]
    check(make_model(nodes, {"x": x}, ["y"], {"w": w, "ax": np.array(axis, np.int64)}), {"x": x}, tmp_path)


@pytest.mark.parametrize("size,alpha,beta,bias", [(5, 1e-4, 0.75, 1.0), (3, 0.05, 0.5, 2.0)])
def test_lrn(tmp_path, rng, size, alpha, beta, bias):
    """LRN (AlexNet/GoogLeNet zoo models) had no lowering."""
    x = (rng.standard_normal((1, 3, 5, 6)) * 3).astype(np.float32)
    w = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("LRN", ["c"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)]
    check(make_model(nodes, {"x": x}, ["y"], {"w": w}), {"x": x}, tmp_path, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset,pads", [(13, [0, 0, 2, 1, 0, 0, 1, 3]), (10, [0, 1, 0, 1, 0, 0, 2, 0])])
def test_pad_edge(tmp_path, rng, opset, pads):
    """Pad mode 'edge' (torch's ReplicationPad2d) was refused ('constant and reflect are supported')."""
    from conftest import check_int8

    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    inits = {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32)}
    if opset >= 11:
        inits["p"] = np.asarray(pads, np.int64)
        pad = helper.make_node("Pad", ["c", "p"], ["y"], mode="edge")
    else:
        pad = helper.make_node("Pad", ["c"], ["y"], mode="edge", pads=pads)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"]), pad], {"x": x}, ["y"], inits, opset=opset)
    check(model, {"x": x}, tmp_path)
    if opset >= 13:
        (tmp_path / "q").mkdir()
        check_int8(model, {"x": x}, tmp_path / "q")
