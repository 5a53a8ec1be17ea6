"""Sweep 10: edgekit as app build scripts (Gradle, CMake, Xcode, Make) drive it: stdout that is exactly one JSON
object whatever the model's code prints, artifacts that do not depend on the machine's thread settings, a cache
key that follows edgekit's own code, and no trace of failed runs. Small torch models (fixtures/
sweep10_hygiene_models.py), real runtimes, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def edgekit(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(FIXTURES)]), "CI": "true",
            "EDGEKIT_CACHE_DIR": str(cwd / ".cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)


CHATTY_CONFIG = """
[[models]]
name = "chatty"
source = "sweep10_hygiene_models:chatty"
targets = ["onnxruntime"]
input_shapes = { image = "1x3x16x16" }
"""


@pytest.mark.parametrize("command", ["convert", "build"])
def test_json_stdout_is_one_object_when_the_model_prints(command: str, tmp_path: Path) -> None:
    """A factory that prints at import and in forward() (Python print and raw writes to fd 1, as native code
    does) put its text before the JSON object: a build script's json.loads failed on 'forward (1, 3, 16, 16)'."""
    if command == "convert":
        args = ["convert", "sweep10_hygiene_models:chatty", "--input-shape", "image=1x3x16x16", "-t", "onnxruntime",
                "-o", "out", "--json"]
    else:
        (tmp_path / "edgekit.toml").write_text(CHATTY_CONFIG)
        args = ["build", "--json"]
    res = edgekit(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)  # exactly one object, nothing else
    assert data["artifacts"][0]["target"] == "onnxruntime"
    for said in ("building the chatty model", "forward (1, 3, 16, 16)", "native: forward"):
        assert said in res.stderr  # not lost: on stderr, with the progress lines


def test_json_error_object_stays_alone_on_stdout_when_the_model_prints(tmp_path: Path) -> None:
    res = edgekit("convert", "sweep10_hygiene_models:chatty", "--input-shape", "image=1x3x16x16", "-t", "onnxruntime",
                  "--calibration", "missing.npz", "-o", "out", "--json", cwd=tmp_path)  # bad input after the load
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout)["error"]["exit_code"] == 2
    assert "building the chatty model" in res.stderr


def test_json_in_process_through_click_testing_still_reaches_its_stdout() -> None:
    """The reservation works on fd 1 only when sys.stdout is fd 1: an in-memory stdout (click's CliRunner, an
    app embedding the CLI) still receives the object."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    res = CliRunner().invoke(cli, ["targets", "--json"])
    assert res.exit_code == 0
    assert {t["name"] for t in json.loads(res.stdout)["targets"]} >= {"onnxruntime", "arm"}


def _mlp_onnx(path: Path, seed: int = 0) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (6, 8)), ("B1", (8,)), ("W2", (8, 3)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "B1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]), helper.make_node("MatMul", ["h3", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_changed_edgekit_source_rebuilds_and_a_touched_one_does_not(tmp_path: Path) -> None:
    """The key held edgekit's version string, which a source install (the README's `pip install .`, a git URL)
    keeps from commit to commit: after pulling a fixed lowering, `edgekit build` returned the old artifacts as
    'cached'. The key now covers edgekit's .py files (by content: a touched file changes nothing)."""
    import shutil

    install = tmp_path / "install"  # a copy of edgekit, as a source install of another commit would be
    install.mkdir()
    for name in ("edgekit", "targets", "devices", "calibration"):
        shutil.copytree(ROOT / name, install / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", install)
    proj = tmp_path / "proj"
    proj.mkdir()
    _mlp_onnx(proj / "mlp.onnx")
    (proj / "edgekit.toml").write_text('[[models]]\nname = "m"\nsource = "mlp.onnx"\ntargets = ["onnxruntime"]\n')

    def build() -> dict:
        env = {"PYTHONPATH": str(install), "EDGEKIT_CACHE_DIR": str(tmp_path / "cache")}
        res = edgekit("build", "--json", cwd=proj, env=env)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout) | {"stderr": res.stderr}

    assert build()["built"] == 1
    lowering = install / "edgekit" / "backends" / "onnxruntime.py"
    os.utime(lowering)  # a checkout that rewrote the same bytes
    assert build()["cached"] == 1
    lowering.write_text(lowering.read_text() + "\n# the next commit's fix\n")
    again = build()
    assert again["built"] == 1 and "(edgekit changed)" in again["stderr"]
    assert build()["cached"] == 1


