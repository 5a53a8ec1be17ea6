"""The prune -> distill stage on a LoadedModel (what `edgekit distill` and `convert --prune` call)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import DataError, UnsupportedModelError, UsageError
from edgekit.export import no_mha_fastpath
from edgekit.progress import log
from edgekit.reproducible import reproducible


def _example(samples, inputs, module=None) -> dict[str, Any]:
    import torch

    from edgekit.data import synthetic_samples
    from edgekit.data.id_bounds import id_bounds

    if samples is None:
        high = id_bounds(module, names=[i.name for i in inputs if np.dtype(i.dtype).kind in "iu"])
        samples = synthetic_samples(inputs, count=1, id_high=high)
    feed = next(iter(samples))
    return {k: torch.as_tensor(np.asarray(v)) for k, v in feed.items()}


def _calib_batches(samples, module=None, n: int = 64, batch: int = 8) -> list[dict[str, Any]]:
    """Up to `n` samples stacked `batch` at a time along axis 0. When `module` rejects a stacked batch (an input
    whose batch axis is not the first: a recurrent state (layers, batch, hidden), a time-major sequence), one
    sample per batch: each sample is a run the model was probed with."""
    import torch

    from edgekit.distill import _stack

    items = [s for _, s in zip(range(n), samples)]
    batches = [_stack(items[i:i + batch]) for i in range(0, len(items), batch)]
    if module is not None and batches and min(batch, len(items)) > 1:
        try:
            with torch.no_grad():
                module(**batches[0])
        except Exception:  # noqa: BLE001 - any refusal of the stacked shapes
            return [_stack([it]) for it in items]
    return batches


COMPILED = {"pt2": "torch.export program (.pt2)", "torchscript": "TorchScript archive"}  # kinds without nn layers


def resolve_auto(importance: str, allocation: str, has_data: bool) -> tuple[str, str]:
    """"auto" criteria: with real calibration data, variance importance and sensitivity allocation (each
    group's kept width from its measured output loss); without, l2 and uniform. Measured (benchmarks/prune.py,
    same pruned MACs, before distillation): zoo:minilm at 25% of MACs 0.956 (variance, global) -> 0.974
    cosine; mnist_cnn at 50% 98.4% (uniform or global) -> 98.6%; mobilenet_v2 at 30%: sensitivity is the
    allocation its best figures were measured with. The price is time: one loss measurement per group and
    width (mnist_cnn convert 46 s -> 88 s on 2 busy cores)."""
    if importance == "auto":
        importance = "variance" if has_data else "l2"
    if allocation == "auto":
        allocation = "sensitivity" if has_data else "uniform"
    return importance, allocation


@reproducible  # a fixed torch thread count: the pruned and distilled weights do not depend on the machine's
@no_mha_fastpath()  # torch's fused encoder kernels bypass the layers' hooks and give nested tensors under masks
def prune_and_distill_loaded(lm, samples=None, *, prune: float | None = None, prune_macs: float | None = None,
                             exclude=(), round_to: int = 8, importance: str = "auto", allocation: str = "auto",
                             distill_steps: int = 0, batch_size: int = 32, lr: float | None = None,
                             temperature: float = 4.0, feature_layers: list[str] | None = None,
                             augment: bool = True, seed: int = 0, reconstruct: bool = True,
                             layout_target: Any = None, train_precision: str = "auto",
                             train_samples=None) -> tuple[Any, dict[str, Any]]:
    """-> (student module, report). `lm` is a LoadedModel with a torch module (the teacher, unchanged);
    `samples` a SampleSet (needed for distillation, taylor/variance importance and reconstruction:
    with real samples, the layers after the pruned channels are refitted by least squares); `train_samples`,
    when given, the distillation data instead of `samples`."""
    import torch

    from edgekit.distill import check_settings, distill
    from edgekit.prune import count_macs, count_params, prune_model

    if lm.module is None:
        raise UsageError(f"pruning and distillation need a torch model; {lm.name} is {lm.kind.upper()}",
                         hint="give the PyTorch source (pkg.module:fn or zoo:NAME) instead of the ONNX file")
    train_samples = samples if train_samples is None else train_samples
    if distill_steps and train_samples is None:
        raise DataError("distillation needs unlabeled samples", hint="pass --calibration DATA (or --train-data)")
    pruning = prune is not None or prune_macs is not None
    if lm.kind in COMPILED:
        what = "pruning" if pruning else "distillation"
        raise UnsupportedModelError(
            f"{what} needs the model's torch.nn layers; {lm.name} is a {COMPILED[lm.kind]}, a compiled graph "
            "without them", hint="pass the Python factory that builds the model (pkg.module:fn --weights "
            "state_dict.safetensors), or convert without --prune / --prune-macs / --distill-steps")
    task = lm.task if lm.task in ("classification", "embedding") else "generic"
    if distill_steps:  # bad settings or too few samples: refused before pruning, not after it
        check_settings(distill_steps, batch_size, lr, temperature, task, train_samples)
    torch.manual_seed(seed)
    teacher = lm.module.eval()
    example = _example(samples, lm.inputs, lm.module)
    report: dict[str, Any] = {"model": lm.name, "task": lm.task}
    if prune is not None or prune_macs is not None:
        calib = _calib_batches(samples, teacher) if samples is not None and not getattr(samples, "synthetic", False) else None
        importance, allocation = resolve_auto(importance, allocation, calib is not None)
        layout_latency = None
        if layout_target is not None:  # time candidate channel layouts on this target's runtime (latency.py)
            from edgekit.prune.latency import runtime_latency

            layout_latency = runtime_latency(layout_target, list(lm.inputs), list(lm.output_names), example)
        log(f"pruning: {importance} importance, {allocation} allocation")
        student, report["prune"] = prune_model(
            teacher, example, ratio=prune, macs_ratio=prune_macs, importance=importance, allocation=allocation,
            round_to=round_to, exclude=tuple(exclude), calib=calib, task=lm.task, reconstruct=reconstruct,
            layout_latency=layout_latency)
    else:
        student = copy.deepcopy(teacher)
    if distill_steps:
        report["distill"] = distill(
            teacher, student, train_samples, steps=distill_steps, task=task, lr=lr, temperature=temperature, batch_size=batch_size, seed=seed,
            feature_layers=feature_layers or None, augment=augment, precision=train_precision)
    student.eval()
    report.update(params_before=count_params(teacher), params_after=count_params(student),
                  macs_before=count_macs(teacher, example), macs_after=count_macs(student, example))
    return student, report


def prune_and_distill(spec: str, output: Path, *, data: str | None = None, train_data: str | None = None,
                      input_shapes=None, weights=None, task: str = "auto", **kw: Any) -> dict[str, Any]:
    """Load `spec`, prune/distill, save `output` (.pt2). Returns the JSON report. `data` calibrates pruning,
    `train_data` is distilled on; either defaults to the other, then to the model's shipped set."""
    from edgekit.data import load_samples
    from edgekit.prune import save_pruned
    from edgekit.sources import load_model

    output = Path(output)
    if output.suffix != ".pt2":
        raise UsageError(f"output must be a .pt2 file (torch.export program), got {output.name}",
                         hint="e.g. -o small.pt2")
    if output.is_dir() or (output.parent.exists() and not output.parent.is_dir()):  # before the work, not after
        raise UsageError(f"output {output} is a folder" if output.is_dir() else f"{output.parent} is a file",
                         hint=f"give a .pt2 file path, e.g. -o {output / 'model.pt2' if output.is_dir() else 'small.pt2'}")
    if kw.get("prune") is None and kw.get("prune_macs") is None and not kw.get("distill_steps"):
        raise UsageError("nothing to do", hint="give --prune R, --prune-macs R and/or --distill-steps N")
    lm = load_model(spec, weights=Path(weights) if weights else None, input_shapes=input_shapes or None)
    if task != "auto":  # the loss and the held-out figure follow what the outputs are, not the guess
        lm.task = task
    data = data or train_data or lm.calibration
    train_data = train_data or data
    samples = load_samples(data, lm.inputs) if data else None
    train = load_samples(train_data, lm.inputs) if train_data and train_data != data else samples
    student, report = prune_and_distill_loaded(lm, samples, train_samples=train, **kw)
    example = _example(samples, lm.inputs, lm.module)
    save_pruned(student, example, output, dynamic_axes=lm.dynamic_axes)
    report.update(output=str(output), size_bytes=output.stat().st_size, data=data, train_data=train_data)
    return report
