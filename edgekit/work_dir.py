"""The temporary folder a conversion works in, inside the output folder (so the final renames stay on one
filesystem), and the removal of such folders that a killed run left behind.

Ctrl-C and SIGTERM clean up on the way out; SIGKILL, the OOM killer (a large model's calibration or
distillation), a power cut or a CI runner torn down do not: their `.edgekit-tmp-*` folder stayed in the user's
output folder for good, holding the hub graph and unverified artifacts (hundreds of MB for a large model), one
more per killed run. Each run holds an exclusive lock on a file in its folder (released by the kernel when the
process dies, however it dies); the next run in that output folder removes every such folder whose lock it can
take, and leaves alone the ones a live run (a parallel build task) holds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = ".edgekit-tmp-"
LOCK = ".owner.lock"
UNLOCKED_STALE_S = 3600.0  # a folder without a lock file (an older edgekit, or killed before it made one)

_HELD: dict[str, int] = {}  # work folder -> fd of its held lock


def _try_lock(fd: int) -> bool:
    from edgekit.build.lock import _try_lock as try_lock

    return try_lock(fd)


def remove_stale(outdir: Path) -> list[str]:
    """Remove the work folders of dead runs in `outdir`; returns their names."""
    removed = []
    try:
        candidates = [p for p in outdir.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for d in candidates:
        if str(d) in _HELD:  # this process's own run (the Python API, called from threads)
            continue
        lock = d / LOCK
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            try:
                if time.time() - d.stat().st_mtime > UNLOCKED_STALE_S:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d.name)
            except OSError:
                pass
            continue
        except OSError:
            continue
        try:
            if _try_lock(fd):  # nobody holds it: its run is gone
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        finally:
            os.close(fd)
    return removed


def make_work_dir(outdir: Path) -> Path:
    """A new work folder in `outdir`, locked for as long as this run lives (after removing dead runs' ones)."""
    stale = remove_stale(outdir)
    if stale:
        from edgekit.progress import log

        log(f"removed {len(stale)} temporary folder(s) of killed edgekit runs from {outdir}")
    work = Path(tempfile.mkdtemp(prefix=PREFIX, dir=outdir))
    try:
        fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return work
    if _try_lock(fd):
        _HELD[str(work)] = fd
    else:  # pragma: no cover - a folder mkdtemp just made cannot be locked by anyone else
        os.close(fd)
    return work


def remove_work_dir(work: Path) -> None:
    """Let go of the run's lock, then delete its work folder (an open file cannot be deleted on Windows; another
    run that finds the folder unlocked meanwhile only deletes it too)."""
    fd = _HELD.pop(str(work), None)
    if fd is not None:
        os.close(fd)
    shutil.rmtree(work, ignore_errors=True)
