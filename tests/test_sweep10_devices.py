"""Sweep 10, devices and remote profiling as a user drives them: user-written device profiles (a copy of a shipped
one, typos, lower-case units, a bad roofline efficiency), the statistics a profile reports, and `--device
ssh://...` against a real OpenSSH server on loopback whose sessions have their own $TMPDIR (a device where /tmp
is not the place to write): the run's folder, a device without room, an upload slower than --timeout, adb
messages. Structure and behaviour only: no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.profile.result import build_result
from edgekit.profile.stream import Collected

ROOT = Path(__file__).resolve().parents[1]


def edgekit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=180)


# ---------------------------------------------------------------- the statistics of a profile

def test_every_reported_median_is_the_median():
    """cpu_p50_ms took the upper of the two middle runs (with 2 runs: the slower one) while p50_ms interpolates
    as numpy does: with an even run count the two 'medians' of one profile disagreed."""
    wall = [1.0, 4.0, 2.0, 3.0]
    cpu = [0.5, 3.5, 1.5, 2.5]
    col = Collected(meta={"runtime": {"name": "onnxruntime"}}, first_ms=9.0, runs_ms=wall, cpu_ms=cpu)
    res = build_result(col, path=Path("m.onnx"), device_label="local", device_kind="local", warmup=1, threads=None,
                       samples=None)
    assert res["p50_ms"] == pytest.approx(np.median(wall)) and res["cpu_p50_ms"] == pytest.approx(np.median(cpu))
    assert res["mean_ms"] == pytest.approx(np.mean(wall)) and res["std_ms"] == pytest.approx(np.std(wall))
    assert res["p90_ms"] == pytest.approx(np.percentile(wall, 90)) and res["cpu_mean_ms"] == pytest.approx(2.0)
    assert (res["min_ms"], res["max_ms"], res["runs"]) == (1.0, 4.0, 4)


# ---------------------------------------------------------------- device profiles a user writes

@pytest.fixture(scope="module")
def kws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sweep10_devices import export_ds_cnn

    return export_ds_cnn(tmp_path_factory.mktemp("sweep10_kws") / "kws.onnx")


def test_a_copied_profile_keeping_its_name_is_the_one_measured(kws, tmp_path, monkeypatch):
    """README: copy a shipped profile, fill in the host, and `--device raspberry-pi-5` measures on the board. A copy
    saved as my-pi.toml (its name key still "raspberry-pi-5") was what `edgekit devices` listed (access: ssh), but
    `--device raspberry-pi-5` read the shipped file by its file name and gave a roofline estimate."""
    from sweep10_devices import PI_COPY

    from edgekit.profile.devices import get_profile, list_profiles, resolve_device

    (tmp_path / "my-pi.toml").write_text(PI_COPY.format(host="pi@10.0.0.9:2222", python="/opt/venv/bin/python"))
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    listed = next(p for p in list_profiles() if p.name == "raspberry-pi-5")
    assert listed.source == tmp_path / "my-pi.toml"
    target = resolve_device("raspberry-pi-5")
    assert (target.kind, target.host, target.port, target.python) == ("ssh", "10.0.0.9", 2222, "/opt/venv/bin/python")
    assert get_profile("my-pi").source == listed.source  # the file name still reaches it
    r = edgekit("devices", cwd=tmp_path, env={"EDGEKIT_DEVICE_PATH": str(tmp_path)})
    assert r.returncode == 0 and f"raspberry-pi-5 ({tmp_path / 'my-pi.toml'})" in r.stdout
    (tmp_path / "twin.toml").write_text(PI_COPY.format(host="pi@10.0.0.10", python="python3"))
    r = edgekit("devices", cwd=tmp_path, env={"EDGEKIT_DEVICE_PATH": str(tmp_path)})
    assert "my-pi.toml and twin.toml" in r.stderr and "uses my-pi.toml" in r.stderr


@pytest.mark.parametrize("body, problem", [
    ('description = "b"\nmemory_bandwith_gbs = 10\n', "unknown key 'memory_bandwith_gbs' (did you mean "
                                                     "'memory_bandwidth_gbs'?)"),
    ('description = "b"\n[acces]\nkind = "ssh"\nhost = "pi@board"\n', "unknown key 'acces' (did you mean 'access'?)"),
    ('description = "b"\n[access]\nkind = "ssh"\nhostname = "pi@board"\n',
     "unknown key 'hostname' in [access] (did you mean 'host'?)"),
    ('description = "b"\nmemory_bandwidth_gbs = 10\n[units.CPU]\npeak_fp32_gop = 50\n',
     "unknown key 'peak_fp32_gop' in [units.CPU] (did you mean 'peak_fp32_gops'?)"),
    ('description = "b"\nmemory_bandwidth_gbs = 10\n[units.CPU]\npeak_fp32_gops = 50\n[roofline]\nefficiency = 0\n',
     "[roofline] efficiency must be a number in (0, 1] (got 0)"),
    ('description = "b"\n[units.NPU]\npeak_int8_gops = 1\n[units.npu]\npeak_int8_gops = 2\n',
     "[units.NPU] and [units.npu] are the same unit"),
])
def test_a_typo_in_a_user_profile_is_named(kws, tmp_path, body, problem):
    """Keys edgekit does not read were ignored without a word: `[acces]` or `hostname` gave a roofline estimate
    instead of a measurement, `memory_bandwith_gbs` 'lacks memory_bandwidth_gbs' while the file has it, and
    `[roofline] efficiency = 0` an internal error (ZeroDivisionError)."""
    (tmp_path / "board.toml").write_text(body)
    r = edgekit("profile", str(kws), "--device", "board", "--json", cwd=tmp_path,
                env={"EDGEKIT_DEVICE_PATH": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "ConfigError" and problem in err["message"] and "board.toml" in err["message"]
    assert "Traceback" not in r.stderr


def test_units_are_matched_whatever_their_case(kws, tmp_path, monkeypatch):
    """[units.npu] in a user's profile: `--unit NPU` said "has no NPU rates (its units: CPU, npu)"."""
    from edgekit.profile import profile_artifact

    (tmp_path / "npubox.toml").write_text('description = "a laptop with an NPU"\nmemory_bandwidth_gbs = 50\n'
                                          '[units.cpu]\npeak_fp32_gops = 500\n[units.npu]\npeak_fp32_gops = 4000\n'
                                          'peak_int8_gops = 8000\n[roofline]\nefficiency = 0.5\n')
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    npu = profile_artifact(kws, "npubox", options={"unit": "npu"})
    cpu = profile_artifact(kws, "npubox")
    assert npu["estimate"] and npu["unit"] == "NPU" and npu["peak_gops"]["fp32"] == 4000
    assert cpu["peak_gops"]["fp32"] == 500 and npu["estimate_ms"] == pytest.approx(2 * npu["roofline_ms"])
