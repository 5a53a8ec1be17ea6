"""`edgekit profile ARTIFACT --device D`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--device", "-d", default="local", show_default=True,
              help="local | profile name (`edgekit devices`) | ssh://user@host[:port] | adb:SERIAL")
@click.option("--runs", default=50, show_default=True, type=int, help="Timed runs after warm-up.")
@click.option("--warmup", default=5, show_default=True, type=int, help="Untimed warm-up runs.")
@click.option("--threads", type=int, help="Runtime threads (default: the runtime's own choice).")
@click.option("--samples", "--calibration", "samples", help="Inputs to time with (.npz/.npy, image folder, shipped "
              "set); default synthetic of the artifact's shapes.")
@click.option("--per-layer", is_flag=True, help="Also time each layer with the runtime's own profiler.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="Layers shown with --per-layer.")
@click.option("--unit", type=click.Choice(["CPU", "GPU", "NPU"], case_sensitive=False),
              help="Execution unit: OpenVINO device, ORT provider family (NPU: QNN / OpenVINO EP), TFLite delegate.")
@click.option("--provider", help="ONNX Runtime execution provider (QNN, OpenVINO, CUDA, ...).")
@click.option("--xnnpack/--no-xnnpack", default=True, show_default=True, help="LiteRT: XNNPACK delegate.")
@click.option("--delegate", help="LiteRT: external delegate library path (on the device for remote runs).")
@click.option("--litert-api", type=click.Choice(["interpreter", "compiled"]), help="LiteRT API: Interpreter "
              "(default; XNNPACK, delegates) or CompiledModel (accelerators CPU/GPU/NPU).")
@click.option("--hint", type=click.Choice(["latency", "throughput"]), default="latency", show_default=True,
              help="OpenVINO PERFORMANCE_HINT.")
@click.option("--pin", type=click.Choice(["yes", "no"]), help="OpenVINO CPU thread pinning (default: OpenVINO's).")
@click.option("--remote-python", help="Interpreter on an ssh device (default: the profile's, else python3).")
@click.option("--remote-tmp", help="Folder on an ssh device for the run's files (default: the profile's tmpdir, "
              "else the device's $TMPDIR, else /tmp).")
@click.option("--benchmark-model", help="Path of LiteRT's benchmark_model on the device (adb, or ssh without Python).")
@click.option("--gpu", is_flag=True, help="adb/benchmark_model: --use_gpu=true.")
@click.option("--nnapi", is_flag=True, help="adb/benchmark_model: --use_nnapi=true.")
@click.option("--estimate", is_flag=True, help="Roofline estimate from the device profile instead of measuring.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds allowed for one artifact's run.")
@json_option
@handle_errors
def profile(artifacts: tuple[Path, ...], device: str, runs: int, warmup: int, threads: int | None,
            samples: str | None, per_layer: bool, top: int, unit: str | None, provider: str | None, xnnpack: bool,
            delegate: str | None, litert_api: str | None, hint: str, pin: str | None, remote_python: str | None, remote_tmp: str | None, benchmark_model: str | None, gpu: bool,
            nnapi: bool, estimate: bool, timeout: float, as_json: bool) -> None:
    """Measure an artifact's latency on a device: load, first inference, then RUNS timed runs
    (mean, std, min, p50, p90, p99), peak memory, per-layer times with --per-layer.

    \b
    Examples:
      edgekit profile out/m.onnx --per-layer
      edgekit profile out/m.xml --unit NPU
      edgekit profile out/m.tflite --device ssh://pi@raspberrypi.local --remote-python ~/venv/bin/python
      edgekit profile out/m.tflite --device adb:R58M123 --gpu
      edgekit profile out/m.onnx --device raspberry-pi-5        (not attached: roofline estimate)
    """
    from edgekit.errors import EdgekitError
    from edgekit.profile import profile_artifact
    from edgekit.profile.layers import format_layers
    from edgekit.profile.result import format_result
    from edgekit.profile.stream import RemoteRunError

    options = {"unit": unit, "provider": provider, "xnnpack": xnnpack, "delegate": delegate, "litert_api": litert_api, "hint": hint,
               "pin": None if pin is None else pin == "yes", "remote_python": remote_python, "remote_tmp": remote_tmp, "benchmark_model": benchmark_model, "gpu": gpu, "nnapi": nnapi,
               "estimate": estimate, "timeout": timeout}
    options = {k: v for k, v in options.items() if v not in (None, False) or k in ("xnnpack", "pin")}
    if options.get("pin") is None:
        options.pop("pin", None)
    results = []
    for path in artifacts:
        try:
            res = profile_artifact(path, device, runs=runs, warmup=warmup, threads=threads, samples=samples,
                                   per_layer=per_layer, options=options)
        except EdgekitError as exc:
            if not isinstance(exc, RemoteRunError) and len(artifacts) == 1:
                raise  # handle_errors prints it
            click.echo(f"edgekit: error: {exc}", err=True)
            if as_json:  # the artifacts measured before this one are kept (a script reads them)
                error = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code,
                         "artifact": str(path)}
                out: dict = {"error": error}
                if isinstance(exc, RemoteRunError):
                    out["partial"] = exc.partial
                if len(artifacts) > 1:
                    out["results"] = results
                emit_json(out)
            sys.exit(exc.exit_code)
        results.append(res)
        if not as_json:
            click.echo(format_result(res))
            if res.get("layers"):
                click.echo(format_layers(res["layers"], top))
    if as_json:
        emit_json(results[0] if len(results) == 1 else {"results": results})
