"""Sweep 10, devices and remote profiling as a user drives them: user-written device profiles (a copy of a shipped
one, typos, lower-case units, a bad roofline efficiency), the statistics a profile reports, and `--device
ssh://...` against a real OpenSSH server on loopback whose sessions have their own $TMPDIR (a device where /tmp
is not the place to write): the run's folder, a device without room, an upload slower than --timeout, adb
messages. Structure and behaviour only: no timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.profile.result import build_result
from edgekit.profile.stream import Collected

ROOT = Path(__file__).resolve().parents[1]


def edgekit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=180)


# ---------------------------------------------------------------- the statistics of a profile

def test_every_reported_median_is_the_median():
    """cpu_p50_ms took the upper of the two middle runs (with 2 runs: the slower one) while p50_ms interpolates
    as numpy does: with an even run count the two 'medians' of one profile disagreed."""
    wall = [1.0, 4.0, 2.0, 3.0]
    cpu = [0.5, 3.5, 1.5, 2.5]
    col = Collected(meta={"runtime": {"name": "onnxruntime"}}, first_ms=9.0, runs_ms=wall, cpu_ms=cpu)
    res = build_result(col, path=Path("m.onnx"), device_label="local", device_kind="local", warmup=1, threads=None,
                       samples=None)
    assert res["p50_ms"] == pytest.approx(np.median(wall)) and res["cpu_p50_ms"] == pytest.approx(np.median(cpu))
    assert res["mean_ms"] == pytest.approx(np.mean(wall)) and res["std_ms"] == pytest.approx(np.std(wall))
    assert res["p90_ms"] == pytest.approx(np.percentile(wall, 90)) and res["cpu_mean_ms"] == pytest.approx(2.0)
    assert (res["min_ms"], res["max_ms"], res["runs"]) == (1.0, 4.0, 4)
