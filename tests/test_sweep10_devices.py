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


def test_a_folder_named_twice_on_the_device_path_lists_its_profiles_once(tmp_path):
    """$EDGEKIT_DEVICE_PATH naming one folder twice (or the shipped devices/ folder) warned that each of its
    profiles was two files of one name."""
    from sweep10_devices import PI_COPY

    (tmp_path / "my-pi.toml").write_text(PI_COPY.format(host="pi@10.0.0.9", python="python3"))
    from edgekit.resources import data_dir

    path = os.pathsep.join([str(tmp_path), f"{tmp_path}/", str(data_dir("devices"))])
    r = edgekit("devices", "--json", cwd=tmp_path, env={"EDGEKIT_DEVICE_PATH": path})
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    names = [d["name"] for d in json.loads(r.stdout)["devices"]]
    assert len(names) == len(set(names)) and "raspberry-pi-5" in names


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


def test_a_local_runner_writes_its_temporary_files_in_edgekits_folder(kws):
    """The runner's temporary files (ORT's per-layer profile) went to /tmp/edgekit-ortprof-*, left behind when the
    runner was killed midway; its TMPDIR is now the profile's own temporary folder, removed in every case."""
    from edgekit.profile import _profile_with_runner
    from edgekit.profile.devices import resolve_device

    seen = {}

    def look(rec: dict) -> None:
        if rec.get("event") == "meta":
            seen["tmp"] = _env_of(rec["pid"]).get("TMPDIR", "")

    res = _profile_with_runner(kws, resolve_device("local"), runs=2, warmup=0, threads=1, samples=None,
                               per_layer=True, options={}, on_record=look)
    assert res["layers"]["layers"] >= 5
    assert Path(seen["tmp"]).name.startswith("edgekit-profile-") and not Path(seen["tmp"]).exists()


def _env_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)


# ---------------------------------------------------------------- ssh: where a run writes on the device

@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory):
    """A real sshd on loopback whose sessions have TMPDIR set (Termux, or a board whose /tmp is a small tmpfs)."""
    from sshd import serving, start_sshd

    root = tmp_path_factory.mktemp("sweep10_device")
    tmpdir = root / "device tmp"
    tmpdir.mkdir()
    with serving(start_sshd(root, extra=(f'SetEnv TMPDIR="{tmpdir}"',))) as server:
        yield server, tmpdir


PY = {"remote_python": sys.executable}  # the "device" is this machine: its Python has the runtimes


def test_the_run_folder_is_made_in_the_devices_tmpdir(device, kws):
    """The folder was always /tmp/edgekit.*: a device whose /tmp is read-only or a small tmpfs (or Termux, where
    /tmp does not exist) could not be profiled at all. It is now made in the device's $TMPDIR, and the runner's
    own temporary files (ORT's per-layer profile) go inside it, so the folder's removal takes them too."""
    from edgekit.profile import _profile_with_runner
    from edgekit.profile.devices import resolve_device

    server, tmpdir = device
    seen: dict[str, object] = {}

    def look(rec: dict) -> None:
        if rec.get("event") == "meta":
            seen["folders"] = list(tmpdir.glob("edgekit.*"))
            seen["runner_tmp"] = _env_of(rec["pid"]).get("TMPDIR")

    before = set(Path("/tmp").glob("edgekit.*"))
    res = _profile_with_runner(kws, resolve_device(server.url, remote_python=sys.executable), runs=3, warmup=0,
                               threads=1, samples=None, per_layer=True, options={}, on_record=look)
    assert res["complete"] and res["layers"]["layers"] >= 5
    assert len(seen["folders"]) == 1 and seen["runner_tmp"] == str(seen["folders"][0])
    assert not list(tmpdir.iterdir()) and set(Path("/tmp").glob("edgekit.*")) == before


def test_remote_tmp_with_spaces_and_the_profiles_tmpdir(device, kws, tmp_path, monkeypatch):
    """--remote-tmp (or tmpdir in the profile's [access]) picks the folder, spaces and all; one that cannot be
    written is named with the fix (it was "making a temporary folder failed (mkdir: ...)" and nothing to do)."""
    from sweep10_devices import PI_COPY

    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    server, _ = device
    other = tmp_path / "sd card" / "edge kit"
    other.mkdir(parents=True)
    res = profile_artifact(kws, server.url, runs=2, warmup=0, options={**PY, "remote_tmp": str(other)})
    assert res["complete"] and not list(other.iterdir())
    host = server.url[len("ssh://"):]
    (tmp_path / "bench-pi.toml").write_text(PI_COPY.format(host=host, python=sys.executable)
                                            .replace('[access]\n', f'[access]\ntmpdir = "{other}"\n'))
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    res = profile_artifact(kws, "raspberry-pi-5", runs=2, warmup=0)
    assert res["device_profile"] == "raspberry-pi-5" and res["device"].startswith(server.url) and res["complete"]
    with pytest.raises(DeviceError, match="cannot write in /nonexistent/dir") as info:
        profile_artifact(kws, server.url, runs=1, options={**PY, "remote_tmp": "/nonexistent/dir"})
    assert "--remote-tmp" in str(info.value) and "authentication" not in str(info.value)


