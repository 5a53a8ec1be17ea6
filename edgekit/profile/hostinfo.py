"""Detect this host: CPU model, ISA flags, cores, clock, memory, and peak rates derived from them."""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

# ISA flags worth showing (a subset of /proc/cpuinfo "flags" / "Features")
INTERESTING = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
               "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
               "neon", "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                info.setdefault(k, v)
    except OSError:
        pass
    return info


def _mem_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _clock_ghz(info: dict[str, str]) -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        return float(info["cpu MHz"]) / 1000
    except (KeyError, ValueError):
        return None


def flop_per_cycle(flags: set[str], vendor: str) -> tuple[int, float]:
    """(fp32 FLOP per cycle per core, int8 op / fp32 FLOP ratio) from the ISA. Approximate, per vector unit
    count of mainstream cores: Intel server AVX-512 has 2 FMA ports of 512 bits, AMD Zen 4 runs AVX-512 on
    256-bit pipes; VNNI / SDOT do 4 int8 MACs where an FMA does one fp32 MAC."""
    if "avx512f" in flags:
        # AMD Zen 4 runs AVX-512 on 256-bit pipes; Zen 5 (the first AMD core with VP2INTERSECT) has full
        # 512-bit FMA pipes. Measured here: MobileNetV2 fp32 in 3.5 ms of CPU time on one Zen 5 core = 171
        # GFLOP/s, above a 256-bit core's 2.6 GHz x 32 = 83 GFLOP/s peak.
        fp32 = 32 if "AMD" in vendor and "avx512_vp2intersect" not in flags else 64
    elif "avx2" in flags and "fma" in flags:
        fp32 = 32
    elif "asimd" in flags or "neon" in flags:
        fp32 = 16
    elif "avx" in flags:
        fp32 = 16
    else:
        fp32 = 8
    int8 = 4.0 if flags & {"avx512_vnni", "avx_vnni", "asimddp", "amx_int8"} else 2.0
    return fp32, int8


@functools.lru_cache(maxsize=1)
def memory_bandwidth_gbs() -> float:
    """Measured copy bandwidth (read + write bytes / s) with a 64 MiB numpy copy, best of 5 (about 0.1 s)."""
    import numpy as np

    src = np.ones(16 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


@functools.lru_cache(maxsize=1)
def detect(measure_bandwidth: bool = True) -> dict[str, Any]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    vendor = info.get("vendor_id", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    clock = _clock_ghz(info)
    fp32_cycle, int8_ratio = flop_per_cycle(flags, vendor)
    peak_fp32 = fp32_cycle * cores * clock if clock else None
    desc = info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()
    out: dict[str, Any] = {
        "description": f"this host: {desc}",
        "cpu_model": desc,
        "arch": platform.machine(),
        "os": platform.system().lower(),
        "isa": sorted(f for f in flags if f in INTERESTING),
        "cores": cores,
        "clock_ghz": round(clock, 3) if clock else None,
        "memory_gb": round(_mem_gb() or 0, 1) or None,
        "units": {"CPU": {"peak_fp32_gops": peak_fp32,
                          "peak_int8_gops": peak_fp32 * int8_ratio if peak_fp32 else None}},
        "peak_basis": f"{fp32_cycle} fp32 FLOP/cycle/core x {cores} cores x {clock or '?'} GHz; "
                      f"int8 = {int8_ratio:g}x fp32 (from the ISA flags)",
    }
    if measure_bandwidth:
        out["memory_bandwidth_gbs"] = round(memory_bandwidth_gbs(), 2)
        out["bandwidth_basis"] = "measured: 64 MiB numpy copy, best of 5"
    return out