def test_pruned_distilled_int8_artifacts_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """torch splits its reductions by thread count, so pruning's refit and distillation gave other float32 weights
    on 1 and 2 threads (OMP_NUM_THREADS, a CI runner with other cores): other bytes from the same inputs. They run
    on EDGEKIT_TORCH_THREADS threads (default 1) whatever the machine says."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", image=rng.standard_normal((48, 3, 16, 16)).astype(np.float32))
    hashes = []
    for threads in ("1", "2"):
        out = tmp_path / f"out{threads}"
        res = edgekit("convert", "sweep10_hygiene_models:se_net", "--input-shape", "image=1x3x16x16", "-t", "arm",
                      "--calibration", "calib.npz", "--prune-macs", "0.4", "--allocation", "uniform",
                      "--distill-steps", "6", "-o", str(out), "--json", cwd=tmp_path,
                      env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
        assert res.returncode == 0, res.stderr
        hashes.append({a["target"]: a["file_sha256"] for a in json.loads(res.stdout)["artifacts"]})
    assert hashes[0] == hashes[1]


def test_the_torch_thread_setting_is_a_build_input(tmp_path: Path, monkeypatch) -> None:
    from edgekit.build.cache import cache_key, key_parts
    from edgekit.build.config import ModelConfig
    from edgekit.errors import UsageError

    model = ModelConfig(name="m", source=str(_mlp_onnx(tmp_path / "m.onnx")), targets=["onnxruntime"],
                        options={"prune": 0.5})
    monkeypatch.delenv("EDGEKIT_TORCH_THREADS", raising=False)
    default = cache_key(key_parts(model, "onnxruntime"))
    monkeypatch.setenv("EDGEKIT_TORCH_THREADS", "1")
    assert cache_key(key_parts(model, "onnxruntime")) == default  # the default, said out loud
    monkeypatch.setenv("EDGEKIT_TORCH_THREADS", "4")
    assert cache_key(key_parts(model, "onnxruntime")) != default
    monkeypatch.setenv("EDGEKIT_TORCH_THREADS", "many")
    with pytest.raises(UsageError, match="EDGEKIT_TORCH_THREADS"):
        key_parts(model, "onnxruntime")


def test_convert_refuses_to_write_its_artifact_over_the_source_model(tmp_path: Path) -> None:
    """Re-converting an earlier artifact in its own folder (`-o .` and the same name) renamed the new file over
    the source: the user's model was replaced without a word."""
    src = _mlp_onnx(tmp_path / "m.onnxruntime.onnx")
    before = src.read_bytes()
    res = edgekit("convert", src.name, "-t", "onnxruntime", "--name", "m", "-o", ".", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "would replace the model source" in json.loads(res.stdout)["error"]["message"]
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".cache") == [src.name]  # no temp folder left


