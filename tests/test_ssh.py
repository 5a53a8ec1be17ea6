"""`edgekit profile --device ssh://...` against a real OpenSSH server on loopback (tests/sshd.py)."""

from __future__ import annotations

import glob
import shutil
import sys
from pathlib import Path

import pytest
from profile_models import make_cnn_onnx, make_ov_ir
from sshd import sshd  # noqa: F401  (fixture)

from edgekit.errors import DeviceError
from edgekit.profile import _profile_with_runner, profile_artifact
from edgekit.profile.devices import resolve_device
from edgekit.profile.stream import RemoteRunError

PY = {"remote_python": sys.executable}  # the "device" is this machine: its Python has the runtimes


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ssh_models")
    onnx_path = make_cnn_onnx(d / "cnn.onnx", size=16)
    return {"onnx": onnx_path, "xml": make_ov_ir(onnx_path, d / "cnn.xml")}


def _remote_dirs() -> set[str]:
    return set(glob.glob("/tmp/edgekit.*"))


def test_ssh_profile_onnx_and_cleanup(sshd, models):  # noqa: F811
    before = _remote_dirs()
    res = profile_artifact(models["onnx"], sshd.url, runs=7, warmup=1, threads=1, options=PY)
    assert res["device_kind"] == "ssh" and res["device"].startswith(sshd.url)
    assert res["runs"] == 7 and res["complete"] is True and res["estimate"] is False
    assert res["backend"] == "onnxruntime" and res["runtime"]["options"]["intra_op_num_threads"] == 1
    assert 0 < res["min_ms"] <= res["p50_ms"] <= res["p99_ms"]
    assert res["peak_memory_mb"] > 10
    assert _remote_dirs() == before  # the temporary folder on the device is gone


def test_ssh_openvino_ir_with_bin_and_per_layer(sshd, models):  # noqa: F811
    res = profile_artifact(models["xml"], sshd.url, runs=5, warmup=1, per_layer=True, options=PY)
    assert res["backend"] == "openvino"
    layers = res["layers"]
    assert layers["layers"] >= 3 and {"Convolution"} <= set(layers["by_op_type"])


def test_ssh_hostile_file_name_is_not_a_shell_word(sshd, models, tmp_path):  # noqa: F811
    evil = tmp_path / "m; touch PWNED $(touch PWNED2) `id`.onnx"
    shutil.copy(models["onnx"], evil)
    res = profile_artifact(evil, sshd.url, runs=3, warmup=0, options=PY)
    assert res["runs"] == 3
    assert not list(Path("/").glob("PWNED*")) and not list(Path.home().glob("PWNED*"))
    assert not list(Path("/tmp").glob("edgekit.*/PWNED*"))


def test_ssh_host_key_mismatch_is_a_clear_device_error(sshd, models, tmp_path):  # noqa: F811
    from sshd import keygen

    good = sshd.known_hosts.read_text()
    other = keygen(tmp_path / "impostor")
    sshd.known_hosts.write_text(sshd.host_key_line(other))
    try:
        with pytest.raises(DeviceError, match="host key verification failed") as info:
            profile_artifact(models["onnx"], sshd.url, runs=2, options=PY)
        assert "ssh-keygen -R" in str(info.value)
        sshd.known_hosts.write_text("")  # unknown host: BatchMode refuses instead of asking
        with pytest.raises(DeviceError, match="host key verification failed"):
            profile_artifact(models["onnx"], sshd.url, runs=2, options=PY)
    finally:
        sshd.known_hosts.write_text(good)


def test_ssh_killed_connection_keeps_measured_runs(sshd, models):  # noqa: F811
    seen = []

    def kill_after_some_runs(rec: dict) -> None:
        if rec.get("event") == "run":
            seen.append(rec)
            if len(seen) == 5:
                assert sshd.kill_sessions() >= 1

    target = resolve_device(sshd.url, remote_python=sys.executable)
    before = _remote_dirs()
    with pytest.raises(RemoteRunError, match="connection lost") as info:
        _profile_with_runner(models["onnx"], target, runs=200000, warmup=0, threads=1, samples=None,
                             per_layer=False, options={"timeout": 120}, on_record=kill_after_some_runs)
    partial = info.value.partial
    assert partial["complete"] is False
    assert 5 <= partial["runs"] < 200000 and partial["p50_ms"] > 0
    assert isinstance(info.value, DeviceError) and info.value.exit_code == 6
    assert _remote_dirs() == before  # cleaned up over a fresh connection


def test_ssh_missing_python_and_unit(sshd, models):  # noqa: F811
    with pytest.raises(DeviceError, match="no Python at"):
        profile_artifact(models["onnx"], sshd.url, runs=2, options={"remote_python": "/nonexistent/python3"})
    with pytest.raises(DeviceError, match="OpenVINO device NPU is not available.*available here: CPU"):
        profile_artifact(models["xml"], sshd.url, runs=2, options={**PY, "unit": "NPU"})


def test_ssh_unreachable_and_bad_specs(models):
    from edgekit.errors import UsageError

    with pytest.raises(UsageError):
        resolve_device("ssh://-oProxyCommand=evil@host")
    with pytest.raises(UsageError):
        resolve_device("ssh://user@host:99999")
    from sshd import free_port

    with pytest.raises(DeviceError, match="cannot connect"):
        profile_artifact(models["onnx"], f"ssh://nobody@127.0.0.1:{free_port()}", runs=1)
