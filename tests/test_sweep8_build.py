"""Robustness sweep of `edgekit build` / `convert` / `profile` / `inspect` / `cache` as app build scripts and
device-profiling users drive them: damaged cache and manifest files, stale manifest figures, the cache key's
view of a model's files, interrupted and concurrent builds. Tiny models made here (onnx.helper), real runtimes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/sshd.py


def edgekit(*args: str, cwd: Path, cache: Path | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true", EDGEKIT_CACHE_DIR=str(cache or cwd / ".cache"))
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, **kw)


def make_mlp(path: Path, seed: int = 0, n_in: int = 6) -> Path:
    """x[1, n_in] -> MatMul -> Add -> Relu -> MatMul -> y[1, 3]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (n_in, 8)), ("B1", (8,)), ("W2", (8, 3)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "B1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]), helper.make_node("MatMul", ["h3", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


CONFIG = """
[build]
output = "out"

[[models]]
name = "m"
source = "mlp.onnx"
targets = ["onnxruntime"]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """One cold build of a one-model config; tests copy the project or damage the cache after it."""
    root = tmp_path_factory.mktemp("sweep8")
    proj = root / "proj"
    proj.mkdir()
    make_mlp(proj / "mlp.onnx")
    (proj / "edgekit.toml").write_text(CONFIG)
    proc = edgekit("build", cwd=proj, cache=root / "cache")
    assert proc.returncode == 0, proc.stderr
    return proj, root / "cache"


def _entry_json(cache: Path) -> Path:
    (entry,) = (cache / "entries").iterdir()
    return entry / "entry.json"


@pytest.mark.parametrize("damage", ["null", "[]", '{"files": 3}', '{"target": "onnxruntime", "files": [{"x": 1}]}',
                                    '{"target": "onnxruntime", "files": []}'])
def test_a_damaged_cache_entry_json_is_rebuilt_not_a_crash(damage: str, project, tmp_path: Path) -> None:
    proj, cache = project
    shutil.copytree(cache, tmp_path / "cache")
    shutil.copytree(proj, tmp_path / "proj")
    _entry_json(tmp_path / "cache").write_text(damage)
    proc = edgekit("build", "--json", cwd=tmp_path / "proj", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["built"] == 1 and data["cached"] == 0
    assert json.loads(_entry_json(tmp_path / "cache").read_text())["files"][0]["path"] == "m.onnxruntime.onnx"


@pytest.mark.parametrize("damage", ["list", "records"])
def test_a_damaged_fingerprint_memo_is_recomputed(damage: str, project, tmp_path: Path) -> None:
    proj, cache = project
    shutil.copytree(cache, tmp_path / "cache")
    memo = tmp_path / "cache" / "fingerprints.json"
    keys = json.loads(memo.read_text())
    memo.write_text("[]" if damage == "list" else json.dumps({k: [1] for k in keys}))
    proc = edgekit("build", "--json", cwd=proj, cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cached"] == 1  # same bytes, same key: still a cache hit


@pytest.mark.parametrize("artifacts", ["[1]", "5", '[{"model": "old", "files": "abc"}]'])
def test_a_damaged_manifest_in_the_output_folder_does_not_stop_build_or_inspect(artifacts: str, project,
                                                                                   tmp_path: Path) -> None:
    proj, cache = project
    shutil.copytree(proj, tmp_path / "proj")
    manifest = tmp_path / "proj" / "out" / "edgekit-manifest.json"
    good = manifest.read_bytes()
    bad = '{"schema": "edgekit-manifest/1", "artifacts": ' + artifacts + '}'
    manifest.write_text(bad)
    proc = edgekit("inspect", "out/m.onnxruntime.onnx", "--json", cwd=tmp_path / "proj", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inputs"][0]["name"] == "x"
    proc = edgekit("build", cwd=tmp_path / "proj", cache=cache)
    assert proc.returncode == 0, proc.stderr
    assert manifest.read_bytes() == good  # rewritten as the build describes it


def test_inspect_does_not_attach_manifest_figures_to_a_file_replaced_since(project, tmp_path: Path) -> None:
    proj, cache = project
    shutil.copytree(proj, tmp_path / "proj")
    out = tmp_path / "proj" / "out"
    info = json.loads(edgekit("inspect", "out/m.onnxruntime.onnx", "--json", cwd=tmp_path / "proj").stdout)
    assert info["model"] == "m" and info["verification"]["passed"] is True
    # another model written under the same name (a convert into the build's folder)
    proc = edgekit("convert", str(make_mlp(tmp_path / "other.onnx", seed=1, n_in=4)), "-t", "onnxruntime",
                   "--name", "m", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(edgekit("inspect", "out/m.onnxruntime.onnx", "--json", cwd=tmp_path / "proj").stdout)
    assert info["inputs"][0]["shape"] == [1, 4]
    assert "model" not in info and "verification" not in info  # the manifest describes other bytes


def test_onnx_external_data_under_any_name_is_part_of_the_cache_key(tmp_path: Path) -> None:
    """The data file is whatever the model's `location` says (here weights.bin, not mlp.onnx.data): a build
    after the weights changed must rebuild, not install the artifact of the old weights."""
    proj = tmp_path / "proj"
    proj.mkdir()

    def save(seed: int, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        m = onnx.load(str(make_mlp(tmp_path / f"m{seed}.onnx", seed=seed)))
        onnx.save(m, str(folder / "mlp.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights.bin", size_threshold=0)

    save(0, proj)
    (proj / "edgekit.toml").write_text(CONFIG)
    first = edgekit("build", "--json", cwd=proj)
    assert first.returncode == 0, first.stderr
    old = (proj / "out" / "m.onnxruntime.onnx").read_bytes()
    graph = (proj / "mlp.onnx").read_bytes()
    save(1, tmp_path / "other")  # same shapes, same offsets, other weights
    shutil.copy(tmp_path / "other" / "weights.bin", proj / "weights.bin")
    assert (proj / "mlp.onnx").read_bytes() == graph
    second = edgekit("build", "--json", cwd=proj)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["built"] == 1 and "source changed" in second.stderr
    assert (proj / "out" / "m.onnxruntime.onnx").read_bytes() != old


def test_a_factory_source_key_follows_the_project_modules_it_imports(tmp_path: Path, monkeypatch) -> None:
    """`nets_sw8:small` builds from blocks in a sibling module and a package (relative imports): editing those
    changes the model, so it must change the cache key (it kept the old artifact); editing a file the factory
    does not import, or an installed package, must not."""
    from edgekit.build.cache import source_fingerprint

    (tmp_path / "nets_sw8.py").write_text("import torch.nn as nn\nfrom blocks_sw8 import WIDTH\n"
                                          "import parts_sw8.heads\n\ndef small():\n    return nn.Linear(3, WIDTH)\n")
    (tmp_path / "blocks_sw8.py").write_text("WIDTH = 4\n")
    (tmp_path / "parts_sw8").mkdir()
    (tmp_path / "parts_sw8" / "__init__.py").write_text("")
    (tmp_path / "parts_sw8" / "heads.py").write_text("from .acts import ACT\n")
    (tmp_path / "parts_sw8" / "acts.py").write_text("ACT = 'relu'\n")
    (tmp_path / "unrelated_sw8.py").write_text("Z = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_fingerprint("nets_sw8:small")
    (tmp_path / "unrelated_sw8.py").write_text("Z = 2\n")
    assert source_fingerprint("nets_sw8:small") == first
    (tmp_path / "blocks_sw8.py").write_text("WIDTH = 6\n")
    second = source_fingerprint("nets_sw8:small")
    assert second != first
    (tmp_path / "parts_sw8" / "acts.py").write_text("ACT = 'gelu'\n")
    assert source_fingerprint("nets_sw8:small") != second
    assert "nets_sw8" not in sys.modules and "blocks_sw8" not in sys.modules  # read, never imported


def test_concurrent_builds_of_different_models_into_one_folder_keep_every_manifest_record(tmp_path: Path) -> None:
    """make -j with one `edgekit build -m X` rule per model: each build must keep the records the others
    wrote meanwhile (each read the manifest when it started and wrote it back without the others')."""
    proj = tmp_path / "proj"
    proj.mkdir()
    body = "[build]\noutput = \"out\"\n"
    for i in range(3):
        make_mlp(proj / f"m{i}.onnx", seed=i)
        body += f'\n[[models]]\nname = "m{i}"\nsource = "m{i}.onnx"\ntargets = ["onnxruntime"]\n'
    (proj / "edgekit.toml").write_text(body)
    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true", EDGEKIT_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-m", "edgekit", "build", "-m", f"m{i}"], cwd=proj, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    manifest = json.loads((proj / "out" / "edgekit-manifest.json").read_text())
    assert sorted(r["model"] for r in manifest["artifacts"]) == ["m0", "m1", "m2"]


def _read_only_folder(path: Path) -> bool:
    """Make `path` unwritable: permission bits, or (as root, who ignores them) the immutable flag."""
    path.mkdir()
    path.chmod(0o555)
    try:
        (path / "probe").touch()
    except OSError:
        return True
    (path / "probe").unlink()
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0 if shutil.which(
        "chattr") else False


@pytest.mark.parametrize("where", ["file-in-the-way", "read-only", "read-only-cache"])
def test_an_unwritable_output_folder_or_cache_is_bad_input_before_any_work(where: str, project, tmp_path: Path) -> None:
    proj, cache = project
    out, cache_dir = proj / "out", tmp_path / "cache"
    if where == "file-in-the-way":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "models"
    elif where == "read-only" and not _read_only_folder(out := tmp_path / "ro"):
        pytest.skip("cannot make a read-only folder here")
    elif where == "read-only-cache" and not _read_only_folder(cache_dir := tmp_path / "ro"):
        pytest.skip("cannot make a read-only folder here")
    try:
        proc = edgekit("build", "-o", str(out), "--no-cache", "--json", cwd=proj, cache=cache_dir)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "ro")], capture_output=True)
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["type"] == "UsageError" and "cannot write to" in err["message"]
    assert "building" not in proc.stderr  # said before the work, not after it