def test_build_refuses_to_install_over_a_source_kept_in_the_output_folder(tmp_path: Path) -> None:
    """A source in the output folder under an artifact's name was overwritten by each build, which then saw a
    changed source and rebuilt: never a cached build, and the original model gone after the first."""
    src = _mlp_onnx(tmp_path / "m.onnxruntime.onnx")
    before = src.read_bytes()
    (tmp_path / "edgekit.toml").write_text('[build]\noutput = "."\n\n[[models]]\nname = "m"\n'
                                           'source = "m.onnxruntime.onnx"\ntargets = ["onnxruntime"]\n')
    res = edgekit("build", "--json", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "would replace the model source" in json.loads(res.stdout)["error"]["message"]
    assert src.read_bytes() == before and not (tmp_path / "edgekit-manifest.json").exists()


def test_a_rebuild_of_identical_artifacts_writes_an_identical_manifest(tmp_path: Path) -> None:
    """The manifest carried the stages' wall-clock durations (quantization.calibration.seconds, ...): a --no-cache
    rebuild or a CI cold build of byte-identical artifacts rewrote it, and make/CMake/Gradle repackaged the app."""
    import numpy as np

    _mlp_onnx(tmp_path / "mlp.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((40, 1, 6)).astype(np.float32))
    (tmp_path / "edgekit.toml").write_text('[[models]]\nname = "m"\nsource = "mlp.onnx"\ntargets = ["onnxruntime"]\n'
                                           'precision = "int8"\ncalibration = "calib.npz"\n')
    manifests = []
    for out in ("a", "b"):
        res = edgekit("build", "--no-cache", "-o", out, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        manifests.append(json.loads((tmp_path / out / "edgekit-manifest.json").read_text()))
    text = json.dumps(manifests[0])
    assert '"seconds"' not in text and manifests[0]["artifacts"][0]["quantization"]["calibration"]["samples"] > 0
    for m in manifests:  # edgekit's code is part of the key: a working tree edited meanwhile changes it, not bytes
        for r in m["artifacts"]:
            r.pop("cache_key")
    assert manifests[0] == manifests[1]
    assert (tmp_path / "a" / "m.onnxruntime.int8.onnx").read_bytes() == (tmp_path / "b" / "m.onnxruntime.int8.onnx").read_bytes()


def test_a_link_to_the_source_where_the_artifact_goes_is_replaced_not_its_target(tmp_path: Path) -> None:
    src = _mlp_onnx(tmp_path / "m.onnx")
    before = src.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.onnxruntime.onnx").symlink_to(src)  # renaming over a link replaces the link: nothing to refuse
    res = edgekit("convert", str(out / "m.onnxruntime.onnx"), "-t", "onnxruntime", "--name", "m", "-o", "out",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (out / "m.onnxruntime.onnx").is_symlink() and src.read_bytes() == before


def test_an_interrupt_between_two_renames_of_the_commit_leaves_the_folder_as_it_was(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """Ctrl-C or a build system's SIGTERM (raised as KeyboardInterrupt) between the renames of an OpenVINO pair
    left the new .xml beside the old .bin: a model that no longer loads, and nothing said so. Only a failed
    rename (OSError) was undone."""
    from types import SimpleNamespace

    from edgekit import pipeline

    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    for name in ("m.openvino.xml", "m.openvino.bin"):
        (out / name).write_bytes(b"old " + name.encode())
    staged = []
    for name in ("m.openvino.xml", "m.openvino.bin", "m.onnxruntime.onnx"):
        (work / name).write_bytes(b"new " + name.encode())
        staged.append((work / name, out / name))
    real, signals = os.replace, [15]

    def interrupted(src, dst):
        result = real(src, dst)
        if Path(dst).name == "m.openvino.xml" and signals:
            raise KeyboardInterrupt(signals.pop())  # the SIGTERM handler's exception, right after this rename
        return result

    monkeypatch.setattr(pipeline.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.commit(SimpleNamespace(staged=staged, work=work))
    assert sorted(p.name for p in out.iterdir()) == ["m.openvino.bin", "m.openvino.xml"]
    assert (out / "m.openvino.xml").read_bytes() == b"old m.openvino.xml"


def test_an_interrupted_build_install_leaves_the_output_folder_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """The install copied file after file into the output folder: Ctrl-C or a cancelled Gradle/Xcode step
    between an OpenVINO .xml and its .bin left a new .xml beside the old .bin (a pair that does not load) under
    the old manifest. Copies are made beside their destinations first, then renamed all or none."""
    from edgekit.build import files, load_config, run_build
    from edgekit.build.cache import Cache

    _mlp_onnx(tmp_path / "mlp.onnx", seed=0)
    (tmp_path / "edgekit.toml").write_text('[build]\noutput = "out"\n\n[[models]]\nname = "m"\nsource = "mlp.onnx"\n'
                                           'targets = ["openvino"]\n')
    cache = Cache(tmp_path / "cache")
    run_build(load_config(tmp_path / "edgekit.toml"), cache=cache)
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"m.openvino.xml", "m.openvino.bin"} <= set(before)

    _mlp_onnx(tmp_path / "mlp.onnx", seed=1)  # new weights: a new .bin (and .xml) to install
    real, signals = os.replace, [2]

    def interrupted(src, dst):
        result = real(src, dst)
        if Path(dst).parent == out and signals:
            raise KeyboardInterrupt(signals.pop())  # Ctrl-C right after the first file is in place
        return result

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_build(load_config(tmp_path / "edgekit.toml"), cache=cache)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new half, no temp or backup file
    monkeypatch.setattr(files.os, "replace", real)
    summary = run_build(load_config(tmp_path / "edgekit.toml"), cache=cache)  # the next build installs the new pair
    assert summary["cached"] == 1 and (out / "m.openvino.bin").read_bytes() != before["m.openvino.bin"]


def test_a_failed_run_whose_new_output_folder_another_run_just_entered_keeps_its_own_error(tmp_path: Path,
                                                                                            monkeypatch) -> None:
    """Two parallel converts into a folder neither found: the one that fails removes the folder it created when
    empty, and another process entering it between the check and the removal made the rmdir raise; the
    OSError replaced the run's own error (exit 1 'internal error' instead of 2, 3 or 130)."""
    from edgekit import api, pipeline
    from edgekit.errors import DataError

    src = _mlp_onnx(tmp_path / "m.onnx")
    out = tmp_path / "fresh"

    def entered(self):  # the other process's temp folder appears just before the rmdir
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(pipeline.Path, "rmdir", entered)
    with pytest.raises(DataError):
        api.convert(str(src), ["onnxruntime"], out, calibration=str(tmp_path / "missing.npz"))


def test_saving_a_pruned_program_leaves_another_runs_temp_file_alone(tmp_path: Path) -> None:
    """`edgekit distill -o small.pt2` wrote through the fixed temp name .small.tmp.pt2: two runs saving to one path
    (parallel build tasks) truncated and renamed each other's half-written file."""
    import torch

    from edgekit.prune import save_pruned

    other = tmp_path / ".small.tmp.pt2"
    other.write_bytes(b"another run, still writing")
    save_pruned(torch.nn.Linear(4, 2).eval(), {"x": torch.zeros(1, 4)}, tmp_path / "small.pt2")
    assert other.read_bytes() == b"another run, still writing"
    assert torch.export.load(str(tmp_path / "small.pt2")).module()(torch.ones(1, 4)).shape == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".small.tmp.pt2", "small.pt2"]
    assert (tmp_path / "small.pt2").stat().st_mode & 0o777 == 0o644


def _kill_once_exporting(proc: subprocess.Popen) -> None:
    """SIGKILL the edgekit run `proc` (stderr piped, text) once it reports its ONNX export, as an OOM kill would."""
    import signal

    for line in proc.stderr:
        if "exporting to ONNX" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()


def test_the_next_run_removes_the_temp_folder_of_a_killed_run_and_not_a_live_ones(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer during a large model's calibration, a torn-down CI runner) skips all cleanup: the
    run's .edgekit-tmp-* folder, with the hub graph and unverified artifacts, stayed in the output folder for
    good, one more per killed run. Runs lock their folder; the next run removes the ones nobody holds."""
    import fcntl

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(FIXTURES)]), "CI": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "convert", "sweep10_hygiene_models:se_net",
                             "--input-shape", "image=1x3x16x16", "-t", "onnxruntime", "-o", str(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_once_exporting(proc)
    (killed,) = [p.name for p in out.iterdir() if p.name.startswith(".edgekit-tmp-")]

    live = out / ".edgekit-tmp-live"  # a parallel run still working: its lock is held
    live.mkdir()
    fd = os.open(live / ".owner.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = edgekit("convert", str(_mlp_onnx(tmp_path / "m.onnx")), "-t", "onnxruntime", "-o", "out", cwd=tmp_path)
    finally:
        os.close(fd)
    assert res.returncode == 0, res.stderr
    assert "removed 1 temporary folder(s) of killed edgekit runs" in res.stderr
    names = sorted(p.name for p in out.iterdir())
    assert killed not in names and ".edgekit-tmp-live" in names and "m.onnxruntime.onnx" in names


def test_a_killed_build_leaves_no_staging_folder_in_the_cache_after_the_next_build(tmp_path: Path) -> None:
    """A killed `edgekit build` left its staging folder (the conversion's hub graph, unverified artifacts) in the
    cache's tmp/ until an `edgekit cache clean` an hour later; and that clean removed any staging folder older
    than an hour, a live build's too (a long distillation). Build staging folders are locked like convert's."""

    (tmp_path / "edgekit.toml").write_text('[[models]]\nname = "s"\nsource = "sweep10_hygiene_models:se_net"\n'
                                           'targets = ["onnxruntime"]\ninput_shapes = { image = "1x3x16x16" }\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(FIXTURES)]), "CI": "true",
           "EDGEKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "build"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_once_exporting(proc)
    tmp = tmp_path / "cache" / "tmp"
    assert any(tmp.iterdir())  # what the killed build left
    (tmp_path / "edgekit.toml").write_text('[[models]]\nname = "m"\nsource = "m.onnx"\ntargets = ["onnxruntime"]\n')
    _mlp_onnx(tmp_path / "m.onnx")
    res = edgekit("build", cwd=tmp_path, env={"EDGEKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    assert list(tmp.iterdir()) == []
