"""Profile a .tflite with LiteRT's own `benchmark_model` on a device without Python: Android over adb
(`adb -s SERIAL push` + `adb -s SERIAL shell`), or an ssh device given --benchmark-model.

benchmark_model is not shipped by edgekit: push the binary for your ABI (TensorFlow Lite's prebuilt
"android_aarch64_benchmark_model" or one you built) to /data/local/tmp/benchmark_model, or name its path
with --benchmark-model / `benchmark_model` in the device profile. The command is an argv list; adb joins
the words into one remote shell line, so each is shlex.quote'd, and the model gets a fixed remote name.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError, MissingDependencyError, UsageError
from edgekit.profile.benchmark_output import parse_benchmark_model
from edgekit.profile.devices import DeviceTarget
from edgekit.profile.layers import summarize_layers

DEFAULT_BENCHMARK_MODEL = "/data/local/tmp/benchmark_model"


class AdbTransport:
    def __init__(self, serial: str, timeout: float = 600.0) -> None:
        self.serial, self.timeout = serial, timeout
        self.label = f"adb:{serial}"
        self.adb = shutil.which("adb")
        if self.adb is None:
            raise MissingDependencyError("'adb' (Android platform-tools) is not installed or not on PATH",
                                         hint="install android platform-tools and connect the phone with USB debugging")

    def _run(self, args: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        assert self.adb is not None
        try:
            proc = subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, text=True,
                                  timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{self.label}: {what} timed out after {exc.timeout:g} s") from exc
        err = (proc.stderr or "") + (proc.stdout if proc.returncode else "")
        words = ("not found", "no devices", "offline", "unauthorized", "more than one")
        if proc.returncode != 0 and any(s in err for s in words) and "device" in err:
            # the line that names the problem ("adb: device unauthorized."), not adb's last advice line
            said = next(ln.strip() for ln in err.splitlines() if any(s in ln for s in words))
            advice = " (accept the USB debugging prompt on the phone)" if "unauthorized" in said else ""
            raise DeviceError(f"{self.label}: {said}{advice}",
                              hint=f"attached devices: {self._devices() or 'none'} (see `adb devices`)")
        return proc

    def _devices(self) -> str:
        try:
            out = subprocess.run([self.adb or "adb", "devices"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        rows = [ln.split() for ln in out.splitlines() if "\t" in ln]  # "SERIAL\tstate"; not adb's "* daemon" lines
        return ", ".join(r[0] if r[1:] == ["device"] else f"{r[0]} ({' '.join(r[1:])})" for r in rows if r)

    def shell(self, words: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return self._run(["shell", " ".join(shlex.quote(w) for w in words)], what, timeout)

    def mkdtemp(self) -> str:
        proc = self.shell(["mktemp", "-d", "/data/local/tmp/edgekit.XXXXXXXX"], "mktemp", timeout=60)
        out = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not out or not out[-1].startswith("/data/local/tmp/edgekit."):
            raise DeviceError(f"{self.label}: cannot make a temporary folder ({(proc.stderr or proc.stdout).strip()})")
        return out[-1].strip()

    def upload(self, files: dict[str, Path], remote_dir: str) -> None:
        for name, src in files.items():
            proc = self._run(["push", str(src), f"{remote_dir}/{name}"], f"adb push {name}")
            if proc.returncode != 0:
                raise DeviceError(f"{self.label}: adb push failed ({(proc.stderr or proc.stdout).strip()})")

    def run_text(self, words: list[str], remote_dir: str | None = None) -> tuple[int | None, str, str]:
        proc = self.shell(words, "benchmark_model")
        return proc.returncode, proc.stdout, proc.stderr

    def cleanup(self, remote_dir: str) -> None:
        try:
            self.shell(["rm", "-rf", remote_dir], "cleanup", timeout=30)
        except DeviceError:
            pass


def benchmark_words(binary: str, model: str, *, runs: int, warmup: int, threads: int | None, per_layer: bool,
                    options: dict[str, Any]) -> list[str]:
    words = [binary, f"--graph={model}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
             "--min_secs=0", "--warmup_min_secs=0", f"--use_xnnpack={str(options.get('xnnpack', True)).lower()}"]
    if threads:
        words.append(f"--num_threads={threads}")
    if options.get("gpu"):
        words.append("--use_gpu=true")
    if options.get("nnapi"):
        words.append("--use_nnapi=true")
    if options.get("delegate"):
        words.append(f"--external_delegate_path={options['delegate']}")
    if per_layer:
        words.append("--enable_op_profiling=true")
    return words


def profile_benchmark_model(path: Path, target: DeviceTarget, *, runs: int, warmup: int, threads: int | None,
                            per_layer: bool, options: dict[str, Any]) -> dict[str, Any]:
    if path.suffix.lower() != ".tflite":
        raise UsageError(f"{path.name}: benchmark_model runs .tflite files only",
                         hint="profile the .tflite artifact, or use an ssh device with Python for .onnx/.xml")
    timeout = float(options.get("timeout") or 600)
    binary = options.get("benchmark_model") or target.benchmark_model or DEFAULT_BENCHMARK_MODEL
    if target.kind == "adb":
        assert target.serial
        transport: Any = AdbTransport(target.serial, timeout)
    else:
        from edgekit.profile.ssh import SshDevice

        transport = SshDevice.from_target(target, timeout=timeout, tmpdir=options.get("remote_tmp"))
    remote_dir = transport.mkdtemp()
    try:
        transport.upload({"model.tflite": path}, remote_dir)
        words = benchmark_words(binary, f"{remote_dir}/model.tflite", runs=runs, warmup=warmup, threads=threads,
                                per_layer=per_layer, options=options)
        rc, out, err = transport.run_text(words, remote_dir=remote_dir)
    finally:
        transport.cleanup(remote_dir)
    text = out + "\n" + err  # benchmark_model logs to stderr on Linux, to stdout/logcat on Android
    if rc is None:
        raise DeviceError(f"{transport.label}: benchmark_model timed out after {timeout:g} s")
    if rc in (126, 127) or ("not found" in text and "Inference timings" not in text):
        raise DeviceError(f"{transport.label}: no benchmark_model at {binary}",
                          hint="push LiteRT's benchmark_model for the device's ABI there, or give --benchmark-model PATH")
    try:
        parsed = parse_benchmark_model(text)
    except ValueError as exc:
        tail = text.strip().splitlines()[-3:] if text.strip() else [f"exit {rc}"]
        raise DeviceError(f"{transport.label}: benchmark_model failed: {' | '.join(tail)}") from exc
    rows = parsed.pop("layer_rows", None)
    unit = "GPU" if options.get("gpu") else "NNAPI (Android picks the accelerator)" if options.get("nnapi") else \
        "delegate" if options.get("delegate") else "CPU"
    res: dict[str, Any] = {
        "artifact": str(path),
        "backend": "litert",
        "device": transport.label,
        "device_kind": target.kind,
        "unit": unit,
        "estimate": False,
        **parsed,
        "warmup": warmup,
        "threads": threads,
        "runtime": {"name": "litert", "tool": "benchmark_model", "binary": binary,
                    "options": {"argv": words[1:]}, "unit": unit},
        "inputs": None,
        "samples": {"count": 0, "synthetic": True, "description": "benchmark_model's own random inputs"},
        "layers": summarize_layers({"rows": rows, "runs": parsed.get("runs"),
                                    "source": "benchmark_model --enable_op_profiling"}) if rows else None,
        "complete": True,
        "device_profile": target.profile.name if target.profile else None,
    }
    from edgekit.profile.result import measured_keys

    for key in measured_keys():  # the same keys as any measurement (README); what the tool does not say is null
        res.setdefault(key, None)
    return res
