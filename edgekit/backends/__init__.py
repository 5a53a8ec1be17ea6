"""The backend table. One entry per runtime; modules are imported only when used."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from edgekit.errors import MissingDependencyError, UsageError

BACKENDS: dict[str, str] = {
    "onnxruntime": "edgekit.backends.onnxruntime",
    "openvino": "edgekit.backends.openvino",
    "tflite": "edgekit.backends.tflite",
}


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}'", hint=f"known: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("edgekit"):
            raise
        raise MissingDependencyError(
            f"backend '{name}' needs the Python package '{exc.name}'",
            hint=f"pip install {exc.name}",
        ) from exc


def backend_for_file(path: Path) -> ModuleType:
    """Pick the backend that loads an artifact from its suffix."""
    suffix = path.suffix.lower()
    for name in BACKENDS:
        mod = get_backend(name)
        if suffix in mod.SUFFIXES:
            return mod
    raise UsageError(f"{path}: no backend loads '{suffix}' files", hint="expected .onnx, .ort, .xml or .tflite")
