"""Roofline estimates: MACs/bytes from the graph, device peak rates, always labelled as estimates."""

from __future__ import annotations

from pathlib import Path

import pytest
from profile_models import make_cnn_onnx, make_qdq_onnx, make_tflite

from edgekit.errors import DeviceError, UsageError
from edgekit.profile import profile_artifact
from edgekit.profile.roofline import analyze_onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("roofline")
    fp32 = make_cnn_onnx(d / "cnn.onnx", channels=8, size=32)
    return {"fp32": fp32, "int8": make_qdq_onnx(fp32, d / "cnn.int8.onnx"), "tflite": make_tflite(d / "fc.tflite")}


def test_macs_from_the_graph(models):
    rows = {r["name"]: r for r in analyze_onnx(models["fp32"])}
    # conv1: 8 out ch x 32x32 x (3 in ch x 3x3); conv2 (stride 2): 16 x 16x16 x (8 x 3x3); fc: 10 x 16
    assert rows["conv1"]["macs"] == 8 * 32 * 32 * 27
    assert rows["conv2"]["macs"] == 16 * 16 * 16 * 72
    assert rows["fc"]["macs"] == 160
    assert "relu1" not in rows  # fused into conv1, as runtimes do
    assert rows["conv1"]["bytes"] == 4 * (3 * 32 * 32 + 8 * 27 + 8 + 8 * 32 * 32)


def test_estimate_is_labelled_and_scales_with_the_device(models):
    pi4 = profile_artifact(models["fp32"], "raspberry-pi-4")
    pi5 = profile_artifact(models["fp32"], "raspberry-pi-5")
    for r in (pi4, pi5):
        assert r["estimate"] is True and r["device_kind"] == "estimate" and "estimate" in r["device"]
        assert r["load_ms"] is None and r["p99_ms"] is None and r["runs"] == 0
        assert r["p50_ms"] == r["estimate_ms"] > 0
    assert pi4["estimate_ms"] > pi5["estimate_ms"]  # slower clock, fewer GOPS, less bandwidth
    one = profile_artifact(models["fp32"], "raspberry-pi-5", threads=1)
    assert one["estimate_ms"] > pi5["estimate_ms"]


def test_int8_graph_uses_int8_rates_and_smaller_bytes(models):
    fp = profile_artifact(models["fp32"], "raspberry-pi-5")
    q = profile_artifact(models["int8"], "raspberry-pi-5")
    assert q["int8_macs_share"] == 1.0 and fp["int8_macs_share"] == 0.0
    assert q["macs"] == fp["macs"] and q["bytes"] < fp["bytes"] / 2
    assert q["estimate_ms"] < fp["estimate_ms"]


def test_npu_unit_and_errors(models):
    npu = profile_artifact(models["int8"], "intel-core-ultra-npu", options={"unit": "NPU"})
    assert npu["unit"] == "NPU" and npu["estimate"] is True
    with pytest.raises(DeviceError, match="no NPU rates.*CPU"):
        profile_artifact(models["fp32"], "raspberry-pi-5", options={"unit": "NPU"})
    local = profile_artifact(models["fp32"], "local", options={"estimate": True})
    assert local["estimate"] is True
    tfl = profile_artifact(models["tflite"], "pixel-8", options={"estimate": True})
    assert tfl["macs"] == 64 * 16 and tfl["estimate"] is True


def test_openvino_ir_estimate_matches_onnx(models, tmp_path):
    from profile_models import make_ov_ir

    for key in ("fp32", "int8"):
        xml = make_ov_ir(models[key], tmp_path / f"{key}.xml")
        ov_est = profile_artifact(xml, "raspberry-pi-5")
        onnx_est = profile_artifact(models[key], "raspberry-pi-5")
        assert ov_est["macs"] == onnx_est["macs"] and ov_est["estimate"] is True
        assert ov_est["int8_macs_share"] == onnx_est["int8_macs_share"]
        # bias adds, activations and weight-decompression subgraphs are folded as the plugin does
        assert ov_est["bytes"] == pytest.approx(onnx_est["bytes"], rel=0.1)


def test_estimate_needs_a_graph(models, tmp_path):
    ort = tmp_path / "m.ort"
    ort.write_bytes(b"x")
    with pytest.raises(UsageError, match="roofline estimates read"):
        profile_artifact(ort, "raspberry-pi-5")