def test_a_device_without_room_for_the_artifact_is_named(device, tmp_path):
    """scp into a full device said "copying the artifact (scp -O) failed (scp: ...)" after copying it twice (SFTP,
    then the legacy protocol), with no word of space; the device's free room is now checked after a failed copy."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    server, _ = device
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(tmp_path / "wide.onnx"))  # 512 KB
        with pytest.raises(DeviceError, match=r"no room on the device for the artifact: .*small has 0\.\d MB free, "
                                              r"the files need 0\.5 MB") as info:
            profile_artifact(tmp_path / "wide.onnx", server.url, runs=1, options={**PY, "remote_tmp": str(small)})
        assert "--remote-tmp" in str(info.value) and not list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_an_upload_slower_than_the_timeout_is_not_copied_again(device, kws, tmp_path):
    """A copy that ran out of --timeout was started again with the legacy scp protocol: twice the time the user
    allowed, and the error named 'scp -O' and asked whether the device was up. Now one copy, and the hint says to
    raise --timeout."""
    import onnx

    server, tmpdir = device
    big = tmp_path / "big.onnx"
    onnx.save(onnx.load(str(kws)), str(big), save_as_external_data=True, location="big.data", size_threshold=0)
    with open(tmp_path / "big.data", "ab") as f:
        f.write(b"\0" * 400_000)  # trailing bytes no tensor reads: a larger upload
    proxy = Path(__file__).parent / "fixtures" / "sweep10_devices_slowlink.py"
    config = tmp_path / "slow_config"
    config.write_text(server.client_config.read_text().replace(
        "Host 127.0.0.1\n", f"Host 127.0.0.1\n  ProxyCommand {sys.executable} {proxy} 127.0.0.1 {server.port} 50000\n"))
    r = edgekit("profile", str(big), "--device", server.url, "--remote-python", sys.executable, "--timeout", "3",
                "--json", cwd=tmp_path, env={"EDGEKIT_SSH_CONFIG": str(config)})
    assert r.returncode == 6, r.stderr
    msg = json.loads(r.stdout)["error"]["message"]
    assert "copying the artifact (scp) timed out after 3 s" in msg and "raise --timeout" in msg
    assert "scp -O" not in msg
    assert not list(tmpdir.glob("edgekit.*"))


# ---------------------------------------------------------------- adb

def test_an_unauthorized_phone_is_named_with_what_to_do(tmp_path, monkeypatch):
    """adb's last line ("Otherwise check for a confirmation dialog on your device.") was the whole message, and
    the attached devices were listed without their state."""
    from profile_models import make_tflite

    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    adb = tmp_path / "adb"
    adb.write_text("#!/bin/sh\n"
                   "if [ \"$1\" = devices ]; then printf '* daemon started successfully\\nList of devices attached\\n"
                   "R58M1\\tunauthorized\\nemulator-5554\\tdevice\\n\\n'; exit 0; fi\n"
                   "printf \"adb: device unauthorized.\\nThis adb server's \\$ADB_VENDOR_KEYS is not set\\n"
                   "Try 'adb kill-server' if that seems wrong.\\nOtherwise check for a confirmation dialog on your "
                   "device.\\n\" >&2\nexit 1\n")
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(DeviceError) as info:
        profile_artifact(make_tflite(tmp_path / "m.tflite"), "adb:R58M1", runs=1)
    msg = str(info.value)
    assert "adb: device unauthorized." in msg and "USB debugging" in msg
    assert "attached devices: R58M1 (unauthorized), emulator-5554 (see" in msg and "daemon" not in msg


def test_a_profile_naming_benchmark_model_is_measured_with_it(device, tmp_path, monkeypatch):
    """[access] benchmark_model in an ssh device's profile (a board without Python) was read but never used: the
    profile ran the Python runner and failed with 'no Python at ... (use --benchmark-model)'. The stand-in tool on
    the device prints a real benchmark_model output (tests/data/benchmark_model)."""
    from profile_models import make_tflite

    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    server, _ = device
    tool = tmp_path / "benchmark model"
    tool.write_text(f"#!/bin/sh\ncat '{ROOT / 'tests/data/benchmark_model/tf2.8_mobilenet_v1_op_profiling.txt'}'\n")
    tool.chmod(0o755)
    (tmp_path / "nopy.toml").write_text(f'description = "a board without Python"\n[access]\nkind = "ssh"\n'
                                        f'host = "{server.url[len("ssh://"):]}"\npython = "/nonexistent/python3"\n'
                                        f'benchmark_model = "{tool}"\n')
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    res = profile_artifact(make_tflite(tmp_path / "m.tflite"), "nopy", runs=3, warmup=0)
    assert res["runtime"]["tool"] == "benchmark_model" and res["mean_ms"] == pytest.approx(2950.34)
    assert res["device_profile"] == "nopy" and res["device_kind"] == "ssh"
    with pytest.raises(DeviceError, match="no Python at .* for .tflite artifacts on devices without Python"):
        profile_artifact(_tiny_onnx(tmp_path), "nopy", runs=1)  # benchmark_model runs .tflite files only


def _tiny_onnx(tmp_path: Path) -> Path:
    from profile_models import make_cnn_onnx

    return make_cnn_onnx(tmp_path / "tiny.onnx", size=8)


def _alive_with(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if marker in cmd and state != "Z" and "pytest" not in cmd:
                found.append(int(entry))
    return found


def test_a_timed_out_benchmark_model_stops_on_the_device(device, tmp_path):
    """benchmark_model over ssh (--benchmark-model) went on after a timeout (or Ctrl-C): the ssh client was killed
    and the tool, which prints only at its end, never met the closed connection and kept the board's cores busy.
    The stand-in is a wrapper script whose child does the work (as an LD_LIBRARY_PATH wrapper would)."""
    import signal
    import time

    from profile_models import make_tflite

    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    server, tmpdir = device
    marker = f"edgekit-sweep10-bm-{os.getpid()}"
    tool = tmp_path / "benchmark_model"
    tool.write_text(f"#!/bin/sh\n'{sys.executable}' -c 'import time; time.sleep(120)' {marker}\n")
    tool.chmod(0o755)
    try:
        with pytest.raises(DeviceError, match="benchmark_model timed out after 3 s"):
            profile_artifact(make_tflite(tmp_path / "m.tflite"), server.url, runs=1,
                             options={"benchmark_model": str(tool), "timeout": 3})
        deadline = time.monotonic() + 15
        while _alive_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive_with(marker), "benchmark_model outlived the profile"
        assert not list(tmpdir.glob("edgekit.*"))
    finally:
        for pid in _alive_with(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_per_layer_table_says_which_statistic_it_shows(tmp_path):
    """LiteRT's per-layer rows are each operator's median time over its runs (the upper middle run for an even
    count), but the table said 'mean of N runs', as for ONNX Runtime and OpenVINO whose rows are means."""
    from profile_models import make_tflite

    model = make_tflite(tmp_path / "m.tflite")
    r = edgekit("profile", str(model), "--runs", "6", "--warmup", "0", "--per-layer", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "median of 6 runs" in r.stdout and "mean of 6 runs" not in r.stdout
    r = edgekit("profile", str(model), "--runs", "6", "--warmup", "0", "--per-layer", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["layers"]["statistic"] == "median"


def test_a_killed_profile_leaves_nothing_of_benchmark_model_on_the_device(device, tmp_path):
    """edgekit killed outright (SIGKILL: no cleanup of its own) while benchmark_model ran over ssh left the tool
    running and its folder (the model) on the device."""
    import signal
    import time

    from profile_models import make_tflite

    server, tmpdir = device
    marker = f"edgekit-sweep10-killed-{os.getpid()}"
    tool = tmp_path / "benchmark_model"
    tool.write_text(f"#!/bin/sh\n'{sys.executable}' -c 'import time; time.sleep(120)' {marker}\n")
    tool.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "profile", str(make_tflite(tmp_path / "m.tflite")),
                             "--device", server.url, "--benchmark-model", str(tool)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _alive_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive_with(marker) and list(tmpdir.glob("edgekit.*/model.tflite"))
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15
        while (_alive_with(marker) or list(tmpdir.glob("edgekit.*"))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive_with(marker), "benchmark_model outlived the profile"
        assert not list(tmpdir.glob("edgekit.*")), "its folder is left on the device"
    finally:
        proc.kill()
        proc.wait()
        for pid in _alive_with(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("where", ["local", "ssh"])
def test_a_runner_killed_on_the_device_is_named_as_such(device, kws, where):
    """A runner the kernel killed (a board out of memory: SIGKILL) was 'the runner stopped (exit 137): no message'
    over ssh and 'local runner failed (exit -9): (no output)' here; the partial result keeps the runs measured."""
    import signal

    from edgekit.profile import _profile_with_runner
    from edgekit.profile.devices import resolve_device
    from edgekit.profile.stream import RemoteRunError

    server, _ = device
    runs: list[dict] = []

    def oom(rec: dict) -> None:
        if rec.get("event") == "meta":
            runs.append(rec)
        elif rec.get("event") == "run" and len(runs) == 1:
            runs.append(rec)
            os.kill(runs[0]["pid"], signal.SIGKILL)  # the runner: a process of this machine either way

    target = resolve_device("local" if where == "local" else server.url, remote_python=sys.executable)
    with pytest.raises(RemoteRunError, match="killed by SIGKILL, on Linux most often the out-of-memory killer") as info:
        _profile_with_runner(kws, target, runs=10**6, warmup=0, threads=1, samples=None, per_layer=False,
                             options={"timeout": 60}, on_record=oom)
    assert info.value.partial["runs"] >= 1 and info.value.exit_code == 6


def test_a_device_never_connected_to_says_how_to_accept_its_key(device, kws):
    """Every user's first run: the host key is not in known_hosts yet. The hint was the one for a changed key
    ('if the device was really re-installed ... ssh-keygen -R'), which sends a first-time user the wrong way."""
    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    server, _ = device
    good = server.known_hosts.read_text()
    server.known_hosts.write_text("")
    try:
        with pytest.raises(DeviceError, match="host key is not in known_hosts yet") as info:
            profile_artifact(kws, server.url, runs=1, options=PY)
        assert f"ssh -p {server.port} {server.user}@127.0.0.1" in str(info.value)
        assert "ssh-keygen -R" not in str(info.value)
    finally:
        server.known_hosts.write_text(good)


def test_the_python_api_profile_and_inspect_stay_callable(kws, tmp_path):
    """README: `edgekit.profile(path, device="local", runs=50)` and `edgekit.inspect(path)`. The first call imported
    the subpackage of the same name, which replaced the function on the package: the second call (or any after
    `import edgekit.profile.devices`) was "TypeError: 'module' object is not callable"."""
    code = (
        "import json, sys, edgekit\n"
        "import edgekit.profile.devices, edgekit.inspect\n"
        "a = edgekit.profile(sys.argv[1], runs=2, warmup=0)\n"
        "b = edgekit.profile(sys.argv[1], device='raspberry-pi-5')\n"
        "c = [edgekit.inspect(sys.argv[1])['inputs'][0]['name'] for _ in range(2)]\n"
        "from edgekit.profile import profile_artifact\n"
        "assert edgekit.profile.profile_artifact is profile_artifact\n"
        "print(json.dumps([a['runs'], b['estimate'], c]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(kws)], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [2, True, ["mfcc", "mfcc"]]


def test_a_model_the_devices_runtime_cannot_load_names_that_runtimes_version(device, tmp_path):
    """'onnxruntime cannot load model.onnx: ... not a registered function/op' did not say which onnxruntime: on
    a board the usual cause is its older runtime (an opset it does not know), and the host's is another one."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    server, _ = device
    graph = helper.make_graph([helper.make_node("FooOp", ["x"], ["y"], domain="com.acme")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "custom.onnx"))
    r = edgekit("profile", str(tmp_path / "custom.onnx"), "--device", server.url, "--remote-python", sys.executable,
                "--json", cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    msg = json.loads(r.stdout)["error"]["message"]
    assert f"onnxruntime {onnxruntime.__version__} cannot load" in msg and "FooOp" in msg


def test_a_fractional_timeout_is_reported_as_given(kws):
    """--timeout 1.5 said 'timed out after 2 s' (0.5: 'after 0 s'): the seconds were rounded to an integer."""
    from edgekit.profile import profile_artifact
    from edgekit.profile.stream import RemoteRunError

    with pytest.raises(RemoteRunError, match="timed out after 1.5 s") as info:
        profile_artifact(kws, "local", runs=10**9, warmup=0, options={"timeout": 1.5})
    assert info.value.partial["runs"] > 0


def test_a_device_that_does_not_answer_is_given_up_within_the_timeout():
    """--timeout 3 on a device that never answers (a board switched off, a blackholed address) waited ssh's own
    10 s connect timeout first. The connect timeout is now within --timeout (and 10 s at most)."""
    from edgekit.profile.devices import resolve_device
    from edgekit.profile.ssh import SshDevice

    def connect_timeout(timeout: float) -> str:
        argv = SshDevice.from_target(resolve_device("ssh://pi@10.255.255.1"), timeout=timeout).ssh_argv(["true"])
        return next(a for a in argv if a.startswith("ConnectTimeout="))

    assert connect_timeout(3) == "ConnectTimeout=3" and connect_timeout(0.5) == "ConnectTimeout=1"
    assert connect_timeout(600) == "ConnectTimeout=10"
