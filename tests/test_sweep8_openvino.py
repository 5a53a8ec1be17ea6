"""OpenVINO target sweep: models outside the repo (onnx.helper graphs), each case a construct the OpenVINO
artifact once computed wrongly; the artifact is run by the real runtime and compared with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit.backends import openvino as ov_backend  # noqa: E402
from edgekit.backends.base import LoadOptions  # noqa: E402

FP32 = SimpleNamespace(runtime={"compress_to_fp16": False})


def _lower(model, tmp_path: Path, target=FP32) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    return ov_backend.lower(src, target, tmp_path / "m.openvino", {})[0]


def _rnn(kind: str, direction: str, hidden: int = 16, inp: int = 8):
    """An LSTM / GRU with a run-time sequence_lens input and initial state, symbolic time and batch dims."""
    rng = np.random.default_rng(0)
    gates, dirs = {"LSTM": 4, "GRU": 3}[kind], 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array((rng.standard_normal((dirs, gates * hidden, n)) * 0.3).astype(np.float32), w)
             for w, n in (("W", inp), ("R", hidden))]
    inits.append(numpy_helper.from_array((rng.standard_normal((dirs, 2 * gates * hidden)) * 0.1).astype(np.float32), "B"))
    state = [dirs, "b", hidden]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", "b", inp]),
              helper.make_tensor_value_info("lens", TensorProto.INT32, ["b"]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, state)]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["t", dirs, "b", hidden]),
               helper.make_tensor_value_info("Yh", TensorProto.FLOAT, state)]
    if kind == "LSTM":
        inputs.append(helper.make_tensor_value_info("c0", TensorProto.FLOAT, state))
        outputs.append(helper.make_tensor_value_info("Yc", TensorProto.FLOAT, state))
    node = helper.make_node(kind, ["x", "W", "R", "B"] + [i.name for i in inputs[1:]], [o.name for o in outputs],
                            hidden_size=hidden, direction=direction)
    model = helper.make_model(helper.make_graph([node], "rnn", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("kind,direction", [("LSTM", "forward"), ("GRU", "bidirectional"), ("LSTM", "bidirectional")])
def test_rnn_runtime_sequence_lens_at_dynamic_shapes(tmp_path: Path, kind: str, direction: str) -> None:
    """The CPU plugin ignored a run-time sequence_lens whenever a dimension was dynamic: every sequence ran to
    the full length (Y past a sequence's end not zero, Y_h / Y_c of the padded end; max error ~0.5-1.1). Now
    the IR runs such sequences as TensorIterators (bidirectional ones split per direction first)."""
    model = _rnn(kind, direction)
    xml = _lower(model, tmp_path)
    sess = ov_backend.load(xml, LoadOptions())
    ref = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(1)
    dirs = 2 if direction == "bidirectional" else 1
    for t, b in ((9, 3), (12, 4), (1, 2)):
        feeds = {"x": rng.standard_normal((t, b, 8)).astype(np.float32),
                 "lens": rng.integers(1, t + 1, b).astype(np.int32),
                 "h0": rng.standard_normal((dirs, b, 16)).astype(np.float32)}
        feeds["lens"][0] = t
        if kind == "LSTM":
            feeds["c0"] = rng.standard_normal((dirs, b, 16)).astype(np.float32)
        for want, got in zip(ref.run(None, feeds), sess.run(feeds)):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_two_conversions_write_the_same_ir(tmp_path: Path) -> None:
    """Names OpenVINO generates with a global counter were renumbered only when they were exactly
    `<Type>_<n>`: a folded constant `Split_<n>.0`, a converted sequence `LSTMSequence_<n>/tensor_iterator` and
    every node inside a TensorIterator body kept the counter, so converting twice gave different .xml bytes."""
    model = _rnn("LSTM", "bidirectional")
    x = torch_free_conv_split()
    for m, name in ((model, "rnn"), (x, "split")):
        a, b = (_lower(m, tmp_path / f"{name}{k}") for k in (0, 1))
        assert a.read_bytes() == b.read_bytes()
        assert a.with_suffix(".bin").read_bytes() == b.with_suffix(".bin").read_bytes()


def torch_free_conv_split():
    """Conv whose weight is one half of a constant Split (OpenVINO folds it into a `Split_<n>.0` constant)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Split", ["w"], ["w0", "w1"], axis=0, num_outputs=2),
             helper.make_node("Conv", ["x", "w0"], ["y0"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1"], ["y1"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["y0", "y1"], ["y"])]
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def test_per_layer_names_of_conv_transpose_are_the_model_layers(tmp_path: Path) -> None:
    """A ConvTranspose (grouped or not) with a bias became `ConvolutionBackpropData_<n>` in the IR, so the
    per-layer profile had a row for the heaviest layer that no model layer is called; it is now
    `<ONNX node>/WithoutBiases`, as OpenVINO names a Conv's."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (4, 8, 3, 3)), ("b1", (8,)), ("w2", (8, 4, 2, 2)), ("b2", (8,)))]
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["h"], name="up1", strides=[2, 2]),
             helper.make_node("ConvTranspose", ["h", "w2", "b2"], ["y"], name="up2", strides=[2, 2], group=2)]
    graph = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ov_backend.load(_lower(model, tmp_path), LoadOptions(extra={"profile": True}))
    sess.run({"x": rng.standard_normal((2, 4, 5, 5)).astype(np.float32)})
    rows = [p.node_name for p in sess.request.profiling_info
            if "Backprop" in p.node_type or "Deconvolution" in p.node_type]
    layers = {n.name for n in nodes} | {o for n in nodes for o in n.output}  # a graph output names its node
    assert len(rows) == 2 and all(r.split("/")[0] in layers for r in rows), rows
