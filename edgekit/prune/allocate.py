"""How many units each group keeps: uniform or global allocation, rounded to hardware multiples; the MAC
target search (search_ratio -> give_back -> tighten, optionally timing candidate layouts)."""

from __future__ import annotations

from math import gcd

import numpy as np

from edgekit.errors import UsageError
from edgekit.progress import log, warn
from edgekit.prune.graph import Group

ALLOCATIONS = ("uniform", "global", "sensitivity")  # sensitivity: measured output loss (sensitivity.py)
SPEED_SLACK = 0.05  # layouts within 5% of the fastest measured one count as equally fast
MAX_GROUP_RATIO = 0.9  # global allocation never removes more than this fraction of one group


def round_keep(n_units: int, keep_target: float, unit_size: int, round_to: int) -> int:
    """Units to keep so that kept channels (units * unit_size) are a multiple of round_to, at least one
    multiple, at most all."""
    step = max(1, round_to // gcd(max(round_to, 1), unit_size)) if round_to > 1 else 1
    if n_units <= step:
        return n_units
    k = int(np.floor(keep_target / step + 0.5)) * step
    return int(min(n_units, max(step, k)))


def step_of(group: Group, round_to: int) -> int:
    """Units per rounding step of a group."""
    return max(1, round_to // gcd(max(round_to, 1), group.unit_size)) if round_to > 1 else 1


def select(scores: list[np.ndarray], counts: list[int]) -> list[np.ndarray]:
    """For each group, the indices (into group.units) of its `count` most important units, sorted."""
    return [np.sort(np.argsort(-s, kind="stable")[:k]) for s, k in zip(scores, counts)]


def allocate(groups: list[Group], scores: list[np.ndarray], ratio: float, allocation: str = "uniform",
             round_to: int = 8) -> list[int]:
    """For each group, how many units it keeps (rounded to multiples)."""
    if allocation not in ALLOCATIONS:
        raise UsageError(f"unknown pruning allocation '{allocation}'", hint=f"choose one of: {', '.join(ALLOCATIONS)}")
    if not 0.0 <= ratio < 1.0:
        raise UsageError(f"pruning ratio must be in [0, 1), got {ratio}", hint="e.g. --prune 0.5 removes half the channels")
    targets: list[float] = []
    if allocation == "sensitivity":
        raise UsageError("sensitivity allocation is chosen by prune_model from calibration data, not by allocate()")
    if allocation == "uniform":
        targets = [len(g.units) * (1.0 - ratio) for g in groups]
    else:
        norm = [s / s.mean() if s.mean() > 0 else s for s in scores]
        allv = np.concatenate(norm) if norm else np.zeros(0)
        weights = np.concatenate([np.full(len(g.units), g.unit_size, float) for g in groups]) if groups else allv
        order = np.argsort(allv, kind="stable")
        cum = np.cumsum(weights[order]) / max(weights.sum(), 1)
        cut = int(np.searchsorted(cum, ratio, side="right"))
        thr = allv[order[cut]] if cut < len(order) else np.inf
        for g, s in zip(groups, norm):
            removed = min(int((s < thr).sum()), int(MAX_GROUP_RATIO * len(g.units)))
            targets.append(len(g.units) - removed)
    return [round_keep(len(g.units), t, g.unit_size, round_to) for g, t in zip(groups, targets)]


def give_back(groups, scores, counts: list[int], round_to: int, ok) -> list[int]:
    """Rounding makes the MAC search overshoot: restore one rounding step of channels at a time, most
    important next units first, as long as the MAC target still holds."""
    counts = list(counts)
    order = sorted(range(len(groups)), key=lambda i: -float(
        np.sort(scores[i])[::-1][counts[i]:counts[i] + step_of(groups[i], round_to)].mean()
        if counts[i] < len(groups[i].units) else -np.inf) / max(float(scores[i].mean()), 1e-12))
    for i in order:
        step = step_of(groups[i], round_to)
        while counts[i] + step <= len(groups[i].units):
            trial = counts[:i] + [counts[i] + step] + counts[i + 1:]
            if not ok(trial):
                break
            counts = trial
    return counts


def tighten(groups, scores, counts: list[int], round_to: int, removed_at, target: float, tolerance: float = 0.01,
             max_rounds: int = 8, exhaustive: int = 4096, measure=None, measured: int = 8, cost=None) -> list[int]:
    """Coarse rounding (e.g. to 16 on AVX-512) can leave the MAC reduction well past the target even after
    give-back (mnist_cnn at 50% with multiples of 16: 55.5%). When the rounded layouts are few (at most
    `exhaustive`), take the one closest to the target that reaches it (ties within 0.1%: most importance
    kept); otherwise move one rounding step from one group to another (the pair landing closest to the
    target) until within `tolerance` of it or no move helps. With `measure` (layout -> seconds), the
    `measured` most important layouts within `tolerance` of the closest one are timed and the fastest wins.
    `cost` (layout -> predicted loss) ranks layouts instead of the importance they keep."""
    import itertools

    counts = list(counts)
    best = removed_at(counts)
    if best - target <= tolerance and measure is None:
        return counts
    options = [list(range(step_of(g, round_to), len(g.units) + 1, step_of(g, round_to))) or [len(g.units)]
               for g in groups]
    if int(np.prod([len(o) for o in options], dtype=float)) <= exhaustive:
        norm = [np.sort(s / s.mean() if s.mean() > 0 else s)[::-1] for s in scores]
        found = [(removed_at(list(c)), c) for c in itertools.product(*options)]
        reach = [(v, c) for v, c in found if v >= target]
        if reach:
            lowest = min(v for v, _ in reach)

            def kept(c: tuple[int, ...]) -> float:
                if cost is not None:
                    return -cost(list(c))
                return sum(float(n[:k].sum()) for n, k in zip(norm, c))

            if measure is not None:
                close = sorted((c for v, c in reach if v <= lowest + tolerance), key=kept, reverse=True)[:measured]
                log(f"timing {len(close)} channel layouts within {100 * tolerance:.0f}% of the MAC target")
                return list(near_fastest(close, measure))
            return list(max((c for v, c in reach if v <= lowest + 0.001), key=kept))
        return counts
    for _ in range(max_rounds):
        if best - target <= tolerance:
            break
        move = None
        for i, gi in enumerate(groups):
            si = step_of(gi, round_to)
            if counts[i] - si < si:
                continue
            for j, gj in enumerate(groups):
                sj = step_of(gj, round_to)
                if i == j or counts[j] + sj > len(gj.units):
                    continue
                trial = list(counts)
                trial[i] -= si
                trial[j] += sj
                value = removed_at(trial)
                if target <= value < best - 1e-9 and (move is None or value < move[0]):
                    move = (value, trial)
        if move is None:
            break
        best, counts = move
    return counts


def near_fastest(layouts: list[tuple[int, ...]], measure, slack: float = SPEED_SLACK,
                 rounds: int = 2) -> tuple[int, ...]:
    """The first layout (the caller orders them best first: most importance kept or least predicted loss) that
    runs within `slack` of the fastest one. Timing noise on a busy machine is several percent, so picking the
    single fastest of near-equal layouts picks by noise; each layout is timed `rounds` times, interleaved, and
    its best time counts. (zoo:mnist_cnn at 50% of MACs, multiples of 16, 12 layouts timed on ONNX Runtime: the
    fastest by one run's timing kept 97.2% of the test digits right; the least predicted loss within 5% of it,
    98.4% at 1.65x the original's speed.)"""
    times = [float("inf")] * len(layouts)
    for _ in range(rounds):
        for i, c in enumerate(layouts):
            times[i] = min(times[i], measure(list(c)))
    fastest = min(times)
    return next(c for c, t in zip(layouts, times) if t <= fastest * (1 + slack))


def search_ratio(removed_at, target: float, hi: float = 0.95, iters: int = 14) -> float:
    """Smallest channel ratio whose MAC reduction reaches `target` (bisection; monotone up to rounding)."""
    if removed_at(hi) < target:
        most = 100 * removed_at(hi)  # a decimal where whole percents read 'cannot remove 30% (at most 30%)'
        shown = f"{most:.0f}" if round(most) < round(100 * target) else f"{most:.1f}"
        warn(f"cannot remove {100 * target:g}% of MACs (at most {shown}% with the prunable layers); pruning as much "
             "as allowed")
        return hi
    lo = 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if removed_at(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi
