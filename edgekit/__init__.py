"""edgekit: trained model -> small, fast, verified on-device artifacts.

The public API lives in :mod:`edgekit.api`; it is re-exported lazily here so that
``import edgekit`` stays cheap (build scripts call it on every build).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "convert", "profile", "inspect"]


def __getattr__(name: str):  # lazy re-export, keeps `import edgekit` free of torch
    if name in {"convert", "profile", "inspect"}:
        from edgekit import api

        return getattr(api, name)
    raise AttributeError(name)
