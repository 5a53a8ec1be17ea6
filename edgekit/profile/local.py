"""Run the self-contained runner on this host, in a fresh Python process (clean peak-memory figure)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.profile.stream import Collected, exit_reason, run_streaming

RUNNER = Path(__file__).with_name("runner.py")


def run_local(model: Path, feeds: Path, runner_args: list[str], *, timeout: float, python: str | None = None,
              on_record: Callable[[dict[str, Any]], None] | None = None) -> tuple[Collected, str | None]:
    """Returns (what the runner streamed, None) or (partial records, why the run failed)."""
    argv = [python or sys.executable, str(RUNNER), "--model", str(model), "--feeds", str(feeds), *runner_args,
            "--exit-on-stdin-eof"]  # dies with us, even when we are killed outright
    # TMPDIR: what the runner or its runtime writes (ORT's per-layer profile) is in edgekit's own temp folder, which
    # goes away even when the runner is killed midway (it left /tmp/edgekit-ortprof-* behind)
    env = {**os.environ, "TMPDIR": str(Path(feeds).parent)}
    col, rc, err = run_streaming(argv, timeout=timeout, on_record=on_record, stdin=subprocess.PIPE, env=env)
    if rc is None:
        return col, f"local run timed out after {timeout:g} s"
    if rc != 0 and col.error is None:
        tail = (err.strip().splitlines() or ["(no output)"])[-1]
        return col, f"local runner failed ({exit_reason(rc)}): {tail}"
    return col, None
