"""Parse the text output of TensorFlow Lite / LiteRT's `benchmark_model` into edgekit's profile schema.

Handles the plain, "INFO: "-prefixed and Android logcat-prefixed ("... I tflite  : ") forms, the
count/first/curr/min/max/avg/std line (+ p5/median/p95 in newer tools), the "Inference timings in us"
summary, both memory lines, and the --enable_op_profiling tables (Run Order of the regular runs).
benchmark_model does not report p90/p99 nor per-run times: those figures are null, and said so.
"""

from __future__ import annotations

import re
from typing import Any

_PREFIX = re.compile(r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+\S+\s*:\s?|INFO:\s|[VDIWEF] tflite\s*:\s?)")
_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_SUMMARY = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                      rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_COUNT = re.compile(r"^count=(\d+)(.*)$")
_KV = re.compile(rf"(\w+)={_NUM}")
_MEM = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                  rf"init={_NUM} overall={_NUM}")
_MEM_OVERALL = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")
_RUNS_HDR = re.compile(r"Running benchmark for at least (\d+) iterations")


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1)


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Figures in milliseconds. Raises ValueError when the text has no "Inference timings" summary."""
    lines = [strip_prefix(raw) for raw in text.splitlines()]
    summary = None
    count_lines: list[dict[str, float]] = []
    mem: dict[str, float] = {}
    threads = None
    for line in lines:
        s = line.strip()
        if m := _SUMMARY.search(s):
            summary = [float(x) for x in m.groups()]
        elif m := _COUNT.match(s):
            stats = {k: float(v) for k, v in _KV.findall(m.group(2))}
            stats["count"] = float(m.group(1))
            count_lines.append(stats)
        elif m := _MEM.search(s):
            mem = {"init": float(m.group(1)), "overall": float(m.group(2))}
        elif m := _MEM_OVERALL.search(s):
            mem.setdefault("overall", float(m.group(1)))
        elif s.startswith(("Num threads: [", "#threads used for CPU inference: [")):
            threads = int(re.findall(r"\[(-?\d+)\]", s)[0]) if re.findall(r"\[(-?\d+)\]", s) else threads
    if summary is None:
        raise ValueError("no 'Inference timings in us' line in the benchmark_model output")
    init_us, first_us, warmup_us, avg_us = summary
    # the regular runs' line is the last "count=" line before the summary that has min/avg (warm-up comes first)
    regular = next((c for c in reversed(count_lines) if "avg" in c), None)
    res: dict[str, Any] = {
        "load_ms": init_us / 1e3,
        "first_ms": first_us / 1e3,
        "warmup_mean_ms": warmup_us / 1e3,
        "mean_ms": avg_us / 1e3,
        "std_ms": regular["std"] / 1e3 if regular and "std" in regular else None,
        "min_ms": regular["min"] / 1e3 if regular and "min" in regular else None,
        "max_ms": regular["max"] / 1e3 if regular and "max" in regular else None,
        "p50_ms": regular["median"] / 1e3 if regular and "median" in regular else None,
        "p90_ms": None,
        "p99_ms": None,
        "p5_ms": regular["p5"] / 1e3 if regular and "p5" in regular else None,
        "p95_ms": regular["p95"] / 1e3 if regular and "p95" in regular else None,
        "runs": int(regular["count"]) if regular else None,
        "peak_memory_mb": mem.get("overall"),
        "threads_reported": threads,
        "note": "from benchmark_model's own summary: it reports no per-run times, so p90/p99 are null"
                + ("" if regular and "median" in regular else " and p50 too (this build prints no median)")
                + "; peak_memory_mb is its memory footprint delta from the start of the tool",
    }
    layers = parse_op_profile(lines)
    if layers is not None:
        res["layer_rows"] = layers
    return res


def parse_op_profile(lines: list[str]) -> list[dict[str, Any]] | None:
    """Rows of the "Run Order" table of the regular runs (--enable_op_profiling=true), or None."""
    try:
        start = next(i for i, ln in enumerate(lines) if "Operator-wise Profiling Info for Regular Benchmark Runs" in ln)
    except StopIteration:
        return None
    rows: list[dict[str, Any]] = []
    cols: list[str] | None = None
    for ln in lines[start + 1:]:
        s = ln.strip()
        if not s:
            if cols is not None and rows:
                break
            continue
        if s.startswith("=====") and "Run Order" not in s:
            if rows:
                break
            continue
        if "[node type]" in s:
            cols = [c.strip() for c in re.findall(r"\[([^\]]+)\]", s)]
            continue
        if cols is None or s.startswith("====="):
            continue
        cells = [c for c in re.split(r"\s*\t\s*|\s{2,}", s) if c != ""]
        if len(cells) < len(cols):
            continue
        # node type may contain spaces (XNNPACK detailed ops), the name is the last cell
        n_num = len(cols) - 2
        op_type = " ".join(cells[: len(cells) - n_num - 1])
        nums = cells[len(cells) - n_num - 1: -1]
        rec = dict(zip(cols[1:-1], nums))
        try:
            ms = float(rec["avg ms"])
        except (KeyError, ValueError):
            continue
        name = cells[-1]
        unit = op_type if "delegate" in op_type.lower() else "CPU kernel"
        rows.append({"name": name, "op_type": op_type, "ms": ms, "unit": unit, "order": len(rows)})
    return rows