def test_a_cosine_floor_of_one_is_met_by_a_bit_exact_artifact(project, tmp_path: Path) -> None:
    """fp32 ONNX Runtime of an ONNX source is bit-exact (max abs error 0): `tolerances = {cosine = 1.0}` must
    pass; the cosine of two equal arrays rounded to 0.9999999999999998 and the build failed 'cosine 1 < 1'."""
    from edgekit.verify import cosine

    x = np.random.default_rng(0).standard_normal(1000)
    assert cosine(x, x) == 1.0 and -1.0 <= cosine(x, -x) <= 1.0
    proj, _ = project
    shutil.copytree(proj, tmp_path / "proj")
    toml = tmp_path / "proj" / "edgekit.toml"
    toml.write_text(CONFIG + "tolerances = {cosine = 1.0, max_abs_error = 0.0}\n")
    proc = edgekit("build", "--json", cwd=tmp_path / "proj", cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["artifacts"][0]["verification"]["cosine"] == 1.0


@pytest.mark.parametrize("tol", ["cosine = 1.5", "top1_agreement = 2"])
def test_a_floor_above_one_is_a_config_error(tol: str, project, tmp_path: Path) -> None:
    proj, cache = project
    shutil.copytree(proj, tmp_path / "proj")
    (tmp_path / "proj" / "edgekit.toml").write_text(CONFIG + f"tolerances = {{{tol}}}\n")
    proc = edgekit("build", "--json", cwd=tmp_path / "proj", cache=cache)
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["type"] == "ConfigError" and "<= 1.0 for '" + tol.split()[0] + "'" in err["message"]


def test_ssh_interrupted_while_the_device_makes_its_folder_leaves_no_folder(tmp_path_factory, monkeypatch) -> None:
    """Ctrl-C/SIGTERM arriving after the device made the run's temp folder but before its name came back: the
    folder must still be removed (with `mktemp -d` its name was never known here, so it stayed on the device)."""
    import glob

    from sshd import start_sshd, stop_sshd

    from edgekit.profile.devices import resolve_device
    from edgekit.profile.ssh import SshDevice

    server = start_sshd(tmp_path_factory.mktemp("sshd8"))
    monkeypatch.setenv("EDGEKIT_SSH_CONFIG", str(server.client_config))
    try:
        dev = SshDevice.from_target(resolve_device(server.url), timeout=60)
        real_check = dev._check

        def answer_lost(argv, what, timeout=None):  # the remote command ran; the signal came before its answer
            real_check(argv, what, timeout)
            raise KeyboardInterrupt

        before = set(glob.glob("/tmp/edgekit.*"))
        monkeypatch.setattr(dev, "_check", answer_lost)
        with pytest.raises(KeyboardInterrupt):
            dev.mkdtemp()
        assert set(glob.glob("/tmp/edgekit.*")) == before
        monkeypatch.setattr(dev, "_check", real_check)
        made = dev.mkdtemp()  # the normal path: a private folder, removed by cleanup
        assert Path(made).is_dir() and (Path(made).stat().st_mode & 0o777) == 0o700
        dev.cleanup(made)
        assert not Path(made).exists()
    finally:
        stop_sshd(server)


def _tflite_bytes(tmp_path: Path) -> bytes:
    """A real TFLite file of the tiny MLP (edgekit's own converter)."""
    proc = edgekit("convert", str(make_mlp(tmp_path / "mlp.onnx")), "-t", "tflite", "-o", str(tmp_path / "t"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / "t" / "mlp.tflite").read_bytes()


def _damaged_tflites(good: bytes) -> dict[str, bytes]:
    """Files that keep the TFL3 identifier but are damaged in ways flatbuffers only notices when walked."""
    root = int.from_bytes(good[:4], "little")
    vtable = root - int.from_bytes(good[root:root + 4], "little", signed=True)
    out = {"truncated": good[: len(good) // 2], "header-only": good[:8] + b"\0" * 4}
    for field in (1, 2):  # the Model's operator_codes and subgraphs vectors pointing past the end
        at = vtable + 4 + 2 * field
        if at + 2 <= root and int.from_bytes(good[at:at + 2], "little"):
            bad = bytearray(good)
            bad[root + int.from_bytes(good[at:at + 2], "little"): root + int.from_bytes(good[at:at + 2], "little") + 4] \
                = (0x7FFFFFF0).to_bytes(4, "little")
            out[f"field{field}"] = bytes(bad)
    return out


def test_damaged_or_foreign_tflite_files_are_bad_input_for_inspect_and_estimate(tmp_path: Path) -> None:
    """Exit code 2 with one line, never an internal error; and a file that is not TFLite is never estimated."""
    from edgekit.errors import ModelLoadError
    from edgekit.inspect import inspect_artifact
    from edgekit.profile import profile_artifact

    good = _tflite_bytes(tmp_path)
    cases = _damaged_tflites(good)
    cases["foreign"] = good[:4] + b"XXXX" + good[8:]  # same bytes, another file identifier
    for name, data in cases.items():
        f = tmp_path / f"{name}.tflite"
        f.write_bytes(data)
        with pytest.raises(ModelLoadError, match="TFLite flatbuffer"):
            inspect_artifact(f)
        with pytest.raises(ModelLoadError, match="TFLite flatbuffer"):
            profile_artifact(f, "raspberry-pi-5")
    proc = edgekit("profile", str(tmp_path / "truncated.tflite"), "--estimate", "--json", cwd=tmp_path)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["type"] == "ModelLoadError"


def test_an_onnx_file_whose_names_are_not_utf8_is_bad_input_for_inspect(tmp_path: Path) -> None:
    from edgekit.errors import ModelLoadError
    from edgekit.inspect import inspect_artifact

    data = make_mlp(tmp_path / "mlp.onnx").read_bytes()
    f = tmp_path / "bad.onnx"
    f.write_bytes(data.replace(b"MatMul", b"\xffatMul", 1))  # parses (proto2 strings are not checked)
    with pytest.raises(ModelLoadError, match="corrupt ONNX model"):
        inspect_artifact(f)


def test_cache_clean_while_a_build_installs_rebuilds_instead_of_crashing(project, tmp_path: Path, monkeypatch) -> None:
    """`edgekit cache clean` (a CI cleanup step, another terminal) can remove an entry between the build's lookup
    and its install: the build must rebuild it (it died with FileNotFoundError, exit 1)."""
    from edgekit.build import Cache, load_config, run_build
    from edgekit.build import runner as runner_mod

    proj, cache = project
    shutil.copytree(proj, tmp_path / "proj")
    shutil.copytree(cache, tmp_path / "cache")
    (tmp_path / "proj" / "out" / "m.onnxruntime.onnx").unlink()  # so the install must copy from the entry
    store = Cache(tmp_path / "cache")
    real = runner_mod.check_budgets

    def clean_meanwhile(*args, **kw):
        store.clean()
        return real(*args, **kw)

    monkeypatch.setattr(runner_mod, "check_budgets", clean_meanwhile)
    summary = run_build(load_config(tmp_path / "proj" / "edgekit.toml"), cache=store)
    assert summary["built"] == 1
    installed = tmp_path / "proj" / "out" / "m.onnxruntime.onnx"
    assert installed.read_bytes() == (proj / "out" / "m.onnxruntime.onnx").read_bytes()


def test_cache_info_and_clean_with_a_stray_file_among_the_entries(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "entries").mkdir(parents=True)
    (cache / "entries" / "stray.txt").write_text("x")
    (cache / "entries" / "half").mkdir()
    info = edgekit("cache", "info", "--json", cwd=tmp_path, cache=cache)
    assert info.returncode == 0, info.stderr
    assert {i["key"]: i["complete"] for i in json.loads(info.stdout)["items"]} == {"half": False, "stray.txt": False}
    clean = edgekit("cache", "clean", "--json", cwd=tmp_path, cache=cache)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["removed"] == 2 and not list((cache / "entries").iterdir())


def test_two_models_that_would_write_the_same_file_are_a_config_error(tmp_path: Path) -> None:
    """Model 'x' as int8 TFLite and model 'x.int8' as fp32 TFLite are both x.int8.tflite: the build installed one
    over the other (exit 0, a manifest with two records for one file); now it says so and installs nothing."""
    proj = tmp_path / "proj"
    proj.mkdir()
    make_mlp(proj / "mlp.onnx")
    np.save(proj / "calib.npy", np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32))
    (proj / "edgekit.toml").write_text(
        '[[models]]\nname = "x"\nsource = "mlp.onnx"\ntargets = ["tflite"]\nprecision = "int8"\n'
        'calibration = "calib.npy"\n\n[[models]]\nname = "x.int8"\nsource = "mlp.onnx"\ntargets = ["tflite"]\n')
    proc = edgekit("build", "--json", cwd=proj)
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["type"] == "ConfigError" and "both produce x.int8.tflite" in err["message"]
    assert not (proj / "edgekit-out").exists()
