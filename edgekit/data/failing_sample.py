"""Which user sample the source model failed on, and why that is a data problem.

The references are the source model's own outputs on the user's samples. When the model raises on one of them
(a sentence longer than its position table, an image of a size it cannot take), the runtime's message alone read
as an internal error; `Tracked` remembers the sample being run and `data_failure` names it, with its shapes and,
for text, the max_length that cut it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import DataError


class Tracked:
    """Iterates `samples`, remembering the last sample handed out and the longest axis 1 among those that ran."""

    def __init__(self, samples: Iterable[dict[str, np.ndarray]]) -> None:
        self.samples, self.last, self.ran, self.longest_ok = samples, None, 0, 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for feed in self.samples:
            if self.last is not None:  # the previous one ran
                self.ran += 1
                self.longest_ok = max(self.longest_ok, _length(self.last))
            self.last = feed
            yield feed


def _length(feed: dict[str, np.ndarray]) -> int:
    return max((np.asarray(a).shape[1] for a in feed.values() if np.asarray(a).ndim > 1), default=0)


def data_failure(samples: Any, tracked: Tracked, exc: BaseException) -> DataError:
    """The DataError for the model failing on tracked.last, a sample of `samples` (a SampleSet)."""
    feed = tracked.last or {}
    shapes = ", ".join(f"{k} {'x'.join(map(str, np.asarray(v).shape))} {np.asarray(v).dtype}" for k, v in feed.items())
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    why = lines[0].split("Status Message:")[-1].strip()
    why = why if len(why) <= 200 else "..." + why[-200:]  # ONNX Runtime's says what broke at its end
    meta = getattr(samples, "meta", {}) or {}
    ran = f" (after {tracked.ran} that ran)" if tracked.ran else ""
    message = f"{samples.description}: the model fails on a sample ({shapes}){ran}: {why}"
    hint = "give data the model accepts (the shapes and value ranges it was trained on)"
    if meta.get("kind") == "text":
        n, limit, origin = _length(feed), meta.get("max_length"), meta.get("max_length_from")
        message = (f"{samples.description}: the model fails on a sentence of {n} tokens{ran}: {why}")
        if tracked.longest_ok and n > tracked.longest_ok:
            message += f"; sentences of up to {tracked.longest_ok} tokens ran"
        where = str(meta.get("where", ""))
        sidecar = Path(where).with_suffix(".toml").name if where.lower().endswith(".txt") else None
        how = f"write max_length = N in {sidecar} next to the text" if sidecar else "set max_length = N"
        hint = (f"sentences are cut at {limit} tokens, {'the default' if origin == 'default' else 'set by the ' + origin}"
                f": if the model takes fewer positions, {how}")
        if origin == "input shape":
            hint = f"the input shape pads every sentence to {limit} tokens; give a length the model takes"
    return DataError(message, hint=hint)
