"""Sensitivity allocation: how many channels each group keeps, chosen by each group's measured effect on
the model's output rather than by comparing importance scores across layers.

Global allocation ranks channels of different layers against each other by a per-channel score (L2,
variance, ...), which says nothing about what losing them costs at the output: on mobilenet_v2 the cheap
late expansion layers and the costly early ones score alike. Here each group is pruned alone to a few
keep fractions (its least important channels first, the same choice the final model makes) and the
output loss against the unpruned model is measured on calibration samples (KL divergence of the softmax
for classifiers, normalised MSE otherwise). Assuming the losses add up, a greedy pass then removes one
rounding step at a time from the group whose next step costs the least loss per MAC removed, until the
MAC target holds (the loss between measured fractions is interpolated linearly). This is the per-layer
sensitivity analysis of Distiller/NetAdapt, made MAC-aware.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgekit.progress import Progress
from edgekit.prune.allocate import step_of

LEVELS = (0.75, 0.5, 0.25, 0.0)  # keep fractions measured per group (1.0 = no loss; 0.0 = the floor)
MAX_REMOVE = 0.9  # a group never loses more than this fraction of its units


def output_loss(task: str) -> Callable:
    """(student output, teacher output) -> scalar loss (KL for classifiers, normalised MSE otherwise; for integer
    outputs such as an argmax map or class ids, the share of elements that differ)."""
    import torch

    def loss(s, t) -> float:
        if not t.is_floating_point():
            return float((s != t).float().mean()) if t.numel() else 0.0
        s, t = s.float(), t.float()
        if task == "classification" and s.ndim == 2 and s.shape[-1] > 1:
            return float(torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1),
                                                    reduction="batchmean", log_target=True))
        return float(((s - t) ** 2).mean() / (t ** 2).mean().clamp_min(1e-12))

    return loss


def _floor(n: int, step: int) -> int:
    """Fewest units a group may keep: MAX_REMOVE of it gone at most, rounded up to a step (at least one)."""
    return min(n, max(step, -(-(n - int(MAX_REMOVE * n)) // step) * step))


def curves(groups: Sequence, counts_full: list[int], round_to: int,
           loss_at: Callable[[list[int]], float], levels: Sequence[float] = LEVELS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group, (kept units, loss) measured with only that group pruned (kept = all -> loss 0), down to
    the fewest units the allocation may keep, so that no step is priced by extrapolation."""
    out = []
    with Progress("pruning sensitivity", total=len(groups) * len(levels)) as prog:
        for i, g in enumerate(groups):
            n, step = len(g.units), step_of(g, round_to)
            ks, ls = [n], [0.0]
            for f in levels:
                k = max(step, int(round(n * f / step)) * step, _floor(n, step))
                if k < ks[-1]:
                    trial = list(counts_full)
                    trial[i] = k
                    ks.append(k)
                    ls.append(max(loss_at(trial), ls[-1]))  # monotone: fewer channels never cost less
                prog.update(1)
            out.append((np.array(ks[::-1], float), np.array(ls[::-1], float)))
    return out


def allocate_by_sensitivity(groups: Sequence, curves_: list[tuple[np.ndarray, np.ndarray]], round_to: int,
                            macs_removed: Callable[[list[int]], float], target: float) -> list[int]:
    """Greedy: remove one rounding step from the group with the least interpolated loss per MAC removed
    until macs_removed(counts) >= target (or nothing can go). A group's MAC gain shrinks when a neighbour
    narrows, so cached gains are upper bounds: the best candidate is re-measured before it is taken
    (lazy greedy), which keeps the MAC counter calls near one per step on a deep network."""
    counts = [len(g.units) for g in groups]
    floor = [_floor(len(g.units), step_of(g, round_to)) for g in groups]
    current = macs_removed(counts)
    gains: dict[int, float] = {}
    fresh: set[int] = set()  # groups whose gain was measured at the current counts

    def trial(i: int) -> list[int]:
        return counts[:i] + [counts[i] - step_of(groups[i], round_to)] + counts[i + 1:]

    def remeasure(i: int) -> None:
        gains[i] = macs_removed(trial(i)) - current
        fresh.add(i)

    def score(i: int) -> float:
        ks, ls = curves_[i]
        cost = float(np.interp(counts[i] - step_of(groups[i], round_to), ks, ls) - np.interp(counts[i], ks, ls))
        return max(cost, 0.0) / gains[i] if gains[i] > 0 else np.inf

    while current < target:
        live = [i for i in range(len(groups)) if counts[i] - step_of(groups[i], round_to) >= floor[i]]
        for i in live:
            if i not in gains:
                remeasure(i)
        live = [i for i in live if gains[i] > 0]
        if not live:
            break
        best = min(live, key=score)
        if best not in fresh:  # stale upper bound: re-measure, then choose again
            remeasure(best)
            continue
        counts = trial(best)
        current = macs_removed(counts)
        gains.pop(best, None)
        fresh.clear()
    return give_back(groups, curves_, counts, round_to, lambda c: macs_removed(c) >= target)


def predicted_loss(curves_: list[tuple[np.ndarray, np.ndarray]], counts: Sequence[int]) -> float:
    """Sum of the groups' interpolated losses at `counts` (the additive model the allocation uses)."""
    return float(sum(np.interp(k, ks, ls) for (ks, ls), k in zip(curves_, counts)))


def give_back(groups: Sequence, curves_: list[tuple[np.ndarray, np.ndarray]], counts: list[int], round_to: int,
              ok: Callable[[list[int]], bool]) -> list[int]:
    """Coarse steps overshoot the target: restore the step that saves the most loss while `ok` holds."""
    counts = list(counts)
    while True:
        best, now = None, predicted_loss(curves_, counts)
        for i, g in enumerate(groups):
            step = step_of(g, round_to)
            if counts[i] + step > len(g.units):
                continue
            trial = counts[:i] + [counts[i] + step] + counts[i + 1:]
            saved = now - predicted_loss(curves_, trial)
            if (best is None or saved > best[0]) and ok(trial):
                best = (saved, trial)
        if best is None:
            return counts
        counts = best[1]
