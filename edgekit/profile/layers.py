"""Per-layer summaries from a runtime profiler's rows ({name, op_type, ms, unit, order})."""

from __future__ import annotations

from typing import Any


def summarize_layers(report: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """Top layers by time, time per op type, and time per execution unit (kernel / provider)."""
    rows = sorted(report.get("rows") or [], key=lambda r: -float(r["ms"]))
    total = sum(float(r["ms"]) for r in rows)
    by_type: dict[str, dict[str, float]] = {}
    by_unit: dict[str, dict[str, float]] = {}
    for r in rows:
        for table, key in ((by_type, r.get("op_type") or "?"), (by_unit, r.get("unit") or "?")):
            e = table.setdefault(key, {"ms": 0.0, "count": 0})
            e["ms"] += float(r["ms"])
            e["count"] += 1
    for table in (by_type, by_unit):
        for e in table.values():
            e["share"] = e["ms"] / total if total else 0.0

    def ordered(t: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return dict(sorted(t.items(), key=lambda kv: -kv[1]["ms"]))

    out: dict[str, Any] = {
        "source": report.get("source"),
        "runs": report.get("runs", 0),
        "statistic": report.get("statistic", "mean"),  # of each layer's time over the runs
        "total_ms": total,
        "layers": len(rows),
        "top": [{"name": r["name"], "op_type": r.get("op_type"), "unit": r.get("unit"), "ms": float(r["ms"]),
                 "share": float(r["ms"]) / total if total else 0.0} for r in rows[:top]],
        "by_op_type": ordered(by_type),
        "by_unit": ordered(by_unit),
        "all": sorted(rows, key=lambda r: r.get("order", 0)),
    }
    if report.get("note"):
        out["note"] = report["note"]
    return out


def format_layers(layers: dict[str, Any], top: int = 10) -> str:
    """Human-readable table for the CLI: the `top` slowest layers (from all of them: the JSON's `top` keeps 10)."""
    if not layers.get("top"):
        return f"per-layer: {layers.get('note') or 'no per-layer data'}"
    total = float(layers["total_ms"])
    rows = sorted(layers.get("all") or layers["top"], key=lambda r: -float(r["ms"]))[:top]
    digits = 3 if total >= 1 else 4 if total >= 0.1 else 5  # a 20 us layer is not "0.000 ms"
    runs = f"{layers.get('statistic', 'mean')} of {layers['runs']} runs, " if layers.get("runs") else ""
    lines = [f"per-layer ({layers['source']}, {runs}{layers['layers']} layers, sum {total:.{digits}f} ms):"]
    lines.append(f"  {'ms':>9} {'share':>6}  {'op type':<18} {'unit':<26} layer")
    for r in rows:
        ms = float(r["ms"])
        lines.append(f"  {ms:9.{digits}f} {100 * ms / total if total else 0.0:5.1f}%  {str(r.get('op_type'))[:18]:<18} "
                     f"{str(r.get('unit'))[:26]:<26} {r['name']}")
    lines.append("  by op type: " + ", ".join(f"{k} {v['ms']:.{digits}f} ms ({100 * v['share']:.0f}%)"
                                             for k, v in list(layers["by_op_type"].items())[:8]))
    return "\n".join(lines)
