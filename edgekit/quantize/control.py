"""Accuracy of an int8 graph against fp32 on held-out samples, and the --max-drop fallback search.

Drop = what the budget is spent on:
  labelled eval set     fp32 accuracy - int8 accuracy (argmax of the first output vs the labels: one per sample,
                        or per pixel/token)
  classification        1 - top-1 agreement with fp32
  embedding             1 - mean cosine similarity with fp32 (first output, per sample)
  generic               1 - mean over samples of the worst output's score as verification has it (verify.output_scores:
                        cosine about the reference's mean; integer outputs: share of equal elements)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.progress import log
from edgekit.quantize.collect import run_checked, session
from edgekit.verify import CONFIDENT, cosine, output_scores, top1_probability, top1_same

Outputs = list[np.ndarray]


def run_outputs(model: Any, samples: SampleSet) -> list[Outputs]:
    sess = session(model)
    return [run_checked(sess, feed, samples.description) for feed in samples]


def held_out_figures(ref: list[Outputs], cand: list[Outputs], task: str) -> dict[str, Any]:
    if task == "generic":  # every output, as verification judges it: a detector's boxes must not hide its scores
        cos = float(np.mean([min(row) for row in output_scores(ref, cand, task)]))
    else:
        cos = float(np.mean([cosine(r[0], c[0]) for r, c in zip(ref, cand)]))
    out: dict[str, Any] = {"samples": len(ref), "cosine": round(cos, 6)}
    if task == "classification":
        same = np.array([top1_same(r[0], c[0]) for r, c in zip(ref, cand)])  # as verification has it
        agree = float(np.mean(same))
        out.update(metric="top1_agreement", top1_agreement=round(agree, 4), drop=round(1.0 - agree, 4))
        sure = np.array([top1_probability(r[0]) >= CONFIDENT for r in ref])
        if sure.any():  # context: agreement where the fp32 model is decisive (not what --max-drop budgets)
            out.update(top1_agreement_confident=round(float(same[sure].mean()), 4), confident_samples=int(sure.sum()))
    else:
        out.update(metric="cosine", drop=round(1.0 - cos, 6))
    return out


def _label_hits(outs: list[Outputs], labels: np.ndarray) -> tuple[int, int]:
    """(correct, judged) class ids of the first output against the labels: one per sample (a classifier), or one
    per pixel or token ((H, W) labels of a (1, C, H, W) segmentation map): the argmax runs over the output's one
    axis the labels lack; an integer output of the labels' shape (the model's own argmax) as it is. Labels outside
    [0, C) (255, -100: 'ignore'; negative ones for an argmax output, whose C is unknown) are not judged."""
    hits = judged = 0
    for o, lab in zip(outs, labels):
        x = np.asarray(o[0])
        y = np.squeeze(x[0] if x.ndim and x.shape[0] == 1 else x)
        lab = np.squeeze(np.asarray(lab))
        if y.shape == lab.shape and np.asarray(y).dtype.kind in "iu":  # the model's own argmax (labels, a map)
            valid = lab >= 0
            hits += int(np.count_nonzero((y == lab) & valid))
            judged += int(np.count_nonzero(valid))
            continue
        axis = next((k for k in range(y.ndim) if y.shape[:k] + y.shape[k + 1:] == lab.shape), None)
        if axis is None:
            from edgekit.errors import DataError

            raise DataError(f"--eval labels of shape {np.shape(lab)} per sample do not fit the model's first output "
                            f"{x.shape}: one class id per sample, or one per element of the output without its class "
                            "axis (a segmentation map's (H, W))", hint="check the 'labels' array of the --eval .npz")
        valid = (lab >= 0) & (lab < y.shape[axis])
        hits += int(np.count_nonzero((np.argmax(y, axis=axis) == lab) & valid))
        judged += int(np.count_nonzero(valid))
    return hits, max(judged, 1)


def labelled_figures(ref: list[Outputs], cand: list[Outputs], labels: np.ndarray) -> dict[str, Any]:
    labels = np.asarray(labels)
    labels = labels.reshape(len(ref), -1) if labels.ndim == 1 or labels.size == len(ref) else labels
    acc32 = _label_hits(ref, labels)
    acc8 = _label_hits(cand, labels)
    acc32, acc8 = acc32[0] / acc32[1], acc8[0] / acc8[1]
    return {"samples": len(labels), "metric": "accuracy", "fp32_accuracy": round(acc32, 4),
            "int8_accuracy": round(acc8, 4), "drop": round(acc32 - acc8, 4)}


def resolution(figures: dict[str, Any] | None) -> float | None:
    """The smallest non-zero drop the judged figures can show: one changed answer among their samples (top-1
    agreement, labelled accuracy); None for cosine, which moves continuously."""
    part = (figures or {}).get("eval") or (figures or {}).get("held_out") or {}
    if part.get("metric") not in ("top1_agreement", "accuracy") or not part.get("samples"):
        return None
    return 1.0 / part["samples"]


class Judge:
    """Scores candidate int8 graphs; fp32 outputs are computed once."""

    def __init__(self, fp32: Any, task: str, held_out: SampleSet | None, eval_set: SampleSet | None) -> None:
        self.task, self.held_out, self.eval_set = task, held_out, eval_set
        self.labels = eval_set.label_array() if eval_set is not None else None
        self.ref_held = run_outputs(fp32, held_out) if held_out is not None else None
        self.ref_eval = run_outputs(fp32, eval_set) if eval_set is not None and self.labels is not None else None
        self.ranked = None  # outputs an in-graph TopK ranks: compared as ranked sets, as verification does
        if self.ref_held is not None and task == "generic":
            import onnx

            from edgekit.verify_ranked import ranked_groups

            self.ranked = ranked_groups(onnx.load(str(fp32), load_external_data=False) if isinstance(fp32, (str, Path))
                                        else fp32)

    @property
    def active(self) -> bool:
        return self.ref_held is not None or self.ref_eval is not None

    def figures(self, candidate: Path) -> dict[str, Any]:
        sess = session(candidate)
        out: dict[str, Any] = {}
        if self.ref_held is not None:
            cand = [run_checked(sess, f, self.held_out.description) for f in self.held_out]
            if self.ranked:
                from edgekit.verify_ranked import align_ranked

                cand = align_ranked(self.ref_held, cand, self.ranked)
            out["held_out"] = held_out_figures(self.ref_held, cand, self.task)
        if self.ref_eval is not None:
            cand = [run_checked(sess, f, self.eval_set.description) for f in self.eval_set]
            out["eval"] = labelled_figures(self.ref_eval, cand, self.labels)
        out["drop"] = (out.get("eval") or out.get("held_out") or {}).get("drop")
        return out


def search(order: list[str], score: Callable[[list[str]], float], max_drop: float) -> tuple[int, list[dict]]:
    """Fewest most-sensitive nodes to keep float so that score(excluded) <= max_drop.

    Doubling (1, 2, 4, ...) until the budget holds, then bisection; returns (k, tries).
    """
    tries: list[dict] = []
    ok = _checker(order, score, max_drop, tries)
    if ok(0):
        return 0, tries
    good, bad, k = None, 0, 1
    while k < len(order):
        if ok(k):
            good = k
            break
        bad, k = k, k * 2
    if good is None:
        if not order or not ok(len(order)):
            return -1, tries
        good = len(order)
    return _bisect(ok, good, bad), tries


def _checker(order: list[str], score: Callable[[list[str]], float], max_drop: float,
             tries: list[dict]) -> Callable[[int], bool]:
    """ok(k): whether the graph with the first k nodes of `order` float meets the budget (logged in `tries`)."""
    def ok(k: int) -> bool:
        d = score(order[:k])
        tries.append({"kept_float": k, "drop": d})
        met = d <= max_drop + 1e-12
        # each try quantizes, writes and runs a whole graph (tens of seconds on a mobilenet): say where it stands
        log(f"accuracy control: {k} of {len(order)} layer(s) float -> drop {d:.4f} "
            f"({'within' if met else 'over'} --max-drop {max_drop:g})")
        return met
    return ok


def _bisect(ok: Callable[[int], bool], good: int, bad: int) -> int:
    """The smallest k in (bad, good] with ok(k), assuming ok is monotone and ok(good) holds."""
    while good - bad > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def fewest(order: list[str], score: Callable[[list[str]], float], max_drop: float, k: int) -> tuple[int, list[dict]]:
    """Fewest j <= k of the first nodes of `order` to keep float so that score(order[:j]) <= max_drop, for a
    graph that changed since `search` found k (bisection over [0, k]); returns (j, tries), j = -1 when k itself
    misses the budget now."""
    tries: list[dict] = []
    ok = _checker(order, score, max_drop, tries)
    if not ok(k):
        return -1, tries
    return _bisect(ok, k, -1), tries
