"""Sweep 9, `edgekit profile` / `edgekit devices` as a build script and a device-profiling user drive them: every
artifact kind edgekit writes (token-id models too), benchmark_model results as text, a runner that must not
outlive an interrupted or timed-out profile (locally and over a real loopback sshd), inputs the runtime refuses,
user device profiles with wrong types, and the CLI's one-JSON-object contract. Structure and behaviour only:
no timing is asserted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from profile_models import make_cnn_onnx
from sshd import sshd  # noqa: F401  (fixture)

from edgekit.errors import ConfigError, DataError
from edgekit.profile import profile_artifact
from edgekit.profile.artifact_ids import artifact_id_bounds
from edgekit.profile.devices import list_profiles
from edgekit.profile.stream import RemoteRunError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "benchmark_model"
ROWS = 30  # rows of the embedding table of the token-id model below


def edgekit(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=180, **kw)


def make_token_model(path: Path) -> Path:
    """ids[batch, seq] int64 -> Gather from a 30-row table -> ReduceMean over seq -> [batch, 8]."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((ROWS, 8)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
         helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0, name="pool")], "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cnn_onnx(tmp_path_factory.mktemp("sweep9_cnn") / "cnn.onnx", size=16)


@pytest.fixture(scope="module")
def token_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The token-id model converted by edgekit itself (seq fixed at 10 so TFLite can take it)."""
    from edgekit.api import convert

    d = tmp_path_factory.mktemp("sweep9_tokens")
    src = make_token_model(d / "tok.onnx")
    res = convert(str(src), ["ort-mobile", "openvino", "tflite"], d / "out", input_shapes={"ids": (1, 10)})
    files = {Path(a["path"]).suffix: Path(a["path"]) for a in res["artifacts"]}
    files[".ort"] = next((d / "out").glob("*.ort"))
    return files


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of every descendant of `pid`."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, pp in parent.items():
            if pp == p and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    found[child] = ""
                frontier.append(child)
    return found


SHELLS = ("sh", "bash", "dash", "zsh")


def _runners(pid: int) -> list[int]:
    """Runner processes below `pid`; not a shell whose command line names runner.py (an ssh session's `sh -c`)."""
    return [c for c, cmd in _children(pid).items()
            if "runner.py" in cmd and os.path.basename(cmd.split(" ", 1)[0]) not in SHELLS]


STUCK = "--warmup 100000000"  # the warm-up of the profiles below, which never ends


def _stuck_runners() -> set[int]:
    """Runners of the never-ending profiles below, wherever they are (an orphan's parent is init)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "runner.py" in cmd and STUCK in cmd and _alive(int(entry)):
                found.add(int(entry))
    return found


def _wait_for(cond, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def _written(pid: int) -> int:
    """Bytes the process has written (its JSON records, once the model is loaded)."""
    try:
        io = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    return int(next(ln.split()[1] for ln in io.splitlines() if ln.startswith("wchar:")))


def _in_warmup(pid_of_parent: int) -> bool:
    """A runner under `pid_of_parent` has streamed its first records, so it is in its silent warm-up (a
    runner killed before that dies writing them into the closed pipe, and would prove nothing)."""
    if not [r for r in _runners(pid_of_parent) if _written(r) >= 200]:
        return False
    time.sleep(0.5)
    return True


@pytest.fixture
def reap_stuck_runners():
    """Kill (by pid) any never-ending runner a test leaves behind, so a failing test does not load the machine."""
    before = _stuck_runners()
    yield
    for pid in _stuck_runners() - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------- token ids on every artifact format

def test_synthetic_ids_stay_inside_the_table_in_every_artifact_format(token_artifacts):
    """Synthetic ids were drawn inside the embedding table only for .onnx files; .ort and .tflite artifacts of
    any token-id model failed on their first run (exit 6, 'indices element out of data bounds' / 'gather index
    out of bounds') and OpenVINO silently gathered zeros for ids past the table."""
    for suffix in (".ort", ".xml", ".tflite", ".onnx"):
        assert artifact_id_bounds(token_artifacts[suffix], ["ids"]) == {"ids": ROWS}, suffix
    for suffix in (".ort", ".tflite"):
        res = profile_artifact(token_artifacts[suffix], runs=2, warmup=0)
        assert res["complete"] is True and res["samples"]["synthetic"] is True
        assert res["inputs"][0]["name"] == "ids" and "int" in res["inputs"][0]["dtype"]


def test_inputs_the_runtime_refuses_are_bad_input_not_an_unavailable_device(tmp_path):
    """A model that fails on its inputs (here a positional table fixing seq at 10; the synthetic seq is 16) made
    the runner crash with a traceback: 'local runner failed (exit 1)', exit 6 (device or runtime unavailable),
    so a build script would retry a device that is fine."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("Add", ["e", "pos"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        [numpy_helper.from_array(rng.standard_normal((ROWS, 8)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "pos")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "positions.onnx"))
    r = edgekit("profile", str(tmp_path / "positions.onnx"), "--runs", "2", "--json", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "DataError" and "failed running it on its inputs" in err["message"]
    assert "Traceback" not in r.stderr and "--samples" in r.stderr
    np.savez(tmp_path / "ten.npz", ids=rng.integers(0, ROWS, (2, 10)))  # the shapes it was built for: it runs
    assert profile_artifact(tmp_path / "positions.onnx", runs=2, samples=str(tmp_path / "ten.npz"))["complete"]


def test_given_ids_past_the_table_are_named_before_the_run(token_artifacts, tmp_path):
    """--samples whose ids (or tokenizer) do not fit the artifact's embedding table: named with the table's size
    (as convert does), read from the .tflite/.ort/.xml graph; it was the runtime's 'gather index out of bounds'
    (or, OpenVINO, a silent run on zeros)."""
    np.savez(tmp_path / "bad.npz", ids=np.full((1, 10), ROWS + 47, np.int64))
    for suffix in (".tflite", ".ort", ".xml"):
        with pytest.raises(DataError, match=f"id {ROWS + 47} in 'ids' is outside the model's embedding table "
                                            f"\\({ROWS} rows\\)"):
            profile_artifact(token_artifacts[suffix], runs=2, samples=str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match=f"tokenizer.json has \\d+ tokens but .* 'ids' has {ROWS} rows"):
        profile_artifact(token_artifacts[".tflite"], runs=2, samples="sentences")


# ---------------------------------------------------------------- text output

def test_benchmark_model_results_print_as_text(tmp_path):
    """An adb (benchmark_model) result has no p90/p99 (null): the text report crashed with an internal error
    ('unsupported format string passed to NoneType'), only --json worked."""
    from profile_models import make_tflite

    adb = tmp_path / "bin" / "adb"
    adb.parent.mkdir()
    adb.write_text(f"""#!{sys.executable}
import sys
argv = sys.argv[1:]
if argv[2] == "shell" and argv[3].startswith("mktemp"):
    print("/data/local/tmp/edgekit.T3st")
elif argv[2] == "shell" and "benchmark_model" in argv[3]:
    sys.stdout.write(open({str(DATA / 'tf2.8_mobilenet_v1_op_profiling.txt')!r}).read())
""")
    adb.chmod(0o755)
    model = make_tflite(tmp_path / "m.tflite")
    env = {"PATH": f"{adb.parent}{os.pathsep}{os.environ['PATH']}"}
    r = edgekit("profile", str(model), "--device", "adb:R58", "--runs", "3", "--per-layer", "--top", "2",
                cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "p90 n/a" in r.stdout and "mean 2950.340" in r.stdout and "note" in r.stdout
    assert r.stdout.count("CONV_2D") >= 2  # the per-layer table follows
    r = edgekit("profile", str(model), "--device", "adb:R58", "--per-layer", "--top", "0", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "--top" in r.stderr  # was accepted: a header with no rows (-1: all but one)
    # README: adb results have "the same keys" as any measurement; cpu_*, host and rss_before_load_mb were absent
    adb = json.loads(edgekit("profile", str(model), "--device", "adb:R58", "--json", cwd=tmp_path, env=env).stdout)
    local = json.loads(edgekit("profile", str(model), "--runs", "2", "--json", cwd=tmp_path).stdout)
    assert set(local) <= set(adb) and adb["cpu_p50_ms"] is None and adb["p90_ms"] is None


# ---------------------------------------------------------------- the runner never outlives the profile

def _start_stuck_profile(artifact: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    """A profile whose warm-up never ends (nothing is streamed while it runs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    return subprocess.Popen([sys.executable, "-m", "edgekit", "profile", str(artifact), "--runs", "1",
                             *STUCK.split(), "--json", *extra], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_profile_leaves_no_runner_behind(cnn, tmp_path, sig, reap_stuck_runners):
    """SIGTERM (a build system cancelling the step) exited 143 but left the runner process warming up forever
    (SIGKILL too): a later profile then competed with it for the cores."""
    proc = _start_stuck_profile(cnn, tmp_path)
    try:
        assert _wait_for(lambda: _in_warmup(proc.pid), 30), proc.stderr
        runner = _runners(proc.pid)[0]
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
        if sig == signal.SIGTERM:
            assert json.loads(out)["error"]["exit_code"] == 143
        assert _wait_for(lambda: not _alive(runner), 15), "the runner outlived the profile"
    finally:
        proc.kill()
        proc.wait()


def test_an_ssh_profile_that_times_out_stops_the_remote_runner(sshd, cnn, reap_stuck_runners):  # noqa: F811
    """On a timeout the ssh client was killed but the runner on the device went on (its warm-up writes
    nothing, so it never met a closed pipe): the board kept a core busy for the next measurement."""
    before = _stuck_runners()
    folders = set(Path("/tmp").glob("edgekit.*/model.onnx"))  # another run's leftovers are not this test's
    with pytest.raises(RemoteRunError, match="timed out after 4 s"):
        profile_artifact(cnn, sshd.url, runs=1, warmup=10**8, options={"remote_python": sys.executable, "timeout": 4})
    assert _wait_for(lambda: not _stuck_runners() - before, 15), "the remote runner went on"
    assert not set(Path("/tmp").glob("edgekit.*/model.onnx")) - folders  # and its folder is gone


def test_sigterm_during_an_ssh_profile_stops_the_remote_runner(sshd, cnn, tmp_path, reap_stuck_runners):  # noqa: F811
    # the child inherits $EDGEKIT_SSH_CONFIG from the sshd fixture
    proc = _start_stuck_profile(cnn, tmp_path, "--device", sshd.url, "--remote-python", sys.executable)
    try:
        assert _wait_for(lambda: _in_warmup(sshd.proc.pid), 30), proc.stderr
        remote = set(_runners(sshd.proc.pid))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        assert _wait_for(lambda: not remote & _stuck_runners(), 15), "the remote runner went on"
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- device profiles a user writes

@pytest.mark.parametrize("body, problem", [
    ('description = "x"\naccess = "pi@raspberrypi.local"\n', "'access' must be an [access] table"),
    ('description = "x"\n[units]\nCPU = 3\n', "'units' must be a table"),
    ('description = "x"\nmemory_bandwidth_gbs = "fast"\n[units.CPU]\npeak_fp32_gops = 1.0\n',
     "'memory_bandwidth_gbs' must be a positive number"),
    ('name = 5\ndescription = "x"\n', "'name' must be a string"),
    ('description = "x"\n[access]\nkind = "ssh"\nhost = "127.0.0.1"\nport = "22"\n', "[access] port must be"),
    ('description = "x"\n[access]\nkind = "ssh"\nhost = 5\n', "[access] host must be a string"),
])
def test_a_user_device_profile_of_the_wrong_types_is_a_config_error(tmp_path, monkeypatch, body, problem):
    """These were internal errors (exit 1: 'dictionary update sequence element', ''int' object has no attribute
    'items'', 'invalid literal for int()') in `edgekit devices` and `profile --device`, or, host = 5, an ssh
    connection to 0.0.0.5."""
    (tmp_path / "mine.toml").write_text(body)
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        list_profiles()
    assert problem in str(info.value) and "mine.toml" in str(info.value)
    r = edgekit("devices", "--json", cwd=tmp_path, env={"EDGEKIT_DEVICE_PATH": str(tmp_path)})
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["type"] == "ConfigError"


def test_a_user_profile_without_rates_or_access_says_what_to_add(cnn, tmp_path):
    """It was 'device or runtime unavailable' (exit 6) for what is an incomplete file."""
    (tmp_path / "bare.toml").write_text('description = "my board"\n')
    r = edgekit("profile", str(cnn), "--device", "bare", "--json", cwd=tmp_path,
                env={"EDGEKIT_DEVICE_PATH": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    msg = json.loads(r.stdout)["error"]["message"]
    assert "bare.toml" in msg and "peak_fp32_gops" in msg and "[access]" in msg


# ---------------------------------------------------------------- remote artifacts with sidecar files

def test_ssh_sends_external_data_named_with_spaces_and_unicode(sshd, cnn, tmp_path):  # noqa: F811
    """ONNX external data named 'poids ü $(id).data' (next to the model, as onnx.save writes it) was refused as
    'missing or not a plain file name': only [A-Za-z0-9._-] could travel. The name never reaches a shell (scp
    carries it; only ONNX Runtime reads it), so any one-component name goes; a folder or a missing file is named."""
    from edgekit.errors import UsageError

    model = onnx.load(str(cnn))
    path = tmp_path / "mon modèle.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="poids ü '$(touch PWNED)'.data", size_threshold=0)
    res = profile_artifact(path, sshd.url, runs=2, warmup=0, options={"remote_python": sys.executable})
    assert res["complete"] is True and res["runs"] == 2
    assert not list(Path("/tmp").glob("edgekit.*/PWNED")) and not list(Path.home().glob("PWNED"))
    (tmp_path / "poids ü '$(touch PWNED)'.data").unlink()
    with pytest.raises(UsageError, match="is missing"):
        profile_artifact(path, sshd.url, runs=1, options={"remote_python": sys.executable})
    (tmp_path / "w").mkdir()
    onnx.save(onnx.load(str(cnn)), str(tmp_path / "sub.onnx"), save_as_external_data=True, location="w/sub.data",
              size_threshold=0)
    with pytest.raises(UsageError, match="in another folder"):
        profile_artifact(tmp_path / "sub.onnx", sshd.url, runs=1, options={"remote_python": sys.executable})


def test_an_option_of_another_runtime_is_not_dropped_silently(tmp_path):
    """`--provider CUDA` on a .tflite (or --no-xnnpack on an OpenVINO IR) measured the CPU without a word."""
    from profile_models import make_tflite

    model = make_tflite(tmp_path / "m.tflite")
    r = edgekit("profile", str(model), "--runs", "2", "--warmup", "0", "--provider", "CUDA", "--hint", "throughput",
                "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--provider applies to ONNX Runtime only" in r.stderr and "--hint applies to OpenVINO only" in r.stderr
    assert json.loads(r.stdout)["backend"] == "litert"  # stdout: still exactly the one result object
    r = edgekit("profile", str(model), "--runs", "2", "--warmup", "0", "--json", cwd=tmp_path)
    assert "warning" not in r.stderr  # the defaults (--hint latency, --xnnpack) are not options asked for


def test_a_device_profile_that_cannot_be_found_says_why(cnn, tmp_path, monkeypatch):
    """`--device my/pi.toml` (a typo in the path) and a $EDGEKIT_DEVICE_PATH naming no folder both ended in
    "unknown device 'my/pi.toml'" / "unknown device 'mydev'", with no word of the file or folder."""
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="device profile file my/pi.toml not found"):
        profile_artifact(cnn, "my/pi.toml")
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path / "devics"))
    with pytest.raises(UsageError, match="EDGEKIT_DEVICE_PATH names no such folder: .*devics"):
        profile_artifact(cnn, "mydev")


def test_each_exit_code_of_the_profile_readme_is_returned(cnn, tmp_path):
    """edgekit/profile/README.md lists the exit code of each failure class a build script meets; one real case
    of each row (2, 4, 6, 7) returns it, with one JSON error object on stdout."""
    from sshd import free_port

    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", (ROOT / "edgekit/profile/README.md").read_text(), re.M))
    custom = tmp_path / "custom.onnx"
    graph = helper.make_graph([helper.make_node("FooOp", ["x"], ["y"], domain="com.acme")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])
    model.ir_version = 8
    onnx.save(model, str(custom))
    cases = {
        "2": (["profile", str(tmp_path / "nope.onnx")], {}),
        "4": (["profile", str(custom)], {}),
        "6": (["profile", str(cnn), "--device", f"ssh://nobody@127.0.0.1:{free_port()}"], {}),
        "7": (["profile", str(cnn), "--device", "ssh://pi@board"], {"PATH": str(tmp_path)}),  # no ssh client
    }
    assert set(cases) <= set(rows)
    for code, (args, env) in cases.items():
        r = edgekit(*args, "--runs", "1", "--json", cwd=tmp_path, env=env)
        assert r.returncode == int(code), (code, r.stderr)
        assert json.loads(r.stdout)["error"]["exit_code"] == int(code) and "Traceback" not in r.stderr


def test_a_remote_python_that_is_not_one_is_named(sshd, cnn):  # noqa: F811
    """--remote-python pointing at something that is not a Python (a wrapper script, /bin/true) gave 'the runner
    stopped (exit 0): exit 0' with an empty partial result, as if a run had been cut short."""
    from edgekit.errors import DeviceError

    for program, said in (("/bin/true", "printing nothing"), ("/bin/echo", "it printed: runner.py --model")):
        with pytest.raises(DeviceError, match="did not run edgekit's runner") as info:
            profile_artifact(cnn, sshd.url, runs=1, options={"remote_python": program})
        assert said in str(info.value) and not isinstance(info.value, RemoteRunError)


def _chain(path: Path, n: int) -> Path:
    """x[1, 16] -> n MatMuls (n layers no runtime fuses) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(np.float32), f"w{i}")
             for i in range(n)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}" if i < n - 1 else "y"],
                              name=f"mm{i}") for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("device", ["local", "raspberry-pi-5"])
def test_per_layer_top_shows_as_many_layers_as_asked(tmp_path, device):
    """--top 14 showed 10 rows (the JSON's own top-10 list), an estimate's table said 'mean of 0 runs', and
    layers of a few microseconds printed as 0.000 ms."""
    model = _chain(tmp_path / "chain.onnx", 14)
    r = edgekit("profile", str(model), "--device", device, "--per-layer", "--top", "14", "--runs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = r.stdout[r.stdout.index("per-layer"):]
    assert len(re.findall(r"^ +[\d.]+ +[\d.]+%  MatMul ", table, re.M)) == 14
    assert "mean of 0 runs" not in table and "   0.000 " not in table


def test_an_onnx_model_without_its_external_data_is_bad_input(cnn, tmp_path):
    """An .onnx copied without its external data file: `profile` said 'unsupported model' (exit 4, ONNX Runtime's
    'External data path validation failed') and `inspect` crashed (internal error, FileNotFoundError)."""
    path = tmp_path / "model with data.onnx"
    onnx.save(onnx.load(str(cnn)), str(path), save_as_external_data=True, location="weights.data", size_threshold=0)
    (tmp_path / "weights.data").unlink()
    for command in ("profile", "inspect"):
        r = edgekit(command, str(path), "--json", cwd=tmp_path)
        assert r.returncode == 2, (command, r.stderr)
        err = json.loads(r.stdout)["error"]
        assert err["type"] == "ModelLoadError" and "external data file 'weights.data' is missing" in err["message"]


def test_litert_per_layer_on_a_device_without_the_tflite_schema(sshd, tmp_path):  # noqa: F811
    """A device with tflite-runtime (Raspberry Pi / Jetson setups; measured with tflite-runtime 2.14 on Python
    3.8) has no TFLite flatbuffer schema: the runner could not take the model apart, and --per-layer gave only
    'per-op timing unavailable (ImportError ...)'. The one-op models are now made on the host and sent along.
    The device here is this machine with the schema module hidden from its Python."""
    from profile_models import make_tflite

    blocker = tmp_path / "no_schema"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.endswith('schema_py_generated'):\n"
        "            raise ImportError('no TFLite schema on this device')\n"
        "sys.meta_path.insert(0, _Hide())\n")
    python = tmp_path / "device python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH='{blocker}' exec '{sys.executable}' \"$@\"\n")
    python.chmod(0o755)
    model = make_tflite(tmp_path / "m.tflite")
    res = profile_artifact(model, sshd.url, runs=2, warmup=0, per_layer=True, options={"remote_python": str(python)})
    layers = res["layers"]
    assert "note" not in layers, layers.get("note")
    assert set(layers["by_op_type"]) == {"FULLY_CONNECTED", "RELU"} and layers["layers"] == 2


def test_a_string_input_is_an_unsupported_model_not_an_internal_error(tmp_path):
    """An ONNX graph taking strings (a tokenizer in the graph) crashed the profile: internal error, exit 1,
    "data type 'tensor(string)' not understood"."""
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["y"])], "g",
                              [helper.make_tensor_value_info("text", TensorProto.STRING, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "strings.onnx"))
    r = edgekit("profile", str(tmp_path / "strings.onnx"), "--json", cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    assert "input 'text' is of type tensor(string)" in json.loads(r.stdout)["error"]["message"]
