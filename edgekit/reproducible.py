"""Torch work whose numbers become an artifact's weights runs on a fixed number of threads.

torch's CPU kernels split reductions by thread count (oneDNN convolutions, the GEMMs of a backward pass): the
same pruning refit, distillation or int8 fine-tuning on 1, 2 or 8 threads ends in different float32 weights,
so the artifact's bytes depended on OMP_NUM_THREADS and on the number of cores of the machine that built it
(a laptop and a CI runner disagreed; a cache filled on one looked wrong on the other). Those stages run
under `fixed_torch_threads()`: EDGEKIT_TORCH_THREADS threads (default 1, which is also what a build system
running several edgekit tasks at once wants). The same value gives the same bytes; another value is another
build input (`edgekit build` keys on it).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from edgekit.errors import UsageError

ENV = "EDGEKIT_TORCH_THREADS"
DEFAULT_THREADS = 1

F = TypeVar("F", bound=Callable[..., Any])


def torch_threads() -> int:
    """The thread count for artifact-shaping torch work (EDGEKIT_TORCH_THREADS, default 1)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"{ENV}={raw!r} is not a thread count",
                         hint=f"set it to a positive integer (default {DEFAULT_THREADS}) or unset it")
    return n


@contextmanager
def fixed_torch_threads() -> Iterator[None]:
    """Run the block with torch on `torch_threads()` intra-op threads; the caller's setting comes back after."""
    import torch

    n = torch_threads()
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def reproducible(fn: F) -> F:
    """Decorator: `fn` runs under fixed_torch_threads()."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with fixed_torch_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
