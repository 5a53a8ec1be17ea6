"""Shared by the benchmark scripts: median latency over repeats, and a table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], *, warmup: int = 5, runs: int = 30, repeats: int = 3) -> float:
    """Median over `repeats` of the median per-call time of `runs` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    medians = []
    for _ in range(repeats):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        medians.append(statistics.median(times))
    return statistics.median(medians)


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c), *(len(_fmt(r.get(c))) for r in rows)]) for c in columns}
    head = " | ".join(c.ljust(widths[c]) for c in columns)
    sep = "-|-".join("-" * widths[c] for c in columns)
    body = "\n".join(" | ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows)
    return f"{head}\n{sep}\n{body}"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)
