"""Inter-process file locks: two Gradle workers (or CI jobs) building the same model must not both
write one cache entry. POSIX `flock` (released by the kernel if the process dies), `msvcrt` on Windows."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.progress import log

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class LockTimeout(EdgekitError):
    exit_code = 6


@contextmanager
def file_lock(path: Path, *, what: str, timeout: float = 3600.0) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed). Waits (saying so once) while another
    process holds it; gives up after `timeout` seconds with an error naming the lock file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            log(f"waiting for {what}: another edgekit process holds {path}")
            deadline = time.monotonic() + timeout
            delay = 0.02
            while not _try_lock(fd):
                if time.monotonic() > deadline:
                    raise LockTimeout(f"gave up after {timeout:.0f}s waiting for {what} (lock {path})",
                                      hint="another edgekit build seems stuck; stop it or delete the lock file")
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


@contextmanager
def many_locks(paths: list[Path], *, what: str) -> Iterator[None]:
    """Lock several files, always in sorted order (no deadlock between two builds)."""
    if not paths:
        yield
        return
    first, rest = sorted(paths)[0], sorted(paths)[1:]
    with file_lock(first, what=what), many_locks(rest, what=what):
        yield
