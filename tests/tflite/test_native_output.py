"""LiteRT's native "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." line is not printed for every
session edgekit opens (verification, profiling, --max-drop): INFO lines are dropped, any other native line
still reaches stderr."""

from __future__ import annotations

import os

import numpy as np
from conftest import one_node, tflite_convert, tflite_run

from edgekit.native_output import quiet_info


def test_a_tflite_session_prints_no_info_line(tmp_path, capfd) -> None:
    x = np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32)
    path = tflite_convert(one_node("Relu", {"x": x}), tmp_path)
    capfd.readouterr()
    out = tflite_run(path, {"x": x})
    assert np.array_equal(out[0], np.maximum(x, 0))
    captured = capfd.readouterr()
    assert "INFO:" not in captured.err and "XNNPACK" not in captured.err and not captured.out


def test_other_native_lines_pass_through(capfd) -> None:
    capfd.readouterr()
    try:
        with quiet_info():
            os.write(2, b"INFO: chatter\nERROR: the reason it failed\n")
            raise ValueError("failed")
    except ValueError:
        pass
    err = capfd.readouterr().err
    assert "ERROR: the reason it failed" in err and "chatter" not in err


def test_a_process_without_stdio_runs_without_capture(monkeypatch):
    """A service started with stdout/stderr closed: os.dup(1) fails (EBADF), and the capture steps aside instead
    of failing every LiteRT session and export."""
    def no_fd(fd):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(os, "dup", no_fd)
    ran = []
    with quiet_info():
        ran.append(True)
    assert ran == [True]
