"""examples/: the Makefile, CMake project and Xcode build-phase script run end to end on
examples/edgekit.toml; the GitHub Actions job and the Gradle task are checked for syntax/structure
(no Gradle or Android SDK here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REPO = EXAMPLES.parent


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """One cache for the module: the first example builds cold, the others reuse it."""
    cache = tmp_path_factory.mktemp("examples-cache")
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "EDGEKIT_CACHE_DIR": str(cache), "PYTHONPATH": path, "CI": "true"}


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def check_models(folder: Path, manifest_folder: Path | None = None) -> dict:
    """Every file the manifest lists is in `folder` with its recorded sha256."""
    import hashlib

    manifest = json.loads(((manifest_folder or folder) / "edgekit-manifest.json").read_text())
    assert {a["model"] for a in manifest["artifacts"]} == {"digits"}
    assert {a["target"] for a in manifest["artifacts"]} == {"onnxruntime", "openvino"}
    for art in manifest["artifacts"]:
        assert all(b["ok"] for b in art["budgets"]) and {b["budget"] for b in art["budgets"]} == {
            "max_size_mb", "max_accuracy_drop"}
        for f in art["files"]:
            assert hashlib.sha256((folder / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    return manifest


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_makefile(env, tmp_path):
    models, app = tmp_path / "models", tmp_path / "app"
    cmd = ["make", "-C", str(EXAMPLES), f"EDGEKIT={sys.executable} -m edgekit", f"MODELS={models}", f"APP={app}"]
    run(cmd, env)
    check_models(app / "models")
    stamp = app / "models.stamp"
    first = stamp.stat().st_mtime_ns
    again = run(cmd, env)  # edgekit runs (FORCE) and answers from its cache; packaging is not redone
    assert "0 built, 2 cached" in again.stdout
    assert "cp " not in again.stdout and stamp.stat().st_mtime_ns == first


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake(env, tmp_path):
    build = tmp_path / "cmake-build"
    run(["cmake", "-S", str(EXAMPLES), "-B", str(build), f"-DEDGEKIT={sys.executable};-m;edgekit"], env)
    out = run(["cmake", "--build", str(build)], env)
    assert "edgekit: building models" in out.stdout
    check_models(build / "models")
    check_models(build / "app" / "models")
    out = run(["cmake", "--build", str(build)], env)
    assert "Built target app" in out.stdout


def test_xcode_build_phase_script(env, tmp_path):
    script = EXAMPLES / "xcode" / "edgekit-build-phase.sh"
    run(["bash", "-n", str(script)], env)
    xenv = {**env, "SRCROOT": str(EXAMPLES), "DERIVED_FILE_DIR": str(tmp_path / "derived"),
            "TARGET_BUILD_DIR": str(tmp_path / "products"), "UNLOCALIZED_RESOURCES_FOLDER_PATH": "Digits.app",
            "EDGEKIT": f"{sys.executable} -m edgekit"}
    out = run(["bash", str(script)], xenv)
    bundle = tmp_path / "products" / "Digits.app" / "models"
    assert "copied 2 file(s)" in out.stdout
    assert sorted(p.name for p in bundle.iterdir()) == ["digits.onnxruntime.onnx", "edgekit-manifest.json"]
    # a failing build is reported as an Xcode error line with edgekit's exit code
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "digits"\nsource = "zoo:mnist_cnn"\nmax_size_mb = 0.01\n')
    proc = subprocess.run(["bash", str(script)], env={**xenv, "EDGEKIT_CONFIG": str(bad)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 5 and "error: edgekit build failed (exit code 5" in proc.stdout


def test_github_actions_job():
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((EXAMPLES / "github" / "edgekit-models.yml").read_text())
    steps = wf["jobs"]["models"]["steps"]
    assert wf["jobs"]["models"]["env"]["EDGEKIT_CACHE_DIR"]
    runs = [s["run"] for s in steps if "run" in s]
    assert any(r.strip().startswith("edgekit build") for r in runs)
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == ".edgekit-cache"
    for script in runs:  # each run: block is valid bash once the ${{ }} expressions are filled in
        text = re.sub(r"\$\{\{[^}]*\}\}", "x", script)
        proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}\n{proc.stderr}"


def test_gradle_task_structure():
    text = (EXAMPLES / "android" / "app" / "build.gradle.kts").read_text()
    for needle in ('tasks.registering(Exec::class)', 'tasks.registering(Copy::class)', '"--target", "tflite"',
                   'include("*.tflite", "edgekit-manifest.json")', 'src/main/assets/models',
                   'tasks.named("preBuild") { dependsOn(edgekitCopyModels) }', 'noCompress += "tflite"'):
        assert needle in text, needle
    code = re.sub(r'"[^"\n]*"|//[^\n]*', "", text)  # brackets balance outside strings and comments
    for o, c in ("()", "{}", "[]"):
        assert code.count(o) == code.count(c), o + c
