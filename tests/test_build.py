"""`edgekit build` end to end on zoo:mnist_cnn (fp32 ONNX Runtime + OpenVINO), in real processes:
reproducibility, cache hits without torch, selective rebuilds, budgets, tolerances, a damaged cache,
two concurrent builds, `edgekit cache` and `edgekit inspect` on the result."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

CONFIG = """
[build]
output = "models"

[[models]]
name = "a"
source = "zoo:mnist_cnn"
targets = ["onnxruntime", "openvino"]
precision = "fp32"
calibration_size = 64
{a_extra}

[[models]]
name = "b"
source = "zoo:mnist_cnn"
targets = ["onnxruntime"]
calibration_size = 48
{b_extra}
"""

# Runs the CLI and reports which heavy modules the process imported, on stderr.
PROBE = ("import sys, atexit\n"
         "atexit.register(lambda: sys.stderr.write('MODULES=' + ','.join(m for m in "
         "('torch', 'onnxruntime', 'openvino', 'onnx') if m in sys.modules) + '\\n'))\n"
         "from edgekit.cli import main\nmain(sys.argv[1:])\n")


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def write_config(project: Path, a_extra: str = "", b_extra: str = "") -> None:
    (project / "edgekit.toml").write_text(CONFIG.format(a_extra=a_extra, b_extra=b_extra))


def build(project: Path, cache: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli("build", "--json", *args, cwd=project, env={"EDGEKIT_CACHE_DIR": str(cache), "CI": "true"})
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc, data


def state(data: dict) -> dict[tuple[str, str], bool]:
    """(model, target) -> built in this run."""
    return {(a["model"], a["target"]): not a["cached"] for a in data["artifacts"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One cold build of a two-model config (3 artifacts), shared by the tests below."""
    root = tmp_path_factory.mktemp("build")
    project, cache = root / "project", root / "cache"
    project.mkdir()
    write_config(project)
    proc, data = build(project, cache)
    assert proc.returncode == 0, proc.stderr
    return project, cache, data


def test_cold_build_writes_artifacts_and_manifest(built):
    project, cache, data = built
    assert state(data) == {("a", "onnxruntime"): True, ("a", "openvino"): True, ("b", "onnxruntime"): True}
    out = project / "models"
    manifest = json.loads((out / "edgekit-manifest.json").read_text())
    assert manifest["schema"] == "edgekit-manifest/1" and manifest["config"] == "edgekit.toml"
    assert manifest["runtimes"]["onnxruntime"] and manifest["runtimes"]["openvino"] and manifest["edgekit_version"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.onnxruntime.onnx", "a.openvino.bin", "a.openvino.xml",
                     "b.onnxruntime.onnx", "edgekit-manifest.json"]
    for art in manifest["artifacts"]:
        for f in art["files"]:  # every listed file is there, with the recorded bytes
            assert sha(out / f["path"]) == f["sha256"] and (out / f["path"]).stat().st_size == f["size"]
        assert art["inputs"] == [{"name": "input", "shape": ["batch", 1, 28, 28] if art["format"] == "onnx"
                                  else [None, 1, 28, 28], "dtype": "float32", "layout": "NCHW",
                                  "quantization": None}]
        assert art["outputs"][0]["name"] == "logits" and art["outputs"][0]["shape"][-1] == 10
        assert art["verification"]["passed"] and art["verification"]["max_abs_error"] < 1e-4
        assert art["precision"] == "fp32" and art["cache_key"] and art["source"] == "zoo:mnist_cnn"
    text = (out / "edgekit-manifest.json").read_text()
    assert str(project) not in text and str(cache) not in text  # no absolute paths


