"""Budgets and tolerances of a [[models]] entry, checked against each built artifact.

One function per budget in BUDGETS: it returns a Check (the figure, the limit, whether it holds, and
how the figure was obtained) or None when the entry sets no such budget. Latency figures come from
edgekit.profile (a measurement on the named device, or the roofline estimate for 'estimate') and are
stored in the cache entry, so an unchanged build does not measure again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.build.config import ModelConfig

MB = 1_000_000
LATENCY_RUNS = 30


@dataclass
class Check:
    budget: str  # config key
    limit: float
    value: float | None
    ok: bool
    unit: str
    basis: str  # how the value was obtained
    model: str = ""
    target: str = ""

    def message(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g} {self.unit}"
        rel = "<=" if self.ok else ">"
        if self.budget in ("cosine", "top1_agreement"):
            rel = ">=" if self.ok else "<"
        return (f"{self.model} [{self.target}]: {self.budget} {shown} {rel} {self.limit:g} {self.unit} "
                f"({self.basis})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model"), d.pop("target")
        return d


def size_budget(model: ModelConfig, entry: dict[str, Any], measure: Callable) -> Check | None:
    limit = model.get("max_size_mb")
    if limit is None:
        return None
    art = entry.get("artifact") or {}
    size = art.get("size_bytes")
    if size is None:
        size = sum(f["size"] for f in entry["files"])
    return Check("max_size_mb", limit, size / MB, size / MB <= limit, "MB",
                 f"{size} bytes: {', '.join(f['path'] for f in entry['files'])}")


def accuracy_drop(entry: dict[str, Any]) -> tuple[float | None, str]:
    """The artifact's accuracy drop vs the source model, and what it is based on.

    Labelled evaluation data (quantization report) wins; else, for classifiers, the top-1
    disagreement with the source model (an upper bound on the accuracy drop); else 1 - cosine."""
    art = entry.get("artifact", {})
    q = art.get("quantization") or {}
    for key in ("accuracy_drop", "drop"):
        if isinstance(q.get(key), (int, float)):
            return float(q[key]), "accuracy on the evaluation data, source minus artifact"
    v = art.get("verification") or {}
    n = v.get("samples")
    if isinstance(v.get("top1_agreement"), (int, float)):
        return 1.0 - float(v["top1_agreement"]), f"top-1 disagreement with the source model on {n} samples"
    if isinstance(v.get("cosine"), (int, float)):
        return 1.0 - float(v["cosine"]), f"1 - cosine similarity to the source model on {n} samples"
    if isinstance(v.get("integer_agreement"), (int, float)):  # every output integer (an argmax map)
        return 1.0 - float(v["integer_agreement"]), f"share of integer output elements changed on {n} samples"
    return None, "no verification figures (verify = false?)"


def accuracy_budget(model: ModelConfig, entry: dict[str, Any], measure: Callable) -> Check | None:
    limit = model.get("max_accuracy_drop")
    if limit is None:
        return None
    value, basis = accuracy_drop(entry)
    return Check("max_accuracy_drop", limit, value, value is not None and value <= limit, "", basis)


def latency_budget(model: ModelConfig, entry: dict[str, Any], measure: Callable) -> Check | None:
    limit = model.get("max_latency_ms")
    if limit is None:
        return None
    device = model.get("latency_device", "estimate")
    prof = measure(entry, device)
    value = next((prof[k] for k in ("p50_ms", "estimate_ms", "latency_ms", "mean_ms")
                  if isinstance(prof.get(k), (int, float))), None)
    kind = "roofline estimate" if prof.get("estimate") or device == "estimate" else "median of measured runs"
    label = prof.get("device") or device
    note = f"; {prof['note']}" if prof.get("note") else ""
    return Check("max_latency_ms", limit, value, value is not None and value <= limit, "ms",
                 f"{kind} on {label}{note}")


BUDGETS: dict[str, Callable[[ModelConfig, dict[str, Any], Callable], Check | None]] = {
    "max_size_mb": size_budget,
    "max_accuracy_drop": accuracy_budget,
    "max_latency_ms": latency_budget,
}


def check_budgets(model: ModelConfig, entry: dict[str, Any], measure: Callable) -> list[Check]:
    out = []
    for fn in BUDGETS.values():
        c = fn(model, entry, measure)
        if c is not None:
            c.model, c.target = model.name, entry["target"]
            out.append(c)
    return out


def check_tolerances(model: ModelConfig, entry: dict[str, Any]) -> list[Check]:
    """The entry's own verification tolerances (stricter or looser than the target's)."""
    tol = model.get("tolerances") or {}
    v = (entry.get("artifact") or {}).get("verification") or {}
    out = []
    for key, limit in tol.items():
        value = v.get(key)
        higher_is_better = key in ("cosine", "top1_agreement")
        ok = value is not None and (value >= limit if higher_is_better else value <= limit)
        out.append(Check(key, limit, value, ok, "", f"verification on {v.get('samples', 0)} samples",
                         model.name, entry["target"]))
    return out


def profile_for_budget(path: Path, device: str) -> dict[str, Any]:
    """Latency of one artifact on `device` ('estimate' = roofline estimate on this host's profile)."""
    from edgekit.profile import profile_artifact

    if device == "estimate":
        return profile_artifact(path, "local", options={"estimate": True})
    return profile_artifact(path, device, runs=LATENCY_RUNS, warmup=5)
