"""Sample readers shared by calibration, distillation, verification and profiling.

A *sample* is one model input: a dict {input name: np.ndarray with a leading batch dim of 1}.
`load_samples(spec, inputs, ...)` turns what the user gave (`--calibration DATA`) into a SampleSet.
Readers are registered in READERS (first one whose `accepts(spec)` is true wins): adding a data
kind is one entry plus one module.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import DataError


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str | None, ...]  # str/None = dynamic axis (e.g. "batch", "seq")
    dtype: str = "float32"

    def concrete_shape(self, overrides: dict[str, int] | None = None) -> tuple[int, ...]:
        """Shape with dynamic axes filled: batch -> 1, others from overrides or a default of 16."""
        overrides = overrides or {}
        out = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int) and d > 0:
                out.append(d)
            elif isinstance(d, str) and d in overrides:
                out.append(overrides[d])
            else:
                out.append(1 if i == 0 else 16)
        return tuple(out)


@dataclass
class SampleSet:
    """A reproducible, re-iterable set of samples. `make(i)` builds sample i lazily (bounded memory)."""

    description: str
    count: int
    make: Any  # Callable[[int], dict[str, np.ndarray]]
    synthetic: bool = False
    labels: np.ndarray | None = None  # optional ground-truth labels, one per sample
    meta: dict[str, Any] = field(default_factory=dict)
    indices: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in self._idx():
            yield self.make(i)

    def _idx(self) -> Sequence[int]:
        return self.indices if self.indices is not None else range(self.count)

    def label_array(self) -> np.ndarray | None:
        if self.labels is None:
            return None
        return np.asarray(self.labels)[list(self._idx())]

    def subset(self, idx: Sequence[int], description: str | None = None) -> SampleSet:
        base = list(self._idx())
        return SampleSet(description or self.description, self.count, self.make, self.synthetic,
                         self.labels, dict(self.meta), [base[i] for i in idx])

    def select(self, n: int | None, seed: int = 0) -> SampleSet:
        """N samples picked reproducibly (seeded); all when n is None or >= len."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise DataError(f"--calibration-size must be positive, got {n}")
        idx = sorted(np.random.default_rng(seed).choice(len(self), size=n, replace=False).tolist())
        return self.subset(idx, f"{self.description} ({n} of {len(self)}, seed {seed})")

    def split(self, held_out: float = 0.25, seed: int = 0) -> tuple[SampleSet, SampleSet]:
        """(calibration part, held-out part), disjoint and reproducible."""
        n = len(self)
        if n < 2:
            return self, self
        perm = np.random.default_rng(seed).permutation(n)
        k = max(1, int(round(n * held_out)))
        return self.subset(sorted(perm[k:].tolist())), self.subset(sorted(perm[:k].tolist()))


# Registry: module paths with `accepts(spec: str) -> bool` and
# `read(spec: str, inputs: list[InputSpec], **opts) -> SampleSet`. Order matters.
READERS: list[str] = [
    "edgekit.data.arrays",  # .npy / .npz
    "edgekit.data.text",  # .txt, one sentence per line + tokenizer.json
    "edgekit.data.images",  # image folder (or one image) + preprocessing spec
    "edgekit.data.shipped",  # named sets in calibration/*.toml (natural_images, sentences, mnist)
]


def load_samples(spec: str, inputs: list[InputSpec], **opts: Any) -> SampleSet:
    for mod_name in READERS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue
            raise
        if mod.accepts(spec):
            samples = mod.read(spec, inputs, **opts)
            if len(samples) == 0:
                raise DataError(f"{spec}: contains no samples", hint="give at least one sample")
            from edgekit.data.batching import to_model_batch

            return to_model_batch(samples, inputs, spec)
    raise DataError(
        f"cannot read calibration data '{spec}'",
        hint="give a .npy/.npz of input tensors, an image folder, a text file, or a shipped set name",
    )


def shared_dims(inputs: list[InputSpec], dims: dict[str, int] | None = None) -> dict[str, int]:
    """One value per named dynamic axis across all inputs (the given ones, else where the name first appears:
    1 on a leading axis, 16 elsewhere). Filled by position alone, x[t, b, 8] and lengths[b] got b = 16 and b = 1,
    and the model failed on its own synthetic inputs (an internal error)."""
    out = dict(dims or {})
    for spec in inputs:
        for axis, d in enumerate(spec.shape):
            if isinstance(d, str) and d not in out:
                out[d] = 1 if axis == 0 else 16
    return out


def synthetic_samples(inputs: list[InputSpec], count: int = 8, seed: int = 0,
                      dims: dict[str, int] | None = None, id_high: dict[str, int] | None = None) -> SampleSet:
    """Random inputs of the right shape and dtype (integer inputs get small non-negative ids, below
    `id_high[name]` when given: the size of the embedding table the input indexes, see id_bounds.py)."""
    id_high = id_high or {}
    dims = shared_dims(inputs, dims)

    def make(i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed * 100003 + i)
        feed = {}
        for spec in inputs:
            shape = spec.concrete_shape(dims)
            if np.dtype(spec.dtype).kind in "iu":
                high = max(1, min(100, id_high.get(spec.name, 100)))
                arr = rng.integers(1 if high > 1 else 0, high, size=shape).astype(spec.dtype)
                if "mask" in spec.name:
                    arr = np.ones(shape, dtype=spec.dtype)
            else:
                arr = rng.standard_normal(shape).astype(spec.dtype)
            feed[spec.name] = arr
        return feed

    return SampleSet(f"{count} synthetic samples", count, make, synthetic=True)
