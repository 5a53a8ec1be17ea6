"""ONNX files as input, sweep 8: constructs other exporters write (symbolic dims, duplicate node names, outputs
that are graph inputs, already-quantized graphs ...), each converted end to end; tiny models, a few seconds each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_onnx_sweep import RNG, X, _passed, _w
from test_onnx_sweep import _save as _write

from edgekit import api


def _save(*args, **kw):  # the ONNX sweep's writer, with this file's 16 calibration samples
    return _write(*args, **{"count": 16, **kw})


def test_int8_keeps_the_relu_after_a_matmul_that_computes_a_graph_output(tmp_path: Path) -> None:
    """MatMul -> Relu -> output: the quantizer folds the Relu into the MatMul output's QuantizeLinear, and the
    float-output rule (a graph output a MatMul computes stays float) then dropped that Q/DQ pair: the Relu was
    gone, ONNX Runtime int8 cosine 0.71 (verification failed, exit 3)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "seq", 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "seq", 5])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    model, npz = _save(tmp_path, "mmrelu", nodes, [x], [y], {"w": _w(6, 5)},
                       samples={"x": RNG.standard_normal((16, 7, 6)).astype(np.float32)})
    result = api.convert(str(model), ["onnxruntime", "openvino"], tmp_path / "out", precision="int8",
                         calibration=str(npz))
    _passed(result, ["onnxruntime", "openvino"])
    assert all(a["verification"]["cosine"] > 0.98 for a in result["artifacts"])  # 0.62 without the fix


def _cnn_nodes() -> list:
    return [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]


CNN_INITS = {"cw": _w(4, 3, 3, 3), "cb": _w(4), "fw": _w(10, 4), "fb": _w(10)}
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])


def test_repeated_node_names_are_made_unique(tmp_path: Path) -> None:
    """Every node named 'dup' passes the ONNX checker, but ONNX Runtime refuses the model ('two nodes with same node
    name'): an internal error (exit 1) on every target. The hub renames them; the user's file is untouched."""
    nodes = _cnn_nodes()
    for n in nodes:
        n.name = "dup"
    model, npz = _save(tmp_path, "dupnames", nodes, [X], [Y], CNN_INITS)
    before = model.read_bytes()
    result = api.convert(str(model), ["onnxruntime", "tflite"], tmp_path / "out", precision="int8", calibration=str(npz))
    _passed(result, ["onnxruntime", "tflite"])
    result = api.convert(str(model), ["onnxruntime", "openvino"], tmp_path / "out", calibration=str(npz))
    _passed(result, ["onnxruntime", "openvino"])
    assert model.read_bytes() == before


def _prequantized_qdq(tmp: Path) -> tuple[Path, Path]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    fp32, npz = _save(tmp, "float", _cnn_nodes(), [X], [Y], CNN_INITS)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"x": x[None]} for x in np.load(npz)["x"][:8])

        def get_next(self):
            return next(self.it, None)

    path = tmp / "qdq.onnx"
    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ)
    return path, npz


def test_an_already_quantized_model_is_refused_for_int8_and_tflite_fp32(tmp_path: Path) -> None:
    """A QDQ model from onnxruntime.quantization: int8 quantized it again (two sets of Q/DQ nodes; ONNX Runtime 'two
    nodes with same node name': internal error, exit 1); TFLite fp32 dropped its activation rounding (cosine 0.24,
    exit 3). Now one clear refusal each; ONNX Runtime and OpenVINO fp32 run it as it is."""
    from edgekit.errors import UnsupportedModelError, UsageError

    model, npz = _prequantized_qdq(tmp_path)
    with pytest.raises(UsageError, match=r"already quantized \(DequantizeLinear x\d+, QuantizeLinear x\d+\)") as info:
        api.convert(str(model), ["onnxruntime"], tmp_path / "out", precision="int8", calibration=str(npz))
    assert info.value.exit_code == 2
    with pytest.raises(UnsupportedModelError, match="already quantized") as info:
        api.convert(str(model), ["tflite"], tmp_path / "out", precision="fp32", calibration=str(npz))
    assert info.value.exit_code == 4
    result = api.convert(str(model), ["onnxruntime", "openvino"], tmp_path / "out", calibration=str(npz))
    _passed(result, ["onnxruntime", "openvino"])


def test_tflite_names_a_loop_it_cannot_lower(tmp_path: Path) -> None:
    """A Loop whose body reads an outer initializer: the TFLite shape pass rebuilt the graph without it and reported
    'could not derive static shapes ... Nodes in a graph must be topologically sorted' (exit 4 naming no op); now
    the op is named. ONNX Runtime and OpenVINO convert it."""
    from edgekit.errors import UnsupportedModelError

    c = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Mul", ["v_in", "k"], ["m"]),
         helper.make_node("Relu", ["m"], ["v_out"])], "body",
        [c("i", TensorProto.INT64, []), c("cond_in", TensorProto.BOOL, []), c("v_in", TensorProto.FLOAT, [1, 4, 8, 8])],
        [c("cond_out", TensorProto.BOOL, []), c("v_out", TensorProto.FLOAT, [1, 4, 8, 8])])
    nodes = _cnn_nodes()
    nodes[1] = helper.make_node("Loop", ["trip", "", "c"], ["r"], name="loop", body=body)
    model, npz = _save(tmp_path, "loop", nodes, [X], [Y],
                       dict(CNN_INITS, trip=np.array(3, np.int64), k=np.array(0.9, np.float32)))
    with pytest.raises(UnsupportedModelError, match=r"op Loop \(node 'loop'\) has no TFLite lowering"):
        api.convert(str(model), ["tflite"], tmp_path / "out", calibration=str(npz))
    _passed(api.convert(str(model), ["onnxruntime", "openvino"], tmp_path / "out", calibration=str(npz)),
            ["onnxruntime", "openvino"])


def test_openvino_names_a_sequence_typed_graph_output(tmp_path: Path) -> None:
    """SplitToSequence as the graph output: OpenVINO's refusal ('No conversion rule found for operations:
    util::SequenceMark') became 'unsupported model: Check 'false' failed at ...' naming nothing; now it names the
    output and its type. ONNX Runtime converts it (a sequence output compared tensor by tensor)."""
    from edgekit.errors import UnsupportedModelError

    ys = helper.make_value_info("y", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 2, 8, 8])))
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("SplitToSequence", ["c", "two"], ["y"], axis=1)]
    model, npz = _save(tmp_path, "seqout", nodes, [X], [ys],
                       {"cw": CNN_INITS["cw"], "cb": CNN_INITS["cb"], "two": np.array([2, 2], np.int64)})
    with pytest.raises(UnsupportedModelError, match="graph output 'y' is a sequence, not a tensor"):
        api.convert(str(model), ["openvino"], tmp_path / "out", calibration=str(npz))
    _passed(api.convert(str(model), ["onnxruntime"], tmp_path / "out", calibration=str(npz)), ["onnxruntime"])


def test_a_graph_input_passed_through_as_an_output(tmp_path: Path) -> None:
    """Output 'x' is input 'x' itself: OpenVINO's frontend made it a second input ('x_1': KeyError, exit 1) and the
    int8 quantizer asserted 'Graph is not a DAG' (exit 1); both are now refused in one line (exit 4). ONNX Runtime
    and TFLite fp32 convert it."""
    from edgekit.errors import UnsupportedModelError

    model, npz = _save(tmp_path, "passthrough", _cnn_nodes(), [X], [Y, X], CNN_INITS, check=False)
    with pytest.raises(UnsupportedModelError, match="OpenVINO: graph output 'x' is the graph input"):
        api.convert(str(model), ["openvino"], tmp_path / "out", calibration=str(npz))
    with pytest.raises(UnsupportedModelError, match="graph output 'x' is the graph input"):
        api.convert(str(model), ["onnxruntime"], tmp_path / "out", precision="int8", calibration=str(npz))
    _passed(api.convert(str(model), ["onnxruntime", "tflite"], tmp_path / "out", precision="fp32",
                        calibration=str(npz)), ["onnxruntime", "tflite"])


def test_an_input_without_any_shape_takes_the_input_shape_option(tmp_path: Path) -> None:
    """A graph input whose type has no shape at all (rank unknown: the ONNX checker calls the model invalid, ONNX
    Runtime runs it) converts with --input-shape (OpenVINO gets the rank in the hub), and without it the error
    names the input and asks for its shape."""
    from edgekit.errors import ModelLoadError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "noshape.onnx"
    onnx.save(model, str(src))
    result = api.convert(str(src), ["onnxruntime", "openvino", "arm"], tmp_path / "out", precision="fp32",
                         input_shapes={"x": (1, 4)})
    _passed(result, ["onnxruntime", "openvino", "arm"])
    with pytest.raises(ModelLoadError, match="input 'x' has no shape.*--input-shape x="):
        api.convert(str(src), ["onnxruntime"], tmp_path / "out2", precision="fp32")


def test_a_position_table_shorter_than_the_default_length_names_the_axis(tmp_path):
    """An ONNX text model with a dynamic 'seq' axis whose position table has 10 rows: synthetic inputs get the
    default length 16 and fail in the position Gather. The error names that axis and its default length and
    how to fix it (--input-shape), not only 'random ids cannot stand in'; ONNX Runtime's own red error log
    lines are not printed beside it."""
    import subprocess
    import sys

    torch = pytest.importorskip("torch")

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = torch.nn.Embedding(100, 8), torch.nn.Embedding(10, 8)
            self.head = torch.nn.Linear(8, 4)

        def forward(self, input_ids):
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            return self.head((self.tok(input_ids) + self.pos(positions)).mean(1))

    path = tmp_path / "pos.onnx"
    torch.onnx.export(M().eval(), (torch.zeros(1, 8, dtype=torch.long),), str(path), dynamo=False,
                      input_names=["input_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
    run = [sys.executable, "-m", "edgekit", "convert", str(path), "-t", "ort", "-o", str(tmp_path / "o")]
    res = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "the dynamic axis 'seq' of 'input_ids' was given the default length 16" in res.stderr
    assert "--input-shape input_ids=1xN:int64" in res.stderr and "[E:onnxruntime" not in res.stderr
    res = subprocess.run(run + ["--input-shape", "input_ids=1x8:int64"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
