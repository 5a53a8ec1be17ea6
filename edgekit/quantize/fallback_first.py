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
  4. when j < k, the graph with j layers float is fine-tuned again (from the plain values) and kept when its
     held-out drop is lower; otherwise the values learned at k stay.
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


def finetune_within_budget(cal: Any, order: list[str], k: int, score: Callable[[list[str]], float],
                           max_drop: float, work: Path, samples: SampleSet, steps: int, task: str,
                           seed: int = 0) -> tuple[int, dict[str, Any]]:
    """Fine-tune `cal` (static.Calibrated, left holding the kept values in `cal.finetuned`) around the first k
    layers of `order` float, then float fewer; returns (float layers j <= k, the report's figures).

    score(layers): held-out drop of `cal` written with `layers` float (with whatever `cal.finetuned` holds).
    """
    info: dict[str, Any] = {"fallback_first": True, "float_before": k, "float_after": k, "tries": []}
    cal.tune(work / "finetune.onnx", samples, steps, task, seed, order[:k])
    if cal.finetuned is None:
        info["outcome"] = "skipped (the graph does not run in the torch evaluator)"
        return k, info
    j, info["tries"] = control.fewest(order, score, max_drop, k)
    if j < 0:
        warn(f"int8 fine-tuning with {k} layer(s) float misses --max-drop {max_drop} on the held-out set "
             f"(drop {info['tries'][0]['drop']}): shipping without fine-tuning")
        cal.finetuned = None
        info["outcome"] = "dropped: the fine-tuned graph misses the budget"
        return k, info
    info["float_after"] = j
    info["outcome"] = "fine-tuned"
    if j < k:
        info["refinetune"] = _refinetune(cal, order[:j], score, work, samples, steps, task, seed,
                                         drop=next(t["drop"] for t in info["tries"] if t["kept_float"] == j))
    log(f"int8 fine-tuning around the float layers: {k} -> {j} layer(s) kept float within --max-drop {max_drop}")
    return j, info


def _refinetune(cal: Any, layers: list[str], score: Callable[[list[str]], float], work: Path, samples: SampleSet,
                steps: int, task: str, seed: int, drop: float) -> dict[str, Any]:
    """Fine-tune again with only `layers` float; keep it when its held-out drop beats `drop` (the values
    learned with more layers float)."""
    t0 = time.perf_counter()
    first = cal.finetuned
    cal.tune(work / "refinetune.onnx", samples, steps, task, seed, layers)
    again = score(layers) if cal.finetuned is not None else None
    kept = again is not None and again < drop
    if not kept:
        cal.finetuned = first
    return {"float": len(layers), "drop_before": drop, "drop": again, "kept": kept,
            "seconds": round(time.perf_counter() - t0, 1)}
