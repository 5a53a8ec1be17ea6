"""--precision fp16: float16 weights (half the size), computed in float32 by the runtime, verified against the
fp32 source; TFLite stores FLOAT16 constants with a DEQUANTIZE, OpenVINO compresses its IR's weights."""

from __future__ import annotations

import json

import numpy as np


def _tensor_types(path) -> dict[str, int]:
    from ai_edge_litert import schema_py_generated as fb  # (`import tflite` finds tests/tflite in a full run)

    model = fb.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    names = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    out: dict[str, int] = {}
    for t in model.subgraphs[0].tensors:
        out[names[t.type]] = out.get(names[t.type], 0) + 1
    return out


def test_fp16_halves_tflite_and_openvino_and_verifies(cnn, invoke, tmp_path):
    runs = {}
    for precision in ("fp32", "fp16"):
        res = invoke("convert", str(cnn), "-t", "tflite", "-t", "openvino", "--precision", precision,
                     "-o", str(tmp_path / precision), "--json")
        assert res.returncode == 0, res.stderr
        runs[precision] = {a["target"]: a for a in json.loads(res.stdout)["artifacts"]}
    for target in ("tflite", "openvino"):
        half, full = runs["fp16"][target], runs["fp32"][target]
        assert half["precision"] == "fp16" and half["verification"]["passed"]
        assert half["verification"]["cosine"] > 0.9999
        # 5,850 float parameters: 2 bytes each saved, less the graph's few conversion nodes
        assert half["size_bytes"] < full["size_bytes"] - 0.6 * 2 * 5850
    tfl = tmp_path / "fp16" / "cnn.fp16.tflite"
    types = _tensor_types(tfl)
    assert types.get("FLOAT16", 0) >= 4  # the conv and linear weights
    xml = (tmp_path / "fp16" / "cnn.openvino.fp16.xml").read_text()
    assert 'element_type="f16"' in xml


def test_fp16_tflite_runs_and_profiles_per_layer_without_its_weight_dequantizes(cnn, invoke, tmp_path):
    res = invoke("convert", str(cnn), "-t", "arm", "--precision", "fp16", "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    art = tmp_path / "cnn.arm.fp16.tflite"
    from edgekit.profile.runner import op_plan

    plan = op_plan(str(art))
    kinds = [e["op_type"] for e in plan]
    assert "DEQUANTIZE" not in kinds and any("CONV_2D" in k for k in kinds)
    res = invoke("profile", str(art), "--per-layer", "--runs", "3", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["layers"]["all"]
    assert rows and all(r["op_type"] != "DEQUANTIZE" for r in rows)


def test_fp16_is_refused_where_the_runtime_has_no_use_for_it(cnn, invoke, tmp_path):
    res = invoke("convert", str(cnn), "-t", "onnxruntime", "--precision", "fp16", "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "does not offer fp16" in res.stderr
    assert not (tmp_path / "o").exists()


def test_constants_float16_cannot_hold_stay_float32():
    from edgekit.backends.tflite.context import _halvable

    assert _halvable(np.linspace(-3, 3, 256, dtype=np.float32))
    assert not _halvable(np.full(256, -1e9, np.float32))  # an attention-mask fill: -inf in float16
    assert not _halvable(np.ones(8, np.float32))  # too small to matter
