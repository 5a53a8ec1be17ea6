"""Assemble the profile result (the `edgekit profile --json` schema) from what a runner streamed.

Schema for one artifact (all times in milliseconds):
  artifact        path of the profiled file          backend     onnxruntime | openvino | litert
  device          where it ran, e.g. "local: CPUExecutionProvider on AMD EPYC ..." or "ssh://pi@host"
  device_kind     local | ssh | adb | estimate        unit        CPU | GPU | NPU | delegate (what ran it)
  estimate        false for measurements (true only for roofline results, see roofline.py)
  load_ms         model load / compile time           first_ms    first inference (after load)
  mean_ms std_ms min_ms max_ms p50_ms p90_ms p99_ms   over `runs` timed runs after `warmup` untimed ones
  cpu_p50_ms cpu_mean_ms   CPU time of all runtime threads per run (wall >> cpu / threads: the runs waited for a
                  core, i.e. the machine was busy with other work)
  runs warmup     counts actually measured            threads     requested threads (null = runtime default)
  peak_memory_mb  RSS high-water mark of the runner process (VmHWM), null when the OS does not say
  rss_before_load_mb  RSS after importing the runtime, before loading the model
  runtime         {name, version, options, providers | device, unit}
  inputs          [{name, shape, dtype}] as the runtime sees them
  samples         {count, synthetic, description}
  layers          per-layer summary (layers.py) or null; {"note": ...} when the runtime has no profiler
  complete        true, or false when the run was cut short (then the figures cover the runs measured)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.profile.layers import summarize_layers
from edgekit.profile.stats import percentile, summarize
from edgekit.profile.stream import Collected


def build_result(col: Collected, *, path: Path, device_label: str, device_kind: str, warmup: int,
                 threads: int | None, samples: dict[str, Any] | None, complete: bool = True) -> dict[str, Any]:
    meta = col.meta or {}
    runtime = meta.get("runtime") or {}
    where = meta.get("device")
    res: dict[str, Any] = {
        "artifact": str(path),
        "backend": runtime.get("name"),
        "device": f"{device_label}: {where}" if where else device_label,
        "device_kind": device_kind,
        "unit": runtime.get("unit"),
        "estimate": False,
        "load_ms": meta.get("load_ms"),
        "first_ms": col.first_ms,
    }
    res.update(summarize(col.runs_ms))
    cpu = sorted(col.cpu_ms)
    res["cpu_p50_ms"] = percentile(cpu, 50) if cpu else None  # the median as p50_ms is (the upper one was taken)
    res["cpu_mean_ms"] = sum(cpu) / len(cpu) if cpu else None
    res.update({
        "warmup": warmup,
        "threads": threads,
        "peak_memory_mb": (col.done or {}).get("peak_memory_mb"),
        "rss_before_load_mb": meta.get("rss_before_load_mb"),
        "runtime": runtime,
        "inputs": meta.get("inputs"),
        "samples": samples,
        "host": {"python": meta.get("python"), "cpu_count": meta.get("cpu_count")},
        "layers": summarize_layers(col.layers) if col.layers else None,
        "complete": complete,
    })
    return res


def measured_keys() -> list[str]:
    """Every key of a measured result (what build_result writes), for results made another way (benchmark_model)."""
    return list(build_result(Collected(), path=Path("-"), device_label="-", device_kind="-", warmup=0, threads=None,
                             samples=None))


def format_result(res: dict[str, Any]) -> str:
    if res.get("estimate"):
        return (f"{res['artifact']} on {res['device']}: ESTIMATE {res['estimate_ms']:.3f} ms "
                f"(roofline: {res['macs'] / 1e6:.1f} MMAC, {res['bytes'] / 1e6:.1f} MB, "
                f"{res['bound_by']['compute']} compute-bound / {res['bound_by']['memory']} memory-bound layers)")
    rt = res.get("runtime") or {}

    def ms(key: str, digits: int = 3) -> str:  # adb/benchmark_model results have no p90/p99 (null), some no p50
        v = res.get(key)
        return "n/a" if v is None else f"{v:.{digits}f}"

    lines = [
        f"{res['artifact']}",
        f"  device   {res['device']}",
        f"  runtime  {rt.get('name')} {rt.get('version') or rt.get('tool') or ''}  threads={res.get('threads') or 'default'}  "
        f"options={rt.get('options')}",
        f"  load {ms('load_ms', 1)} ms   first {ms('first_ms')} ms   peak memory {ms('peak_memory_mb', 1)} MB",
        f"  {res['runs']} runs after {res['warmup']} warm-up: p50 {ms('p50_ms')}  mean {ms('mean_ms')} "
        f"± {ms('std_ms')}  min {ms('min_ms')}  p90 {ms('p90_ms')}  p99 {ms('p99_ms')} ms",
    ]
    if res.get("note"):
        lines.append(f"  note     {res['note']}")
    if res.get("cpu_p50_ms") is not None:
        lines.append(f"  cpu time per run (all threads): p50 {res['cpu_p50_ms']:.3f} ms")
    if res.get("samples"):
        s = res["samples"]
        lines.append(f"  inputs   {s['description']}")
    return "\n".join(lines)
