"""The public API: what the CLI and build scripts call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import UsageError


def convert(model: str, targets: list[str], outdir: str | Path = "out", *, precision: str | None = None,
            input_shapes: dict[str, tuple[int, ...] | str] | list[str] | None = None, weights: str | Path | None = None,
            calibration: str | None = None, calibration_size: int | None = None,
            calibration_method: str | None = None, verify: bool = True, io_layout: str = "nchw",
            io_dtype: str = "float", prune: float | None = None, prune_macs: float | None = None,
            prune_exclude: tuple[str, ...] = (), round_to: int = 8, importance: str = "auto",
            allocation: str = "auto", layout_by_latency: bool = False,
            distill_steps: int = 0, max_drop: float | None = None, eval_data: str | None = None,
            int8_finetune: int | None = None, fallback_order: str = "e2e", profile: str | None = None,
            name: str | None = None, seed: int = 0, task: str = "auto") -> dict[str, Any]:
    """Convert `model` into verified artifacts for each target; returns the JSON-able result.

    Raises an EdgekitError subclass (each carries its exit code) on bad input, failed verification,
    unsupported operators or unavailable devices; nothing is written to `outdir` in that case.
    """
    import os

    from edgekit.pipeline import Job, run
    from edgekit.targets import PRECISIONS, get_target

    # as the CLI takes them: a Path for the model or data was an AttributeError ('startswith'), and one target as a
    # string was read letter by letter ("unknown target 'o'")
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    calibration = os.fspath(calibration) if isinstance(calibration, os.PathLike) else calibration
    eval_data = os.fspath(eval_data) if isinstance(eval_data, os.PathLike) else eval_data
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if not targets:
        raise UsageError("no target given", hint="add --target onnxruntime (see `edgekit targets`)")
    if precision not in (None, *PRECISIONS):
        raise UsageError(f"unknown precision '{precision}'", hint=f"use one of: {', '.join(PRECISIONS)}")
    for value, label in ((prune, "--prune"), (prune_macs, "--prune-macs")):
        if value is not None and not 0.0 < value < 1.0:
            raise UsageError(f"{label} must be a fraction between 0 and 1, got {value}")
    if max_drop is not None and not 0.0 <= max_drop < 1.0:
        raise UsageError(f"--max-drop must be a fraction between 0 and 1, got {max_drop}")
    if layout_by_latency and prune_macs is None:
        raise UsageError("--layout-by-latency chooses among channel layouts near a MAC target",
                         hint="add --prune-macs R (e.g. 0.5)")
    from edgekit.quantize.e2e_sensitivity import ORDERS

    if fallback_order not in ORDERS:
        raise UsageError(f"unknown --fallback-order '{fallback_order}'", hint=f"use one of {', '.join(ORDERS)}")
    if int8_finetune is not None and int8_finetune < 0:
        raise UsageError(f"--int8-finetune must be 0 or more steps, got {int8_finetune}")
    from edgekit.distill import TASK_CHOICES

    if task not in TASK_CHOICES:
        raise UsageError(f"unknown --task '{task}'", hint=f"use one of {', '.join(TASK_CHOICES)}")
    if io_layout not in ("nchw", "nhwc"):
        raise UsageError(f"unknown --io-layout '{io_layout}'", hint="use nchw or nhwc")
    if io_dtype not in ("float", "int8"):
        raise UsageError(f"unknown --io-dtype '{io_dtype}'", hint="use float or int8")
    from edgekit.build.config import NAME_RE

    if name is not None and not NAME_RE.match(name):  # '../x' or 'a/b' wrote outside the folder, leaving temp files
        raise UsageError(f"bad --name {name!r}: it becomes the artifact file names",
                         hint="use letters, digits, '_', '-' and '.', starting with a letter or digit")
    resolved, seen = [], set()
    for t in targets:
        tgt = get_target(t)
        if tgt.name not in seen:
            seen.add(tgt.name)
            resolved.append(tgt)
    int8_only = {"--max-drop": max_drop, "--eval": eval_data, "--int8-finetune": int8_finetune,
                 "--calibration-method": calibration_method}
    ignored = [flag for flag, value in int8_only.items() if value is not None]
    if ignored and not any((precision or t.precision) == "int8" for t in resolved):
        from edgekit.progress import warn

        warn(f"{', '.join(ignored)} only act on int8 artifacts and every target here is fp32: ignored "
             "(add --precision int8 or an int8 target such as arm)")
    from edgekit.sources import normalize_input_shapes

    shapes = normalize_input_shapes(input_shapes)  # {name: (1, 7)}, {name: "1x7:int64"}, ["name=1x7:int64"]
    job = Job(model=model, targets=resolved, outdir=Path(outdir), precision=precision, input_shapes=shapes,
              weights=Path(weights) if weights else None, calibration=calibration,
              calibration_size=calibration_size, calibration_method=calibration_method, verify=verify,
              io_layout=io_layout, io_dtype=io_dtype, prune=prune, prune_macs=prune_macs,
              prune_exclude=tuple(prune_exclude), round_to=round_to, importance=importance, allocation=allocation,
              layout_by_latency=layout_by_latency,
              distill_steps=distill_steps, max_drop=max_drop, eval_data=eval_data, profile=profile,
              int8_finetune=int8_finetune, fallback_order=fallback_order, name=name, seed=seed, task=task)
    return run(job)


def profile(artifact: str | Path, device: str = "local", **kwargs: Any) -> dict[str, Any]:
    """Measure an artifact's latency on a device (see edgekit.profile.profile_artifact)."""
    from edgekit.profile import profile_artifact

    return profile_artifact(Path(artifact), device, **kwargs)


def inspect(artifact: str | Path) -> dict[str, Any]:
    """Inputs, outputs, quantization and metadata of any artifact."""
    from edgekit.inspect import inspect_artifact

    return inspect_artifact(Path(artifact))
