"""--int8-finetune with --max-drop: choose the float layers first, fine-tune around them, then give some back.

Fine-tuning the all-int8 graph and then searching for float layers spends the budget badly: the learned
roundings and scales compensate each other's errors, so floating one group of a fine-tuned graph alone can
make its output worse (mobilenet_v2, --max-drop 0.03: 28 layers float without fine-tuning, 41 after
--int8-finetune 100; floating 4 groups of the fine-tuned graph cost 7.3% agreement, 8 groups 9.3%). Here:
  1. the caller's search picks k float layers on the plain calibrated graph (as without fine-tuning);
  2. the graph with those k layers float is fine-tuned (finetune.py): the int8 layers learn to reproduce the
     fp32 output next to the float ones;
  3. with the learned values, the fewest j <= k first layers of the same order that still meet the budget
     (control.fewest: bisection over [0, k]); layers int8 again get their plain (not fine-tuned) values;
  4. up to RETUNES more rounds: fine-tune again from the plain values with j layers float when the last
     round found j < its own count (the layers given back learn too), else with j - 1; search again (3.);
     a round is kept when it floats fewer layers, or as many with no higher held-out drop; else stop.
Measured on mobilenet_v2 (150 held-out natural crops, --int8-finetune 100, benchmarks/quantize.py
--finetune 100 --max-drop 0.03): rounds 28 -> 28, 27 -> 26, 26 -> 26: 26 layers float (28 without
fine-tuning, 41 fine-tuning first), top-1 agreement 98.7% ORT / 99.3% OpenVINO (97.3% without), ORT
latency 0.86x fp32 (0.90x without), 500 s. --max-drop 0.08: 25 -> 13, 13 -> 10, 10 -> 3 layers float.
When the fine-tuned graph at k misses the budget on the held-out set, fine-tuning is dropped (k layers float,
plain values), so the result never keeps more layers float than the search without fine-tuning.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.data import SampleSet
from edgekit.progress import log, warn
from edgekit.quantize import control

RETUNES = 2  # fine-tuning runs after the first, each with fewer layers float (or the same, from the plain values)


def finetune_within_budget(cal: Any, order: list[str], k: int, score: Callable[[list[str]], float],
                           max_drop: float, work: Path, samples: SampleSet, steps: int, task: str,
                           seed: int = 0) -> tuple[int, dict[str, Any]]:
    """Fine-tune `cal` (static.Calibrated, left holding the kept values in `cal.finetuned`) around the first k
    layers of `order` float, then float fewer; returns (float layers j <= k, the report's figures).

    score(layers): held-out drop of `cal` written with `layers` float (with whatever `cal.finetuned` holds).
    """
    info: dict[str, Any] = {"fallback_first": True, "float_before": k, "float_after": k, "rounds": []}
    j, tuned_at = k, None
    for _ in range(1 + RETUNES):
        if tuned_at is not None and j == 0:
            break
        at = k if tuned_at is None else j if j < tuned_at else j - 1
        prev = cal.finetuned
        t0 = time.perf_counter()
        cal.tune(work / "finetune.onnx", samples, steps, task, seed, order[:at])
        if cal.finetuned is None:  # the graph does not run in the torch evaluator
            cal.finetuned = prev
            break
        got, tries = control.fewest(order, score, max_drop, at)
        kept = got >= 0 and (got < j or tuned_at is None or _drop(tries, got) <= _drop(info["rounds"][-1]["tries"], j))
        info["rounds"].append({"tuned_with_float": at, "float": got, "tries": tries, "kept": kept,
                               "seconds": round(time.perf_counter() - t0, 1)})
        if not kept:
            cal.finetuned = prev
            break
        j, tuned_at = got, at
    info["float_after"] = j
    if tuned_at is None:
        info["outcome"] = "dropped: the fine-tuned graph misses the budget" if info["rounds"] else \
            "skipped (the graph does not run in the torch evaluator)"
        if info["rounds"]:
            warn(f"int8 fine-tuning with {k} layer(s) float misses --max-drop {max_drop} on the held-out set "
                 f"(drop {info['rounds'][0]['tries'][0]['drop']}): shipping without fine-tuning")
        return k, info
    info["outcome"] = "fine-tuned"
    log(f"int8 fine-tuning around the float layers: {k} -> {j} layer(s) kept float within --max-drop {max_drop}")
    return j, info


def _drop(tries: list[dict], j: int) -> float:
    return next(t["drop"] for t in tries if t["kept_float"] == j)
