"""`edgekit profile` on this host: each runtime's runner on real artifacts, per-layer, units, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from profile_models import make_cnn_onnx, make_ov_ir, make_qdq_onnx, make_tflite

from edgekit.errors import DataError, DeviceError, ModelLoadError, UsageError
from edgekit.profile import profile_artifact
from edgekit.profile.stats import summarize

KEYS = ("load_ms", "first_ms", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "peak_memory_mb",
        "runs", "device", "runtime")


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("profile_models")
    onnx_path = make_cnn_onnx(d / "cnn.onnx")
    return {"onnx": onnx_path, "xml": make_ov_ir(onnx_path, d / "cnn.xml"),
            "int8": make_qdq_onnx(onnx_path, d / "cnn.int8.onnx"), "tflite": make_tflite(d / "fc.tflite")}


def _check_schema(res: dict, runs: int) -> None:
    for k in KEYS:
        assert k in res, k
    assert res["runs"] == runs and res["estimate"] is False and res["complete"] is True
    assert 0 < res["min_ms"] <= res["p50_ms"] <= res["p90_ms"] <= res["p99_ms"] <= res["max_ms"]
    assert res["load_ms"] > 0 and res["first_ms"] > 0 and res["peak_memory_mb"] > res["rss_before_load_mb"] > 0
    assert res["cpu_p50_ms"] > 0  # CPU time of the runtime's threads per run


def test_stats_percentiles_match_numpy():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    s = summarize(xs)
    for q, key in ((50, "p50_ms"), (90, "p90_ms"), (99, "p99_ms")):
        assert s[key] == pytest.approx(np.percentile(xs, q))
    assert s["mean_ms"] == pytest.approx(np.mean(xs)) and s["std_ms"] == pytest.approx(np.std(xs))
    assert summarize([])["p50_ms"] is None


def test_onnxruntime_runner_threads_and_per_layer(art):
    res = profile_artifact(art["onnx"], runs=12, warmup=2, threads=1, per_layer=True)
    _check_schema(res, 12)
    assert res["backend"] == "onnxruntime" and res["runtime"]["providers"] == ["CPUExecutionProvider"]
    assert res["runtime"]["options"]["intra_op_num_threads"] == 1 and res["threads"] == 1
    layers = res["layers"]
    assert "Conv" in layers["by_op_type"] and layers["by_unit"].keys() == {"CPUExecutionProvider"}
    assert layers["top"][0]["ms"] >= layers["top"][-1]["ms"] and layers["total_ms"] > 0
    assert res["inputs"][0]["shape"][1:] == [3, 32, 32] and res["samples"]["synthetic"] is True


def test_int8_qdq_runs_fused_int8_kernels(art):
    res = profile_artifact(art["int8"], runs=5, warmup=1, per_layer=True)
    assert "QLinearConv" in res["layers"]["by_op_type"]  # ORT fused the QDQ convs into int8 kernels


def test_openvino_runner_latency_hint_and_perf_counters(art):
    res = profile_artifact(art["xml"], runs=8, warmup=1, threads=1, per_layer=True)
    _check_schema(res, 8)
    opts = res["runtime"]["options"]
    assert opts["PERFORMANCE_HINT"] == "LATENCY" and opts["INFERENCE_NUM_THREADS"] == "1"
    # timed at the precision verification ran at (a bf16-capable CPU would otherwise pick bf16 kernels)
    assert opts["INFERENCE_PRECISION_HINT"] == "f32"
    convs = [r for r in res["layers"]["all"] if r["op_type"] == "Convolution"]
    assert len(convs) == 2 and all(r["unit"] for r in convs)  # exec type, e.g. brgconv_avx512_...


def test_litert_runner_xnnpack_on_off(art):
    on = profile_artifact(art["tflite"], runs=5, warmup=1, threads=2, per_layer=True)
    _check_schema(on, 5)
    assert on["backend"] == "litert" and on["runtime"]["options"]["xnnpack"] is True
    assert set(on["layers"]["by_op_type"]) == {"FULLY_CONNECTED", "RELU"}  # each op timed alone
    off = profile_artifact(art["tflite"], runs=5, warmup=1, options={"xnnpack": False})
    assert off["runtime"]["options"]["xnnpack"] is False


def test_litert_compiled_model_api_and_no_false_npu_claim(art):
    res = profile_artifact(art["tflite"], runs=5, warmup=1, threads=1, options={"litert_api": "compiled"})
    _check_schema(res, 5)
    assert res["runtime"]["api"] == "CompiledModel" and res["unit"] == "CPU"
    # no NPU / GPU here: LiteRT must not quietly run the model on the CPU and call it an NPU run
    for unit in ("NPU", "GPU"):
        with pytest.raises(DeviceError, match=f"for {unit}"):
            profile_artifact(art["tflite"], runs=2, options={"litert_api": "compiled", "unit": unit})


def test_calibration_samples_are_fed(art, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = profile_artifact(art["onnx"], runs=3, warmup=0, samples=str(tmp_path / "x.npy"))
    assert res["samples"]["synthetic"] is False and res["samples"]["count"] == 3
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 5, 7), np.float32))
    with pytest.raises(DataError):
        profile_artifact(art["onnx"], runs=1, samples=str(bad))


def test_unavailable_units_list_what_is_available(art):
    with pytest.raises(DeviceError, match=r"OpenVINO device NPU is not available.*available here: .*CPU"):
        profile_artifact(art["xml"], runs=1, options={"unit": "NPU"})
    with pytest.raises(DeviceError, match=r"no onnxruntime execution provider for NPU.*CPUExecutionProvider"):
        profile_artifact(art["onnx"], runs=1, options={"unit": "NPU"})
    with pytest.raises(DeviceError, match=r"QNNExecutionProvider is not available"):
        profile_artifact(art["onnx"], runs=1, options={"provider": "QNN"})
    with pytest.raises(DeviceError, match="delegate"):
        profile_artifact(art["tflite"], runs=1, options={"unit": "NPU"})
    with pytest.raises(DeviceError, match="cannot load the TFLite delegate"):
        profile_artifact(art["tflite"], runs=1, options={"delegate": "/nonexistent/libdelegate.so"})


def test_runner_adapts_feeds_to_the_artifacts_inputs(tmp_path):
    """Feeds come in the source convention (names, NCHW float); the runner maps renamed inputs by position,
    NCHW -> NHWC, and float -> int8 with the input's own scale and zero point."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ek_runner", Path(__file__).parent.parent / "edgekit/profile/runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 100.0
    np.savez(tmp_path / "f.npz", **{"0/x": x[:1], "1/x": x[1:], "__count__": np.array(2), "__order__": np.array(["x"])})
    native = [{"name": "serving_default_x:0", "shape": [1, 4, 5, 3], "dtype": "int8",
               "quantization": {"scale": [0.01], "zero_point": [-10]}}]
    feeds = runner.load_feeds(str(tmp_path / "f.npz"), native)
    assert len(feeds) == 2
    got = feeds[1]["serving_default_x:0"]
    assert got.shape == (1, 4, 5, 3) and got.dtype == np.int8
    want = np.clip(np.round(x[1:].transpose(0, 2, 3, 1) / 0.01) - 10, -128, 127)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(runner.RunnerError):
        runner.load_feeds(str(tmp_path / "f.npz"), [{"name": "y", "shape": [1, 7], "dtype": "float32"}])


