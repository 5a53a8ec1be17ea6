"""benchmark_model output parsing (real outputs under tests/data/benchmark_model) and the adb path.
No phone is attached here: the adb end-to-end test drives a stand-in `adb` script that records its argv
and prints a real benchmark_model output, to check the commands edgekit sends and the parse."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest
from profile_models import make_tflite

from edgekit.errors import DeviceError, MissingDependencyError
from edgekit.profile import profile_artifact
from edgekit.profile.adb import benchmark_words
from edgekit.profile.benchmark_output import parse_benchmark_model, strip_prefix

DATA = Path(__file__).parent / "data" / "benchmark_model"


def test_parse_op_profiling_output():
    res = parse_benchmark_model((DATA / "tf2.8_mobilenet_v1_op_profiling.txt").read_text())
    assert res["load_ms"] == pytest.approx(17.187) and res["first_ms"] == pytest.approx(3512.391)
    assert res["mean_ms"] == pytest.approx(2950.34) and res["std_ms"] == pytest.approx(109.798)
    assert res["min_ms"] == pytest.approx(2727.568) and res["max_ms"] == pytest.approx(3189.954)
    assert res["runs"] == 50 and res["threads_reported"] == 4
    assert res["p90_ms"] is None and res["p99_ms"] is None and "no per-run times" in res["note"]
    assert res["peak_memory_mb"] == pytest.approx(46.0859)
    rows = res["layer_rows"]
    assert len(rows) == 31  # the regular runs' Run Order table only, not the init table nor "Top by"
    assert rows[0]["op_type"] == "CONV_2D" and rows[0]["ms"] == pytest.approx(60.957)
    assert rows[-1]["name"] == "[MobilenetV1/Predictions/Reshape_1]:30"
    conv = sum(r["ms"] for r in rows if r["op_type"] == "CONV_2D")
    assert conv == pytest.approx(2651.853, abs=0.01)  # = the tool's own "Summary by node type"


def test_parse_info_prefixed_with_median():
    res = parse_benchmark_model((DATA / "tf2.14_info_prefix_no_xnnpack.txt").read_text())
    assert res["p50_ms"] == pytest.approx(1239.807) and res["p95_ms"] == pytest.approx(1247.415)
    assert res["mean_ms"] == pytest.approx(1240.27) and res["runs"] == 50
    assert res["peak_memory_mb"] == pytest.approx(109.832) and "layer_rows" not in res


def test_parse_android_outputs():
    gpu = parse_benchmark_model((DATA / "android_gpu_delegate.txt").read_text())
    assert gpu["load_ms"] == pytest.approx(870.557) and gpu["mean_ms"] == pytest.approx(119.375)
    assert gpu["runs"] == 50 and gpu["min_ms"] == pytest.approx(113.737)  # not the warm-up line's 117.370
    cpu = parse_benchmark_model((DATA / "android_cpu_peak_memory.txt").read_text())
    assert cpu["peak_memory_mb"] == pytest.approx(138.809) and cpu["first_ms"] == pytest.approx(360.262)
    assert strip_prefix("05-30 13:04:39.021 25935 25935 I tflite  : count=50 avg=3") == "count=50 avg=3"
    with pytest.raises(ValueError):
        parse_benchmark_model("Segmentation fault")


def test_benchmark_words():
    w = benchmark_words("/data/local/tmp/benchmark_model", "/data/local/tmp/edgekit.x/model.tflite", runs=20,
                        warmup=3, threads=4, per_layer=True, options={"gpu": True, "xnnpack": False})
    assert w[0] == "/data/local/tmp/benchmark_model"
    for flag in ("--num_runs=20", "--warmup_runs=3", "--num_threads=4", "--use_gpu=true", "--use_xnnpack=false",
                 "--enable_op_profiling=true", "--min_secs=0"):
        assert flag in w


def test_adb_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependencyError, match="adb"):
        profile_artifact(make_tflite(tmp_path / "m.tflite"), "adb:SERIAL1", runs=3)


def _fake_adb(bin_dir: Path, log: Path, output: Path, serial: str) -> None:
    script = bin_dir / "adb"
    script.write_text(f"""#!{sys.executable}
import sys, json
argv = sys.argv[1:]
open({str(log)!r}, "a").write(json.dumps(argv) + "\\n")
if argv[:2] != ["-s", {serial!r}]:
    print("adb: device '" + argv[1] + "' not found", file=sys.stderr); sys.exit(1)
if argv[2] == "shell" and argv[3].startswith("mktemp"):
    print("/data/local/tmp/edgekit.AbCd1234")
elif argv[2] == "shell" and "benchmark_model" in argv[3]:
    sys.stdout.write(open({str(output)!r}).read())
""")
    script.chmod(0o755)


def test_adb_end_to_end_with_stand_in_adb(tmp_path, monkeypatch):
    log = tmp_path / "argv.log"
    _fake_adb(tmp_path, log, DATA / "tf2.8_mobilenet_v1_op_profiling.txt", "R58M1")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    model = make_tflite(tmp_path / "my model; rm -rf ~.tflite")
    res = profile_artifact(model, "adb:R58M1", runs=50, warmup=2, threads=4, per_layer=True, options={"gpu": True})
    assert res["device"] == "adb:R58M1" and res["mean_ms"] == pytest.approx(2950.34) and res["unit"] == "GPU"
    assert res["layers"]["by_op_type"]["CONV_2D"]["count"] == 15
    calls = [__import__("json").loads(ln) for ln in log.read_text().splitlines()]
    push = next(c for c in calls if c[2] == "push")
    assert push[3] == str(model) and push[4] == "/data/local/tmp/edgekit.AbCd1234/model.tflite"
    bench = next(c for c in calls if c[2] == "shell" and "benchmark_model" in c[3])
    words = shlex.split(bench[3])
    assert words[1] == "--graph=/data/local/tmp/edgekit.AbCd1234/model.tflite" and "--use_gpu=true" in words
    assert calls[-1][2:] == ["shell", "rm -rf /data/local/tmp/edgekit.AbCd1234"]
    with pytest.raises(DeviceError, match="not found"):
        profile_artifact(model, "adb:OTHER", runs=1)
