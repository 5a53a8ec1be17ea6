"""Run the latency runner (locally or through ssh) and collect the JSON lines it streams.

Every record is kept as it arrives, so when the process or the connection dies midway the runs
already measured survive: they are attached to the DeviceError as `partial`.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import DataError, DeviceError, MissingDependencyError, UnsupportedModelError, UsageError


class RemoteRunError(DeviceError):
    """A run that failed midway. `partial` holds the figures of the runs measured before it failed."""

    def __init__(self, message: str, *, hint: str | None = None, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.partial = partial


@dataclass
class Collected:
    meta: dict[str, Any] | None = None
    first_ms: float | None = None
    runs_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    layers: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    junk: list[str] = field(default_factory=list)

    def add(self, rec: dict[str, Any]) -> None:
        ev = rec.get("event")
        if ev == "meta":
            self.meta = rec
        elif ev == "first":
            self.first_ms = float(rec["ms"])
        elif ev == "run":
            self.runs_ms.append(float(rec["ms"]))
            if "cpu_ms" in rec:
                self.cpu_ms.append(float(rec["cpu_ms"]))
        elif ev == "layers":
            self.layers = rec
        elif ev == "done":
            self.done = rec
        elif ev == "error":
            self.error = rec

    def feed_line(self, line: str) -> dict[str, Any] | None:
        line = line.strip()
        if not line:
            return None
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            self.junk.append(line)  # a runtime that prints to stdout; keep for the error message
            return None
        if isinstance(rec, dict):
            self.add(rec)
            return rec
        return None


def run_streaming(argv: list[str], *, timeout: float, on_record: Callable[[dict[str, Any]], None] | None = None,
                  stdin: Any = subprocess.DEVNULL, env: dict[str, str] | None = None,
                  lines: list[str] | None = None) -> tuple[Collected, int | None, str]:
    """Run `argv` (no shell), feed each stdout line to a Collected. Returns (collected, returncode, stderr);
    returncode is None when the overall `timeout` (seconds) expired and the process was killed. The process is
    killed too when this call is interrupted. With stdin=subprocess.PIPE the pipe stays open, unwritten, until
    the process ends: a runner started with --exit-on-stdin-eof then exits when this process dies (even by
    SIGKILL) or, over ssh, when the connection is gone. `lines`: also collect stdout's lines as they were printed."""
    col = Collected()
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1, env=env)
    except FileNotFoundError as exc:
        raise MissingDependencyError(f"cannot run '{argv[0]}': not found", hint="install it or fix PATH") from exc
    err_chunks: list[str] = []

    def read_err() -> None:
        assert proc.stderr is not None
        for chunk in proc.stderr:
            err_chunks.append(chunk)

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if lines is not None:  # the text as printed (a tool's report), blank lines and all
                lines.append(line)
            rec = col.feed_line(line)
            if rec is not None and on_record is not None:
                on_record(rec)

    threads = [threading.Thread(target=read_err, daemon=True), threading.Thread(target=read_out, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    rc: int | None
    try:
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    except BaseException:  # Ctrl-C, or SIGTERM raised as KeyboardInterrupt: the child must not outlive us
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.stdin is not None:  # stdin=PIPE: the runner's end-of-file signal (exit_when_stdin_closes)
            try:
                proc.stdin.close()
            except OSError:
                pass
    for t in threads:
        t.join(timeout=5)
    return col, rc, "".join(err_chunks)


def exit_reason(rc: int) -> str:
    """'exit 3', or the signal that ended the process: a negative code (a child of ours) or 128+N (as a remote
    shell reports it). SIGKILL is named with its usual cause: a board out of memory."""
    import signal

    sig = -rc if rc < 0 else rc - 128 if 128 < rc < 160 else None
    if sig is None:
        return f"exit {rc}"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    oom = ", on Linux most often the out-of-memory killer: the device ran out of memory" if sig == 9 else ""
    return f"killed by {name}{oom}"


def raise_runner_error(col: Collected, where: str) -> None:
    """Turn the runner's own error record into the right edgekit error."""
    err = col.error or {}
    kind, msg = err.get("kind"), err.get("message", "runner failed")
    avail = err.get("available")
    hint = f"available here: {', '.join(map(str, avail))}" if avail else None
    if kind == "device_unavailable":
        raise DeviceError(f"{where}: {msg}", hint=hint)
    if kind == "missing_runtime":
        raise DeviceError(f"{where}: {msg}", hint="install the runtime on the device, or pick another interpreter "
                                                  "with --remote-python")
    if kind == "bad_model":
        raise UnsupportedModelError(f"{where}: {msg}")
    if kind == "bad_input":
        raise UsageError(f"{where}: {msg}", hint="give samples that match the artifact's inputs")
    if kind == "run_failed":  # the artifact loaded but its runtime refused the inputs: not the device's fault
        raise DataError(f"{where}: {msg}", hint="the runtime refused these inputs: give --samples the model "
                                                "accepts (real inputs: valid ids, the shapes it was built for)")
    raise DeviceError(f"{where}: {msg}")
