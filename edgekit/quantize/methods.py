"""Calibration methods: turn a tensor's streamed statistics into a (low, high) quantization range.

One small function per method, registered in METHODS:
  minmax      the observed min and max
  percentile  clip the tails: low/high at (100 - p)% / p% of the histogram (p = 99.999 by default)
  entropy     TensorRT-style KL divergence: the |x| threshold whose quantized histogram loses least information
  mse         the clipping range (observed range scaled by a in (0, 1]) with the least expected squared error
Every range contains 0 (so zero is exact), as QDQ needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgekit.quantize.collect import BINS, TensorStats

Range = tuple[float, float]


def _with_zero(lo: float, hi: float, stats: TensorStats) -> Range:
    lo, hi = max(lo, stats.lo), min(hi, stats.hi)
    return min(lo, 0.0), max(hi, 0.0)


def minmax(stats: TensorStats, **_: object) -> Range:
    return min(stats.lo, 0.0), max(stats.hi, 0.0)


def percentile(stats: TensorStats, *, percentile: float = 99.999, symmetric: bool = False, **_: object) -> Range:
    if stats.hist is None or stats.hist.sum() == 0:
        return minmax(stats)
    edges_hi = stats.centers() + stats.limit / BINS  # right edge of each bin
    edges_lo = edges_hi - 2 * stats.limit / BINS
    cdf = np.cumsum(stats.hist) / stats.hist.sum()
    tail = 1.0 - percentile / 100.0
    if symmetric:
        t = _abs_threshold(stats, percentile)
        return _with_zero(-t, t, stats)
    lo = edges_lo[int(np.searchsorted(cdf, tail, side="left"))]
    hi = edges_hi[min(int(np.searchsorted(cdf, 1.0 - tail, side="left")), BINS - 1)]
    return _with_zero(float(lo), float(hi), stats)


def _abs_hist(stats: TensorStats) -> np.ndarray:
    half = BINS // 2
    return stats.hist[half:] + stats.hist[:half][::-1]  # bin k covers |x| in [k w, (k+1) w)


def _abs_threshold(stats: TensorStats, pct: float) -> float:
    h = _abs_hist(stats)
    cdf = np.cumsum(h) / max(h.sum(), 1)
    k = int(np.searchsorted(cdf, pct / 100.0, side="left"))
    return (k + 1) * (2 * stats.limit / BINS)


def entropy(stats: TensorStats, *, quant_levels: int | None = None, stride: int = 2, **_: object) -> Range:
    """Smallest KL(P || Q) over thresholds, P = clipped |x| histogram, Q = P squeezed to the int8 levels."""
    if stats.hist is None or stats.hist.sum() == 0:
        return minmax(stats)
    h = _abs_hist(stats).astype(np.float64)
    nq = quant_levels or (256 if stats.lo >= 0 else 128)  # one-sided tensors use all uint8 levels
    last = int(np.nonzero(h)[0][-1]) + 1
    if last <= nq:
        return minmax(stats)
    best_kl, best_i = np.inf, last
    for i in range(nq, last + 1, stride):
        ref = h[:i]
        p = ref.copy()
        p[i - 1] += h[i:].sum()
        bounds = (np.arange(nq) * i) // nq
        sizes = np.diff(np.append(bounds, i))
        nonzero = ref > 0
        sums = np.add.reduceat(ref, bounds)
        counts = np.add.reduceat(nonzero.astype(np.float64), bounds)
        q = np.repeat(sums / np.maximum(counts, 1), sizes) * nonzero
        mask = p > 0
        ps = p[mask] / p.sum()
        qs = np.maximum(q[mask], 1e-12) / max(q.sum(), 1e-12)
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    t = best_i * 2 * stats.limit / BINS
    return _with_zero(-t, t, stats)


def mse(stats: TensorStats, *, qrange: tuple[int, int] = (0, 255), symmetric: bool = False,
        steps: int = 100, **_: object) -> Range:
    """The range (lo, hi) * a, a in (0, 1], minimizing the histogram-weighted squared quantization error."""
    if stats.hist is None or stats.hist.sum() == 0:
        return minmax(stats)
    c = stats.centers()
    n = stats.hist.astype(np.float64)
    keep = n > 0
    c, n = c[keep].astype(np.float64), n[keep]
    lo0, hi0 = minmax(stats)
    if symmetric:
        t = max(-lo0, hi0)
        lo0, hi0 = -t, t
    qmin, qmax = qrange
    alphas = np.linspace(1.0 / steps, 1.0, steps)[:, None]
    lo, hi = lo0 * alphas, hi0 * alphas
    scale = np.maximum((hi - lo) / (qmax - qmin), 1e-12)
    zp = np.clip(np.round(qmin - lo / scale), qmin, qmax) if not symmetric else np.full_like(scale, (qmin + qmax + 1) // 2)
    q = np.clip(np.round(c[None, :] / scale) + zp, qmin, qmax)
    err = ((c[None, :] - (q - zp) * scale) ** 2 * n[None, :]).sum(axis=1)
    a = float(alphas[int(np.argmin(err)), 0])
    return _with_zero(lo0 * a, hi0 * a, stats)


METHODS: dict[str, Callable[..., Range]] = {
    "minmax": minmax,
    "percentile": percentile,
    "entropy": entropy,
    "mse": mse,
}
NEEDS_HISTOGRAM = {"minmax": False, "percentile": True, "entropy": True, "mse": True}


def compute_ranges(stats: dict[str, TensorStats], method: str, **kw: object) -> dict[str, Range]:
    fn = METHODS[method]
    return {name: fn(s, **kw) for name, s in stats.items() if s.count > 0}
