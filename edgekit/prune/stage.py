"""The convert pipeline's prune + distill stage (called from edgekit/pipeline.py stage_prune)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import DataError


def prune_and_distill(st, work: Path) -> dict[str, Any]:
    """Replace st.model.module by its pruned (and distilled) version; the original stays available as
    st.model.meta["unpruned_module"] for comparisons. Returns the report for the result JSON."""
    from edgekit.prune.run import prune_and_distill_loaded

    job, lm = st.job, st.model
    samples = st.samples
    if job.distill_steps and (samples is None or samples.synthetic):
        raise DataError("distillation needs real unlabeled samples, not synthetic random inputs",
                        hint="pass --calibration DATA (.npz/.npy, image folder, text file or a shipped set)")
    if samples is not None and samples.synthetic and job.importance in ("taylor", "variance"):
        samples = None  # the criterion then reports that it needs calibration data
    teacher = lm.module
    student, report = prune_and_distill_loaded(
        lm, samples, prune=job.prune, prune_macs=job.prune_macs, exclude=tuple(job.prune_exclude),
        round_to=job.round_to, importance=job.importance, allocation=job.allocation,
        layout_target=list(job.targets) if job.layout_by_latency else None, distill_steps=job.distill_steps, seed=job.seed)
    lm.meta["unpruned_module"] = teacher
    lm.module = student
    return report
