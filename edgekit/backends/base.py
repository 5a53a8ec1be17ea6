"""The small face every backend offers. A backend is one module registered in `edgekit.backends.BACKENDS`.

A backend module defines:
  NAME: str                         e.g. "onnxruntime"
  SUFFIXES: tuple[str, ...]         artifact suffixes it can load, primary first (".onnx", ".ort")
  lower(onnx_path, target, out_stem, options) -> list[Path]
        Turn the hub ONNX model (fp32 or QDQ int8) at `onnx_path` into artifact file(s) written
        next to `out_stem` (a path without suffix inside a temporary folder). Returns the files,
        the primary artifact first. Raises UnsupportedModelError naming the op and node.
  load(path, options) -> Session
        Open an artifact in its runtime. `options` is a LoadOptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class TensorInfo:
    name: str
    shape: list[int | str | None]
    dtype: str  # numpy dtype name: float32, int64, int8, uint8 ...
    layout: str | None = None  # "NCHW", "NHWC", or None
    quantization: dict[str, Any] | None = None  # {"scale": [...], "zero_point": [...]} for int8 I/O


@dataclass
class LoadOptions:
    threads: int | None = None  # None = runtime default
    device: str = "CPU"  # runtime device name (OpenVINO: CPU/GPU/NPU; ORT: execution provider)
    extra: dict[str, Any] = field(default_factory=dict)  # backend specific (xnnpack, delegate path, ...)


class Session(Protocol):
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one inference. Feeds are float/int arrays in the *source model's* convention
        (NCHW float); a session whose artifact uses another I/O layout or dtype converts."""
        ...


def artifact_path(out_stem, suffix: str):
    """`out_stem` + suffix. Stems contain dots (model.target.int8), so never use Path.with_suffix on them."""
    from pathlib import Path

    stem = Path(out_stem)
    return stem.parent / f"{stem.name}{suffix}"
