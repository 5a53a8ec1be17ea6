"""Giving freed memory back to the operating system between pipeline stages.

torch's ONNX exporter, onnx protobufs and runtime sessions free gigabytes of short-lived buffers. glibc keeps
much of it in its heap (arenas grow past the mmap threshold, which rises after each large free), so the
process's resident size stays at its peak and every later stage (references, calibration, sessions, lowering)
adds to it. A ViT-B/16 (86 M parameters, 344 MB fp32): 2,474 MB resident after export; 1,804 MB after
malloc_trim alone, 1,136 MB after a garbage collection (the exporter leaves reference cycles) and malloc_trim.

The release runs only when the process has grown by GROWTH_MB since the last one: a garbage collection costs
0.1-0.5 s in a process holding torch, which for a small model (a 3 s convert) is pure overhead (the test
suite ran 2x slower with a release after every stage). Elsewhere than Linux/glibc this does nothing.
"""

from __future__ import annotations

import gc

GROWTH_MB = 512  # resident growth since the last release that makes the next one worth its cost
_last_mb = [0.0]


def resident_mb() -> float | None:
    """This process's resident size in MB (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_freed_memory(min_growth_mb: float = GROWTH_MB) -> bool:
    """Collect garbage, then ask glibc to return free heap pages, when the process has grown by `min_growth_mb`
    since the last release. Returns whether it ran."""
    rss = resident_mb()
    if rss is None or rss - _last_mb[0] < min_growth_mb:
        return False
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    _last_mb[0] = resident_mb() or 0.0
    return True
