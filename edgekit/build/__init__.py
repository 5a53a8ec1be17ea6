"""Builds for app build scripts: edgekit.toml -> cached, reproducible artifacts + edgekit-manifest.json.

    from edgekit.build import load_config, run_build
    summary = run_build(load_config(Path("edgekit.toml")))

Modules: config (the file format and its checks), cache (keys and the store), lock (inter-process
locks), files (atomic writes), budgets (size / latency / accuracy checks), manifest, runner (the build).
Importing this package does not import torch or any runtime.
"""

from edgekit.build.cache import Cache, cache_root
from edgekit.build.config import BuildConfig, ModelConfig, load_config
from edgekit.build.manifest import MANIFEST_NAME
from edgekit.build.runner import run_build

__all__ = ["BuildConfig", "Cache", "MANIFEST_NAME", "ModelConfig", "cache_root", "load_config", "run_build"]
