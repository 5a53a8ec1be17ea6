"""Latency profiling: measure an artifact where it will run (this host, ssh, adb) or estimate it (roofline).

    from edgekit.profile import profile_artifact
    res = profile_artifact(Path("out/m.onnx"), "local", runs=50, warmup=5, per_layer=True)

The result schema is documented in edgekit/profile/result.py (measurements) and roofline.py (estimates).
Options (all optional):
  unit            CPU | GPU | NPU: OpenVINO device, ORT execution provider family, TFLite delegate
  provider        ORT execution provider by name (QNN, OpenVINO, CUDA ... or the full *ExecutionProvider name)
  xnnpack         LiteRT: use the XNNPACK delegate (default true)
  delegate        LiteRT: path of an external delegate library (on the device for remote runs); with
                  litert_api="compiled", the vendor dispatch library (NPU)
  litert_api      LiteRT: "interpreter" (default: XNNPACK, delegates) | "compiled" (CompiledModel, CPU/GPU/NPU)
  hint            OpenVINO PERFORMANCE_HINT: latency (default) | throughput
  pin             OpenVINO ENABLE_CPU_PINNING true/false (default: OpenVINO's choice); on a busy shared
                  machine pinned threads wait for their core (measured here: 4.0 ms pinned vs 1.9 ms not)
  remote_python   interpreter on an ssh device (default the profile's, else python3)
  remote_tmp      folder on an ssh device the run's files go in (default [access] tmpdir, else its $TMPDIR, else /tmp)
  benchmark_model path of LiteRT's benchmark_model on an adb/ssh device without Python
  gpu / nnapi     adb: use_gpu / use_nnapi delegates of benchmark_model
  timeout         overall seconds for one run (default 600)
  estimate        true: roofline estimate instead of a measurement (needs an ONNX graph)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgekit.callable_module import call_api
from edgekit.errors import ModelLoadError, UsageError
from edgekit.profile.devices import DeviceTarget, resolve_device
from edgekit.profile.result import build_result
from edgekit.profile.stream import Collected, RemoteRunError, raise_runner_error

SUFFIXES = (".onnx", ".ort", ".xml", ".tflite")
call_api(__name__, "profile")  # `edgekit.profile(...)` stays the api function once this package is imported

_OPTION_KEYS = {"unit", "provider", "xnnpack", "delegate", "hint", "remote_python", "benchmark_model", "gpu",
                "nnapi", "timeout", "estimate", "python", "pin", "litert_api", "remote_tmp"}


def profile_artifact(path: Path, device: str = "local", *, runs: int = 50, warmup: int = 5,
                     threads: int | None = None, samples: Any = None, per_layer: bool = False,
                     options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure (or, for a profile whose device is not attached, estimate) one artifact's latency.

    `samples`: None (synthetic inputs of the artifact's shapes/dtypes), a SampleSet, or a spec for
    edgekit.data.load_samples (e.g. a .npz). Raises DeviceError (exit 6) when the device or unit is
    unavailable (naming what is available) or a remote run fails; a run cut short raises
    RemoteRunError whose `.partial` holds the result of the runs measured before it failed."""
    path = Path(path)
    options = dict(options or {})
    unknown = set(options) - _OPTION_KEYS
    if unknown:
        raise UsageError(f"unknown profile option(s): {', '.join(sorted(unknown))}",
                         hint=f"known: {', '.join(sorted(_OPTION_KEYS))}")
    if runs < 1 or warmup < 0:
        raise UsageError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1 (got {threads})")
    from edgekit.artifact_file import check_artifact_file

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such artifact", hint="give the path of a .onnx, .ort, .xml or .tflite file")
    path = check_artifact_file(path)  # missing, a folder, empty, an .xml without its .bin: exit code 2

    _warn_inapplicable(path, options)
    target = resolve_device(device, remote_python=options.get("remote_python"))
    if options.get("remote_tmp") and target.kind != "ssh":
        from edgekit.progress import warn

        warn(f"--remote-tmp applies to ssh devices only; ignored for {target.label}")
    if options.get("estimate") or target.kind == "estimate":
        from edgekit.profile.roofline import estimate_artifact

        return estimate_artifact(path, target.profile, unit=options.get("unit") or "CPU", threads=threads)
    # an ssh device's benchmark_model: --benchmark-model, or the one its profile names (a board without Python)
    bench = options.get("benchmark_model") or (target.benchmark_model if target.kind == "ssh" else None)
    if target.kind == "adb" or (target.kind == "ssh" and bench and path.suffix.lower() == ".tflite"):
        from edgekit.profile.adb import profile_benchmark_model

        return profile_benchmark_model(path, target, runs=runs, warmup=warmup, threads=threads,
                                       per_layer=per_layer, options=options)
    return _profile_with_runner(path, target, runs=runs, warmup=warmup, threads=threads, samples=samples,
                                per_layer=per_layer, options=options)


# runtime-specific options -> (the artifact suffixes they act on, the runtime, the value that means "not asked for")
_RUNTIME_OPTIONS = {
    "provider": ((".onnx", ".ort"), "ONNX Runtime", None),
    "hint": ((".xml",), "OpenVINO", "latency"),
    "pin": ((".xml",), "OpenVINO", None),
    "xnnpack": ((".tflite",), "LiteRT", True),
    "delegate": ((".tflite",), "LiteRT", None),
    "litert_api": ((".tflite",), "LiteRT", None),
}


