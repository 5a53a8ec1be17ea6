"""Progress on stderr. Quiet under CI (CI=true) or without a TTY: plain lines, no bars. NO_COLOR respected."""

from __future__ import annotations

import os
import sys
import time

_VERBOSE = os.environ.get("EDGEKIT_VERBOSE", "") not in ("", "0")


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def set_verbose(on: bool) -> None:
    global _VERBOSE
    _VERBOSE = on


def log(msg: str, *, verbose_only: bool = False) -> None:
    """A plain progress line on stderr."""
    if verbose_only and not _VERBOSE:
        return
    sys.stderr.write(f"edgekit: {msg}\n")
    sys.stderr.flush()


def warn(msg: str) -> None:
    color = interactive() and "NO_COLOR" not in os.environ
    prefix = "\033[33mwarning:\033[0m" if color else "warning:"
    sys.stderr.write(f"edgekit: {prefix} {msg}\n")
    sys.stderr.flush()


class Progress:
    """`with Progress("distill", total=300) as p: p.update(loss=...)` - a bar on a TTY, else a line every 10%."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.n = label, max(int(total), 1), 0
        self._t0 = time.perf_counter()
        self._last_pct = -1
        self._tty = interactive()

    def __enter__(self) -> Progress:
        return self

    def update(self, n: int = 1, **stats: float) -> None:
        self.n += n
        pct = int(100 * self.n / self.total)
        info = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
        if self._tty:
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\r{self.label} [{bar:<25}] {self.n}/{self.total} {info}   ")
            sys.stderr.flush()
        elif pct // 10 != self._last_pct // 10 or self.n == self.total:
            log(f"{self.label}: {self.n}/{self.total} {info}".rstrip())
        self._last_pct = pct

    def __exit__(self, *exc: object) -> None:
        if self._tty:
            sys.stderr.write("\n")
        log(f"{self.label}: done in {time.perf_counter() - self._t0:.1f}s", verbose_only=not self._tty)
