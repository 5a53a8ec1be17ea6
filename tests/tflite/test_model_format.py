"""The .tflite file itself: schema, buffers, signature, determinism, layout boundaries, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import check, make_model, one_node, tflite_convert, tflite_run
from onnx import helper

from edgekit.backends.tflite import describe
from edgekit.backends.tflite.writer import read_model
from edgekit.errors import UnsupportedModelError


def _cnn(rng, out_4d: bool = False):
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
             "w3": rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "fc": rng.standard_normal((8, 5)).astype(np.float32),
             "mean": rng.standard_normal((1, 3, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Sub", ["x", "mean"], ["xn"]),
             helper.make_node("Conv", ["xn", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2"], ["b"], pads=[1, 1, 1, 1], group=8), helper.make_node("Clip", ["b", "lo", "hi"], ["br"]),
             helper.make_node("Conv", ["br", "w3"], ["c"]), helper.make_node("Add", ["c", "ar"], ["s"])]
    inits.update(lo=np.asarray(0, np.float32), hi=np.asarray(6, np.float32))
    if out_4d:
        nodes.append(helper.make_node("Identity", ["s"], ["y"]))
    else:
        nodes += [helper.make_node("GlobalAveragePool", ["s"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
                  helper.make_node("MatMul", ["f", "fc"], ["y"])]
    return make_model(nodes, {"x": x}, ["y"], inits), {"x": x}


def test_schema_basics(tmp_path, rng):
    m, feeds = _cnn(rng)
    path = check(m, feeds, tmp_path, rtol=1e-4, atol=1e-4)
    data = path.read_bytes()
    assert data[4:8] == b"TFL3"
    model = read_model(data)
    assert model.version == 3
    assert model.buffers[0].data is None
    sig = model.signatureDefs[0]
    assert sig.signatureKey.decode() == "serving_default"
    assert [t.name.decode() for t in sig.inputs] == ["x"] and [t.name.decode() for t in sig.outputs] == ["y"]
    # every constant's bytes start on a 16-byte boundary of the file
    import flatbuffers  # noqa: F401
    from ai_edge_litert import schema_py_generated as fb

    root = fb.Model.GetRootAs(data, 0)
    for i in range(1, root.BuffersLength()):
        b = root.Buffers(i)
        if b.DataLength():
            assert b.DataAsNumpy().ctypes.data % 16 == np.frombuffer(data, np.uint8).ctypes.data % 16


def test_fused_activations(tmp_path, rng):
    m, feeds = _cnn(rng)
    d = describe(check(m, feeds, tmp_path, rtol=1e-4, atol=1e-4))
    assert "RELU" not in d["ops"] and "RELU6" not in d["ops"]
    assert d["metadata"]["fused_activations"] == 2


def test_one_transpose_per_boundary(tmp_path, rng):
    m, feeds = _cnn(rng)
    d = describe(check(m, feeds, tmp_path, rtol=1e-4, atol=1e-4))
    assert d["transposes"] == 1  # the input; GAP -> Flatten leaves NHWC without one
    m, feeds = _cnn(rng, out_4d=True)
    d = describe(check(m, feeds, tmp_path, rtol=1e-4, atol=1e-4))
    assert d["transposes"] == 2  # input and output


def test_nhwc_io_has_no_transposes(tmp_path, rng):
    from edgekit.backends import tflite
    from edgekit.backends.base import LoadOptions

    m, feeds = _cnn(rng, out_4d=True)
    path = check(m, feeds, tmp_path, rtol=1e-4, atol=1e-4, io_layout="nhwc")
    d = describe(path)
    assert d["transposes"] == 0
    sess = tflite.load(path, LoadOptions(threads=1))
    assert sess.inputs[0].layout == "NHWC" and sess.inputs[0].shape == [1, 3, 16, 16]
    raw = sess.interpreter.get_input_details()[0]["shape"].tolist()
    assert raw == [1, 16, 16, 3]


def test_deterministic_bytes(tmp_path, rng):
    m, _ = _cnn(rng)
    outs = []
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        outs.append(tflite_convert(m, tmp_path / sub).read_bytes())
    assert outs[0] == outs[1]


def test_weights_deduplicated(tmp_path, rng):
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1, 1, 1])]
    path = check(make_model(nodes, {"x": x}, ["y"], {"w1": w, "w2": w.copy()}), {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)
    model = read_model(path.read_bytes())
    sizes = [len(b.data) for b in model.buffers if b.data is not None]
    assert sizes.count(w.nbytes) == 1


def test_unsupported_op_names_op_node_and_where_the_list_is(tmp_path, rng):
    """One line: the op, the node, the other targets, and where the supported ops are listed (not the list)."""
    from edgekit.backends.tflite import supported_ops

    x = rng.standard_normal((2, 3)).astype(np.float32)
    m = one_node("Det", {"x": rng.standard_normal((3, 3)).astype(np.float32)})
    with pytest.raises(UnsupportedModelError) as err:
        tflite_convert(m, tmp_path)
    msg = str(err.value)
    assert "Det" in msg and "det_0" in msg and err.value.exit_code == 4
    assert f"{len(supported_ops())} ONNX ops" in msg and "supported_ops()" in msg and len(msg) < 400
    assert not (tmp_path / "m.tflite").exists()
    del x


def test_unsupported_attribute_is_named(tmp_path, rng):
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "roi", "s"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    consts = {"roi": np.asarray([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], np.float32), "s": np.asarray([1, 1, 2, 2], np.float32)}
    with pytest.raises(UnsupportedModelError, match="tf_crop_and_resize"):
        tflite_convert(make_model([node], {"x": x}, ["y"], consts), tmp_path)


def test_dynamic_batch_fixed_and_other_dims_need_shapes(tmp_path, rng):
    from edgekit.errors import UsageError

    inp = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "seq", 8])
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [inp], [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UsageError, match="dynamic dimension 1 \\('seq'\\)") as err:
        tflite_convert(m, tmp_path)
    assert "--input-shape x=1xNx8" in str(err.value.hint)
    # what the pipeline passes: symbolic names for axes the user did not fix
    with pytest.raises(UsageError, match="'seq'"):
        tflite_convert(m, tmp_path, input_shapes={"x": ("batch", "seq", 8)})
    path = tflite_convert(m, tmp_path, input_shapes={"x": ("batch", 5, 8)})
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)  # batch 3 runs as three batch-1 calls
    np.testing.assert_allclose(tflite_run(path, {"x": x})[0], np.maximum(x, 0))


def test_xnnpack_off_and_threads(tmp_path, rng):
    m, feeds = _cnn(rng)
    path = tflite_convert(m, tmp_path)
    a = tflite_run(path, feeds)[0]
    b = tflite_run(path, feeds, xnnpack=False)[0]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
