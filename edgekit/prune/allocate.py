"""How many units each group keeps: uniform or global allocation, rounded to hardware multiples."""

from __future__ import annotations

from math import gcd

import numpy as np

from edgekit.errors import UsageError
from edgekit.prune.graph import Group

ALLOCATIONS = ("uniform", "global")
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
