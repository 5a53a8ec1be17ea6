"""Bad input: one clear line, a non-zero exit code, nothing partial written, nothing overwritten."""

from __future__ import annotations

import os

import pytest
from conftest import run_cli


def _only_one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "error" in ln]
    assert len(lines) == 1, stderr
    return lines[0]


def test_missing_file(invoke, tmp_path):
    res = invoke("convert", str(tmp_path / "nope.onnx"), "-t", "ort", "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "model not found" in _only_one_error_line(res.stderr)
    assert not (tmp_path / "o").exists()


def test_corrupt_file(invoke, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(os.urandom(4096))
    res = invoke("convert", str(bad), "-t", "ort", "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "not a valid ONNX" in _only_one_error_line(res.stderr)
    assert not (tmp_path / "o").exists()


def test_truncated_onnx(model_files, invoke, tmp_path):
    data = model_files["onnx"].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    res = invoke("convert", str(cut), "-t", "ort", "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "corrupt or truncated" in _only_one_error_line(res.stderr)


def test_empty_file(invoke, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    res = invoke("convert", str(empty), "-t", "ort", "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "empty" in res.stderr


def test_unknown_target(model_files, invoke, tmp_path):
    res = invoke("convert", str(model_files["onnx"]), "-t", "coreml", "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    line = _only_one_error_line(res.stderr)
    assert "unknown target 'coreml'" in line and "onnxruntime" in line


def test_unwritable_output(model_files, invoke, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-o", str(blocker / "sub"))
    assert res.returncode == 2
    assert "cannot write to output folder" in _only_one_error_line(res.stderr)
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-o", "/proc/edgekit-out")
    assert res.returncode == 2


@pytest.mark.parametrize("shape,needle", [("image=1x3x16", "rank"), ("image=2x4x16x16", "axis 1 is fixed"),
                                          ("other=1x3x16x16", "unknown input"), ("1xAx3", "bad --input-shape")])
def test_wrong_input_shape(shape, needle, model_files, invoke, tmp_path):
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-o", str(tmp_path / "o"), "--input-shape", shape)
    assert res.returncode == 2
    assert needle in _only_one_error_line(res.stderr)


def test_wrong_input_shape_for_torch_model(invoke, tmp_path):
    res = invoke("convert", "tinymodels:tiny_cnn", "-t", "ort", "-o", str(tmp_path / "o"), "--input-shape", "1x5x16x16")
    assert res.returncode == 2
    assert "does not run on inputs" in _only_one_error_line(res.stderr)


def test_bad_calibration_file(model_files, invoke, tmp_path):
    import numpy as np

    np.save(tmp_path / "cal.npy", np.zeros((4, 3, 8, 8), np.float32))
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-o", str(tmp_path / "o"),
                 "--calibration", str(tmp_path / "cal.npy"))
    assert res.returncode == 2 and "expects" in res.stderr


def test_unsupported_op_names_op_and_node(invoke, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("FancyOp", ["x"], ["y"], name="fancy_1", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, tmp_path / "fancy.onnx")
    res = invoke("convert", str(tmp_path / "fancy.onnx"), "-t", "ort", "-o", str(tmp_path / "o"))
    assert res.returncode == 4
    assert "FancyOp" in res.stderr and "fancy_1" in res.stderr


def test_existing_artifact_not_overwritten_on_failure(model_files, tmp_path):
    out = tmp_path / "o"
    ok = run_cli("convert", str(model_files["onnx"]), "-t", "ort", "-o", str(out))
    assert ok.returncode == 0, ok.stderr
    art = out / "tiny.onnxruntime.onnx"
    before = art.read_bytes()
    bad = run_cli("convert", str(model_files["onnx"]), "-t", "ort", "-t", "nosuch", "-o", str(out))
    assert bad.returncode == 2
    assert art.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["tiny.onnxruntime.onnx"]


def test_json_error_object(model_files, tmp_path):
    import json

    res = run_cli("convert", str(tmp_path / "missing.onnx"), "-t", "ort", "--json")
    assert res.returncode == 2
    err = json.loads(res.stdout)["error"]
    assert err["exit_code"] == 2 and "model not found" in err["message"]
