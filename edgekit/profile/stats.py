"""Summary statistics of timed runs (milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list."""
    if not sorted_ms:
        return math.nan
    pos = (len(sorted_ms) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def summarize(times_ms: Sequence[float]) -> dict[str, float | int | None]:
    """mean/std (population)/min/max/p50/p90/p99 of the timed runs; None for every figure when empty."""
    n = len(times_ms)
    if n == 0:
        return {k: None for k in ("mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms")} | {"runs": 0}
    s = sorted(float(t) for t in times_ms)
    mean = sum(s) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in s) / n)
    return {
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": s[0],
        "max_ms": s[-1],
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "runs": n,
    }