def test_warm_build_is_cached_untouched_and_imports_no_torch(built):
    project, cache, _ = built
    out = project / "models"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache), "CI": "true"}
    proc = subprocess.run([sys.executable, "-c", PROBE, "build", "--json"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["built"] == 0 and data["cached"] == 3
    modules = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES="))
    assert modules == "MODULES=", f"a cached build imported {modules}"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rewritten


def test_rebuild_without_cache_is_byte_identical_in_another_folder(built, tmp_path):
    project, cache, _ = built
    proc, data = build(project, cache, "--no-cache", "-o", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    assert data["built"] == 3
    first, again = project / "models", tmp_path / "again"
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:  # every artifact and the manifest, byte for byte
        assert (first / name).read_bytes() == (again / name).read_bytes(), name


def test_changed_input_rebuilds_only_what_it_affects(built, tmp_path):
    project, cache, _ = built
    work = tmp_path / "p"
    work.mkdir()
    write_config(work)
    proc, data = build(work, cache)  # same config in another checkout: all from the cache
    assert data["built"] == 0, proc.stderr
    write_config(work, b_extra="seed = 1")
    proc, data = build(work, cache, "-v")
    assert proc.returncode == 0, proc.stderr
    assert state(data) == {("a", "onnxruntime"): False, ("a", "openvino"): False, ("b", "onnxruntime"): True}
    assert "building b [onnxruntime] (config changed)" in proc.stderr
    # a budget is a check, not an input: changing it rebuilds nothing
    write_config(work, a_extra="max_size_mb = 5.0", b_extra="seed = 1")
    proc, data = build(work, cache)
    assert data["built"] == 0 and data["cached"] == 3
    # adding a target builds that target only; dropping a model removes its files
    (work / "edgekit.toml").write_text(CONFIG.split("[[models]]\nname = \"b\"")[0].format(a_extra="") + "\n")
    proc, data = build(work, cache)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "models").iterdir()) == [
        "a.onnxruntime.onnx", "a.openvino.bin", "a.openvino.xml", "edgekit-manifest.json"]


def test_budget_exceeded_exit_code_5_and_warn_only(built, tmp_path):
    project, cache, _ = built
    work = tmp_path / "p"
    work.mkdir()
    write_config(work, a_extra="max_size_mb = 0.1\nmax_accuracy_drop = 0.0")
    proc, data = build(work, cache)
    assert proc.returncode == 5, proc.stderr
    assert data["error"]["type"] == "BudgetExceededError"
    msg = proc.stderr
    assert "a [onnxruntime]: max_size_mb 0.5279 MB > 0.1 MB" in msg and "a [openvino]: max_size_mb" in msg
    assert "--warn-only" in msg and "max_accuracy_drop" not in msg  # 0 disagreement meets a 0.0 budget
    assert not (work / "models").exists()  # nothing installed on failure
    proc, data = build(work, cache, "--warn-only")
    assert proc.returncode == 0, proc.stderr
    assert "warning: budget exceeded: a [onnxruntime]: max_size_mb" in proc.stderr
    manifest = json.loads((work / "models" / "edgekit-manifest.json").read_text())
    budgets = {(a["model"], a["target"]): a["budgets"] for a in manifest["artifacts"]}
    size = next(b for b in budgets[("a", "onnxruntime")] if b["budget"] == "max_size_mb")
    assert size["ok"] is False and size["limit"] == 0.1 and size["value"] > 0.5
    drop = next(b for b in budgets[("a", "openvino")] if b["budget"] == "max_accuracy_drop")
    assert drop["ok"] is True and drop["value"] == 0.0 and "top-1 disagreement" in drop["basis"]


def test_latency_budget_on_the_roofline_estimate(built, tmp_path):
    project, cache, _ = built
    work = tmp_path / "p"
    work.mkdir()
    write_config(work, a_extra='max_latency_ms = 0.00001\nlatency_device = "estimate"')
    proc, data = build(work, cache)
    assert proc.returncode == 5, proc.stderr
    assert "a [onnxruntime]: max_latency_ms" in proc.stderr and "roofline estimate" in proc.stderr
    write_config(work, a_extra='max_latency_ms = 1000\nlatency_device = "estimate"')
    proc, data = build(work, cache)
    assert proc.returncode == 0, proc.stderr
    assert "measuring latency" not in proc.stderr  # the figures were stored with the cache entries
    for art in (a for a in data["artifacts"] if a["model"] == "a"):
        (check,) = art["budgets"]
        assert check["ok"] and 0 < check["value"] < 1000 and "roofline estimate" in check["basis"]
        assert art["profile"]["estimate"]["estimate"] is True and art["profile"]["estimate"]["p50_ms"] == check["value"]


def test_tolerance_not_met_exit_code_3(built, tmp_path):
    project, cache, _ = built
    work = tmp_path / "p"
    work.mkdir()
    write_config(work, b_extra="tolerances = { max_abs_error = 1e-12 }")
    proc, data = build(work, cache)
    assert proc.returncode == 3, proc.stderr
    assert "b [onnxruntime]: max_abs_error" in proc.stderr and "1e-12" in proc.stderr
    assert not (work / "models").exists()


def test_damaged_cache_entry_is_rebuilt(built, tmp_path):
    project, cache, _ = built
    work = tmp_path / "p"
    work.mkdir()
    (work / "edgekit.toml").write_text('[[models]]\nname = "c"\nsource = "zoo:mnist_cnn"\ncalibration_size = 32\n')
    proc, data = build(work, cache)
    assert proc.returncode == 0, proc.stderr
    key = data["artifacts"][0]["cache_key"]
    cached = cache / "entries" / key / "c.onnxruntime.onnx"
    blob = bytearray(cached.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    cached.write_bytes(bytes(blob))
    good = data["artifacts"][0]["sha256"]
    (work / "edgekit-out" / "c.onnxruntime.onnx").unlink()
    proc, data = build(work, cache)
    assert proc.returncode == 0, proc.stderr
    assert "damaged; rebuilding it" in proc.stderr
    assert sha(work / "edgekit-out" / "c.onnxruntime.onnx") == good == sha(cached)


def test_inspect_built_artifact_includes_manifest_figures(built):
    project, _, _ = built
    proc = run_cli("inspect", str(project / "models" / "a.openvino.xml"), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    manifest = json.loads((project / "models" / "edgekit-manifest.json").read_text())
    rec = next(a for a in manifest["artifacts"] if a["path"] == "a.openvino.xml")
    assert info["inputs"] == rec["inputs"] and info["outputs"] == rec["outputs"]
    assert info["sha256"] == rec["sha256"]
    assert [Path(f["path"]).name for f in info["files"]] == ["a.openvino.xml", "a.openvino.bin"]
    assert info["verification"] == rec["verification"] and info["target"] == "openvino"


def test_two_concurrent_builds_share_one_cache(tmp_path):
    project, cache = tmp_path / "p", tmp_path / "cache"
    project.mkdir()
    (project / "edgekit.toml").write_text(
        '[[models]]\nname = "d"\nsource = "zoo:mnist_cnn"\ntargets = ["onnxruntime", "openvino"]\n'
        "calibration_size = 40\n")
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache), "CI": "true"}
    cmd = [sys.executable, "-m", "edgekit", "build", "--json"]
    procs = [subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert code == 0, err
    runs = [json.loads(out) for _, out, _ in results]
    # each artifact was built exactly once, by one of the two processes; the other reused it
    assert sum(r["built"] for r in runs) == 2 and all(r["built"] + r["cached"] == 2 for r in runs)
    out = project / "edgekit-out"
    manifest = json.loads((out / "edgekit-manifest.json").read_text())
    for art in manifest["artifacts"]:
        for f in art["files"]:
            assert sha(out / f["path"]) == f["sha256"]
    assert not list(out.glob(".*.tmp"))  # no temp files left behind
    assert not [d for d in (cache / "tmp").iterdir() if d.name.startswith("stage-")]

    info = json.loads(run_cli("cache", "info", "--json", env={"EDGEKIT_CACHE_DIR": str(cache)}).stdout)
    assert info["path"] == str(cache) and info["entries"] == 2 and info["size_bytes"] > 1_000_000
    assert sorted((i["model"], i["target"], i["complete"]) for i in info["items"]) == [
        ("d", "onnxruntime", True), ("d", "openvino", True)]
    proc = run_cli("cache", "clean", "--json", env={"EDGEKIT_CACHE_DIR": str(cache)})
    assert proc.returncode == 0 and json.loads(proc.stdout)["removed"] == 2
    info = json.loads(run_cli("cache", "info", "--json", env={"EDGEKIT_CACHE_DIR": str(cache)}).stdout)
    assert info["entries"] == 0


def test_building_one_target_keeps_the_other_configured_targets_installed(built, tmp_path):
    """`edgekit build -t openvino` (one Make/Gradle task per platform) builds that target and leaves the
    artifacts of the config's other targets in place, in the manifest too; a target the config drops goes."""
    project, cache, _ = built
    work = tmp_path / "p"
    work.mkdir()
    write_config(work)
    proc, data = build(work, cache)  # the full set, from the cache
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (work / "models").iterdir())
    proc, data = build(work, cache, "-t", "openvino")
    assert proc.returncode == 0, proc.stderr
    assert {(a["model"], a["target"]) for a in data["artifacts"]} == {("a", "openvino"), ("b", "openvino")}
    manifest = json.loads((work / "models" / "edgekit-manifest.json").read_text())
    assert {(r["model"], r["target"]) for r in manifest["artifacts"]} == {
        ("a", "onnxruntime"), ("a", "openvino"), ("b", "onnxruntime"), ("b", "openvino")}
    assert set(files) <= {p.name for p in (work / "models").iterdir()}
    # the config no longer lists b (nor its openvino build): its files go, a's stay
    (work / "edgekit.toml").write_text(CONFIG.split("[[models]]\nname = \"b\"")[0].format(a_extra="") + "\n")
    proc, data = build(work, cache)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (work / "models").iterdir()) == [
        "a.onnxruntime.onnx", "a.openvino.bin", "a.openvino.xml", "edgekit-manifest.json"]
