"""Atomic file writes: a reader (the app build, another edgekit) never sees half a file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgekit.hashing import sha256_file  # noqa: F401 (re-exported)


def _tmp_near(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = _tmp_near(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def copy_beside(src: Path, dst: Path) -> tuple[Path, str]:
    """Copy src to a temp file in dst's folder (renamed into place later, see replace_all); returns the temp
    path and the sha256 of the bytes written."""
    fd, tmp = _tmp_near(dst)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            for chunk in iter(lambda: inp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        os.chmod(tmp, 0o644)
    except BaseException:
        _unlink(tmp)
        raise
    return Path(tmp), h.hexdigest()


def replace_all(pairs: list[tuple[Path, Path]]) -> None:
    """Rename every (temp, final) pair into place, all or none: when a rename fails, or Ctrl-C / SIGTERM
    arrives between two (an OpenVINO .xml without its .bin), the renames already done are undone and the temp
    files removed, so the folder holds what it held before."""
    undo: list[tuple[Path, Path | None]] = []  # (final, a hard link to the file it replaced)
    try:
        for n, (tmp, final) in enumerate(pairs):
            backup = None
            if final.exists():
                backup = final.with_name(f".{final.name}.replaced-{n}-{os.getpid()}")
                os.link(final, backup)
            undo.append((final, backup))  # before the rename: an interrupt just after it is undone too
            os.replace(tmp, final)
    except BaseException:
        for final, backup in reversed(undo):
            if backup is None:
                final.unlink(missing_ok=True)
            else:
                os.replace(backup, final)
        for tmp, _ in pairs:
            _unlink(str(tmp))
        raise
    for _, backup in undo:
        if backup is not None:
            _unlink(str(backup))


def check_writable(folder: Path, *, what: str, hint: str) -> None:
    """Fail before any work when `folder` (or, while it does not exist, the folder it will be created in)
    cannot be written: a read-only mount, permissions, a file in the way. Probes with a real file (root
    and ACLs make permission bits unreliable); creates nothing that stays."""
    from edgekit.errors import UsageError

    here = folder
    while not here.exists() and here.parent != here:
        here = here.parent
    if not here.is_dir():
        raise UsageError(f"cannot write to {what} {folder}: {here} is not a folder", hint=hint)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgekit-probe-", dir=here)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UsageError(f"cannot write to {what} {folder}: {exc.strerror}", hint=hint) from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
