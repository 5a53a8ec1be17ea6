"""Under --json, stdout carries exactly one JSON object, whatever else runs in the process.

A model's own code (a `print` in a factory or in forward(), a library banner at import) and native libraries
write to file descriptor 1 as they please; a build script that parses stdout then gets text before the object.
While a --json command runs, fd 1 and `sys.stdout` point at stderr, where such text is harmless, and the JSON
object goes to a private duplicate of the original stdout (`json_stream()`).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_RESERVED: TextIO | None = None  # the original stdout while reserved


def json_stream() -> TextIO:
    """Where the command's JSON object goes: the original stdout."""
    return _RESERVED if _RESERVED is not None else sys.stdout


def _flush(stream: object) -> None:
    try:
        stream.flush()  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):  # closed or absent streams
        pass


def _on_fd1(stream: object) -> bool:
    try:
        return stream.fileno() == 1  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: an in-memory stream (click's CliRunner)
        return False


@contextmanager
def stdout_reserved_for_json(enabled: bool = True) -> Iterator[None]:
    """Send everything written to stdout (Python's sys.stdout and, when that is fd 1, the descriptor itself, so
    native and child output too) to stderr while the block runs; `json_stream()` writes to the real stdout.
    Nested uses are no-ops; a process whose fd 1 or 2 is closed keeps its descriptors as they are."""
    global _RESERVED
    if not enabled or _RESERVED is not None:
        yield
        return
    saved_stdout = sys.stdout
    _flush(saved_stdout)
    _flush(sys.stderr)
    private = None
    if _on_fd1(saved_stdout):
        try:
            private = os.dup(1)
            os.dup2(2, 1)
        except OSError:  # no stdout or stderr (a service without stdio): Python-level only
            if private is not None:
                os.close(private)
            private = None
    if private is not None:
        encoding = getattr(saved_stdout, "encoding", None) or "utf-8"
        real: TextIO = io.TextIOWrapper(io.FileIO(private, "w", closefd=True), encoding=encoding,
                                        errors="replace", line_buffering=True)
    else:
        real = saved_stdout
    sys.stdout = sys.stderr
    _RESERVED = real
    try:
        yield
    finally:
        _RESERVED = None
        sys.stdout = saved_stdout
        _flush(sys.stderr)
        _flush(real)
        if private is not None:
            try:
                os.dup2(private, 1)
            finally:
                real.close()