def _warn_inapplicable(path: Path, options: dict[str, Any]) -> None:
    """An option of another runtime (--provider CUDA on a .tflite) is not silently dropped: the run would be
    taken for one on the unit asked for."""
    from edgekit.progress import warn

    suffix = path.suffix.lower()
    for key, (suffixes, runtime, default) in _RUNTIME_OPTIONS.items():
        if options.get(key, default) != default and suffix not in suffixes:
            flag = "--no-xnnpack" if key == "xnnpack" else "--" + key.replace("_", "-")
            warn(f"{flag} applies to {runtime} only ({', '.join(suffixes)} artifacts); ignored for {path.name}")


def runner_args(runs: int, warmup: int, threads: int | None, per_layer: bool, options: dict[str, Any]) -> list[str]:
    args = ["--runs", str(runs), "--warmup", str(warmup)]
    if threads:
        args += ["--threads", str(threads)]
    if options.get("unit"):
        args += ["--unit", str(options["unit"]).upper()]
    if options.get("provider"):
        args += ["--provider", str(options["provider"])]
    if options.get("hint"):
        args += ["--hint", str(options["hint"])]
    if options.get("pin") is not None:
        args += ["--pin", "yes" if options["pin"] else "no"]
    if options.get("xnnpack") is False:
        args += ["--no-xnnpack"]
    if options.get("delegate"):
        args += ["--delegate", str(options["delegate"])]
    if options.get("litert_api"):
        args += ["--litert-api", str(options["litert_api"])]
    if per_layer:
        args += ["--per-layer", str(min(max(runs, 5), 20))]
    return args


def _profile_with_runner(path: Path, target: DeviceTarget, *, runs: int, warmup: int, threads: int | None,
                         samples: Any, per_layer: bool, options: dict[str, Any], on_record: Any = None) -> dict:
    from edgekit.profile.inputs import describe, make_samples, write_feeds

    sample_set, specs = make_samples(path, samples)
    timeout = float(options.get("timeout") or 600)
    args = runner_args(runs, warmup, threads, per_layer, options)
    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as tmp:
        feeds = write_feeds(sample_set, specs, Path(tmp) / "feeds.npz")
        if target.kind == "local":
            from edgekit.profile.local import run_local

            col, problem = run_local(path, feeds, args, timeout=timeout, python=options.get("python"),
                                     on_record=on_record)
        elif target.kind == "ssh":
            from edgekit.profile.ssh import SshDevice

            extra = _remote_op_models(path, Path(tmp), per_layer, options)
            if extra:
                args += ["--op-models", "ops.npz"]
            col, problem = SshDevice.from_target(target, timeout=timeout, tmpdir=options.get("remote_tmp")).run_runner(
                path, feeds, args, on_record=on_record, extra=extra)
        else:  # pragma: no cover - resolve_device only makes the kinds above
            raise UsageError(f"cannot run on device kind '{target.kind}'")
    return finish(col, problem, path=path, target=target, warmup=warmup, threads=threads,
                  samples=describe(sample_set))


def _remote_op_models(path: Path, tmp: Path, per_layer: bool, options: dict[str, Any]) -> dict[str, Path]:
    """LiteRT per-layer on a device: the one-op models are made here, where ai-edge-litert's flatbuffer schema
    is installed; a device with tflite-runtime (or tensorflow) has none, and its per-layer pass gave only a
    note. Empty when not needed or when this model cannot be taken apart (the device then says so itself)."""
    if not per_layer or path.suffix.lower() != ".tflite" or options.get("delegate") or \
            options.get("litert_api") == "compiled":
        return {}
    from edgekit.profile import runner

    try:
        plan = runner.op_plan(str(path), fuse_pad=options.get("xnnpack", True) is not False)
    except Exception as exc:  # noqa: BLE001
        from edgekit.progress import log

        log(f"profile: cannot split {path.name} into one-op models here ({type(exc).__name__}: {exc})",
            verbose_only=True)
        return {}
    out = tmp / "ops.npz"
    runner.save_op_plan(plan, str(out))
    return {"ops.npz": out}


def finish(col: Collected, problem: str | None, *, path: Path, target: DeviceTarget, warmup: int,
           threads: int | None, samples: dict[str, Any] | None) -> dict[str, Any]:
    label = target.label
    if target.kind == "local" and target.profile is not None and target.profile.extra.get("cpu_model"):
        label = f"{target.label} ({target.profile.extra['cpu_model']})"
    if col.error is not None:
        raise_runner_error(col, f"{path.name} on {label}")
    complete = problem is None and col.done is not None
    res = build_result(col, path=path, device_label=label, device_kind=target.kind, warmup=warmup, threads=threads,
                       samples=samples, complete=complete)
    res["device_profile"] = target.profile.name if target.profile else None
    if not complete:
        measured = len(col.runs_ms)
        raise RemoteRunError(f"{path.name} on {label}: {problem or 'the runner stopped before it finished'}; "
                             f"{measured} timed run(s) were measured before that",
                             hint="the measured runs are kept in the partial result (--json shows them)",
                             partial=res)
    return res
