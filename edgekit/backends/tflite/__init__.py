"""TFLite / LiteRT backend: edgekit writes .tflite flatbuffers itself from the ONNX hub graph.

  lower(onnx_path, target, out_stem, options) -> [path.tflite]
  load(path, LoadOptions) -> Session (LiteRT Interpreter, XNNPACK by default)
  describe(path) -> dict   op counts, TRANSPOSE count, float ops left, I/O

options: precision ("fp32"|"fp16"|"int8"; fp16: float16 weights, DEQUANTIZE to float32), io_layout ("nchw"|"nhwc"), io_dtype ("float"|"int8"),
input_shapes ({name: shape} to fix dynamic dims; a dynamic batch becomes 1).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from edgekit.backends.base import LoadOptions

NAME = "tflite"
SUFFIXES = (".tflite",)


def lower(onnx_path: Path, target: Any, out_stem: Path, options: dict[str, Any] | None = None) -> list[Path]:
    from edgekit.backends.tflite.converter import convert

    options = dict(options or {})
    if "precision" not in options and target is not None and getattr(target, "precision", None):
        options["precision"] = None  # follow the graph: QDQ in -> int8 out
    runtime = dict(getattr(target, "runtime", {}) or {})
    for key in ("io_layout", "io_dtype", "grouped_conv"):
        if key not in options and key in runtime:
            options[key] = runtime[key]
    if "grouped_conv" not in options and runtime.get("xnnpack"):
        options["grouped_conv"] = "native"  # ops/conv.py: one grouped CONV_2D, which XNNPACK runs fast
    data = convert(Path(onnx_path), options)
    out = Path(str(out_stem) + ".tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tflite.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return [out]


def load(path: Path, options: LoadOptions | None = None):
    from edgekit.backends.tflite.session import TFLiteSession

    return TFLiteSession(Path(path), options)


def describe(path: Path) -> dict[str, Any]:
    from edgekit.backends.tflite.inspect import describe as _describe

    return _describe(Path(path))


def supported_ops() -> list[str]:
    from edgekit.backends.tflite.converter import supported_ops as _ops

    return _ops()
