"""Samples for a model whose batch axis is fixed above 1: readers make one row per sample (batch 1), the
model takes exactly B rows per run, so B consecutive rows make one sample."""

from __future__ import annotations

import numpy as np

from edgekit.data import InputSpec, SampleSet
from edgekit.errors import DataError


def fixed_batch(inputs: list[InputSpec]) -> int:
    """The batch size the model fixes above 1 (1 when every batch axis is dynamic or 1)."""
    sizes = {s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 1}
    if len(sizes) > 1:
        raise DataError(f"the model's inputs fix different batch sizes {sorted(sizes)}",
                        hint="give --input-shape for each input with one batch size")
    return sizes.pop() if sizes else 1


def to_model_batch(samples: SampleSet, inputs: list[InputSpec], where: str) -> SampleSet:
    """`samples` regrouped into the model's fixed batch (unchanged when it has none, or rows already come batched)."""
    batch = fixed_batch(inputs)
    if batch == 1 or len(samples) == 0:
        return samples
    first = samples.make(samples._idx()[0])
    if all(np.shape(v)[:1] == (batch,) for v in first.values()):
        return samples  # the reader already made whole batches
    count = len(samples) // batch
    if count == 0:
        raise DataError(f"{where}: {len(samples)} sample(s), but the model's batch axis is fixed at {batch}",
                        hint=f"give at least {batch} samples (each run takes {batch} rows)")
    if samples.labels is not None:
        raise DataError(f"{where}: labels with a model whose batch is fixed at {batch} are not supported",
                        hint="export the model with a dynamic or unit batch axis")
    rows = list(samples._idx())

    def make(i: int) -> dict[str, np.ndarray]:
        parts = [samples.make(r) for r in rows[i * batch:(i + 1) * batch]]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    return SampleSet(f"{samples.description}, {batch} rows per run", count, make, samples.synthetic,
                     None, dict(samples.meta))
