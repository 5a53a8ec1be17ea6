"""What native libraries print past Python's sys.stdout / sys.stderr, captured at the file descriptors.

- torch's TorchScript exporter switches its C++ log on whatever `verbose` says (torch 2.13 tests the function
  _jit_is_onnx_log_enabled instead of calling it); when an export fails that log prints the whole TorchScript
  graph, 100+ lines, on C++ stdout: into the one JSON object --json promises (export.py keeps it for -v).
- LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on stderr for every interpreter:
  `quiet_info` drops such INFO lines and passes every other line (warnings, errors) through.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class CapturedOutput:
    """File descriptors 1 and 2 redirected to a temporary file while native code runs; the text is kept (`text`)."""

    text = ""

    def __enter__(self):
        import os
        import sys
        import tempfile

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):  # closed or absent streams (a daemon, pythonw)
                pass
        self._saved = []
        try:
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # fd 1 or 2 closed (a service without stdio): nothing to capture, run as is
            return self
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = saved
        for fd in (1, 2):
            os.dup2(self._file.fileno(), fd)
        return self

    def __exit__(self, *exc):
        import os
        import sys

        if not self._saved:
            return False
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False


@contextmanager
def quiet_info() -> Iterator[None]:
    """Run the block with native stdout/stderr captured; lines starting with 'INFO: ' are dropped, the rest go to
    stderr."""
    captured = CapturedOutput()
    try:
        with captured:
            yield
    finally:  # also when the block raises: LiteRT's ERROR lines say why
        kept = [line for line in captured.text.splitlines() if line.strip() and not line.startswith("INFO: ")]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
