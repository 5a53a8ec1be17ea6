"""Locate the data folders (targets/, devices/, calibration/) from a checkout or an installed wheel."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_FOLDERS = ("targets", "devices", "calibration")


def data_dir(name: str) -> Path:
    """Return the folder holding `name` (one of targets, devices, calibration)."""
    if name not in _FOLDERS:
        raise ValueError(f"unknown data folder {name!r}")
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / name).is_dir():  # a source checkout
        return root / name
    return Path(str(importlib.resources.files(f"edgekit._{name}")))