def test_bad_input(art, tmp_path):
    with pytest.raises(ModelLoadError):
        profile_artifact(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        profile_artifact(junk, runs=1)
    with pytest.raises(UsageError):
        profile_artifact(art["onnx"], runs=0)
    with pytest.raises(UsageError):
        profile_artifact(art["onnx"], options={"nonsense": 1})


def test_cli_profile_json(art):
    from edgekit.cli import cli

    out = CliRunner().invoke(cli, ["profile", str(art["onnx"]), "--runs", "4", "--warmup", "1", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["runs"] == 4 and res["device"].startswith("local")
    bad = CliRunner().invoke(cli, ["profile", str(art["xml"]), "--unit", "NPU", "--json"])
    assert bad.exit_code == 6 and json.loads(bad.stdout)["error"]["type"] == "DeviceError"


def test_litert_per_layer_times_every_operator_alone(art, tmp_path):
    """The LiteRT Python API has no op profiler: every operator of the model is rebuilt as a one-op model,
    fed the values it saw in the whole model, and timed; one row per operator, in model order (with XNNPACK a
    zero PAD and the convolution it feeds are one row, as XNNPACK runs them)."""
    from edgekit.backends import tflite

    path = tflite.lower(art["onnx"], None, tmp_path / "cnn", {})[0]
    ops = tflite.describe(path)["ops"]
    for xnnpack in (True, False):
        res = profile_artifact(path, runs=4, warmup=1, threads=1, per_layer=True, options={"xnnpack": xnnpack})
        layers = res["layers"]
        assert layers["source"].startswith("LiteRT, each operator timed alone")
        expected = dict(ops)
        if xnnpack and expected.get("PAD"):  # this model's PADs each feed a CONV_2D
            expected["PAD+CONV_2D"] = expected.pop("PAD")
            expected["CONV_2D"] -= expected["PAD+CONV_2D"]
            expected = {k: v for k, v in expected.items() if v}
        assert {k: round(v["count"]) for k, v in layers["by_op_type"].items()} == expected  # every op, once
        orders = [r["order"] for r in layers["all"]]
        assert orders == sorted(orders) and len(orders) == sum(expected.values())
        if not xnnpack:
            assert orders == list(range(sum(ops.values())))
        assert all(r["ms"] > 0 for r in layers["all"]) and layers["total_ms"] > 0
        assert set(layers["by_unit"]) == {"XNNPACK" if xnnpack else "CPU"}


def test_convert_profile_times_the_ort_file_and_says_when_the_npu_is_missing(invoke, tmp_path):
    """`convert --profile`: an ort-mobile artifact's .ort (the file the app loads) is timed beside its .onnx;
    an intel-npu artifact is timed on the NPU when the host has one, else on the CPU with a note saying so
    (it was timed on the CPU without a word)."""
    import openvino as ov

    res = invoke("convert", "zoo:mnist_cnn", "-t", "intel-npu", "-t", "ort-mobile", "--profile", "local",
                 "--calibration-size", "48", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    arts = {a["target"]: a for a in res.json()["artifacts"]}
    ort_profile = arts["ort-mobile"]["profile"]
    assert ort_profile["artifact"].endswith(".onnx")
    (name, timed), = ort_profile["files"].items()
    assert name == "mnist_cnn.ort-mobile.ort" and timed["artifact"].endswith(".ort") and timed["p50_ms"] > 0
    npu = arts["intel-npu"]["profile"]
    if "NPU" in ov.Core().available_devices:
        assert npu["unit"] == "NPU" and "note" not in npu
    else:
        assert npu["unit"] == "CPU" and "no NPU" in npu["note"] and "timed on its CPU" in res.stderr


def test_several_artifacts_one_failing_keeps_the_earlier_results_in_json(art, invoke, tmp_path):
    """`profile a b --json` where b fails: one JSON object with a's result and b's error (with b's path), and
    b's exit code; it printed only the error, losing a's measurement."""
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    res = invoke("profile", str(art["onnx"]), str(broken), "--runs", "3", "--json")
    assert res.returncode == 2, res.stderr
    out = res.json()
    assert [r["artifact"] for r in out["results"]] == [str(art["onnx"])]
    assert out["error"]["artifact"] == str(broken) and out["error"]["exit_code"] == 2
    single = invoke("profile", str(broken), "--json")  # one artifact: the plain error object, as before
    assert single.returncode == 2 and set(single.json()) == {"error"}


def test_litert_per_layer_times_a_zero_pad_with_the_convolution_it_feeds(tmp_path):
    """A stride-2 convolution with PyTorch's symmetric padding lowers to PAD + CONV_2D (TFLite SAME pads the
    other side). XNNPACK merges them, so the per-layer table times them together (one 'PAD+CONV_2D' row);
    alone, the PAD showed time the whole model never spends. Without XNNPACK the PAD is its own kernel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.backends import tflite
    from edgekit.profile import profile_artifact

    w = np.random.default_rng(0).normal(size=(16, 8, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "c.onnx"))
    path = tflite.lower(tmp_path / "c.onnx", None, tmp_path / "c", {})[0]
    on = profile_artifact(path, runs=3, warmup=1, threads=1, per_layer=True)
    kinds = list(on["layers"]["by_op_type"])
    assert "PAD+CONV_2D" in kinds and "PAD" not in kinds, kinds
    off = profile_artifact(path, runs=3, warmup=1, threads=1, per_layer=True, options={"xnnpack": False})
    kinds = list(off["layers"]["by_op_type"])
    assert "PAD" in kinds and "CONV_2D" in kinds, kinds
