"""edgekit-manifest.json: what app code needs about every artifact of a build, next to the artifacts.

    {"schema": "edgekit-manifest/1", "edgekit_version": ..., "runtimes": {...},
     "config": "edgekit.toml",
     "artifacts": [{"model", "source", "target", "backend", "precision", "format",
                    "path", "sha256", "size_bytes", "files": [{"path", "sha256", "size"}],
                    "inputs": [{"name", "shape", "dtype", "layout", "quantization"}], "outputs": [...],
                    "verification": {...}, "quantization": {...}|null, "profile": {...}|null,
                    "budgets": [{"budget", "limit", "value", "ok", "unit", "basis"}], "cache_key"}]}

Paths are relative to the manifest's folder; there are no timestamps, so an unchanged build writes
the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.build.files import sha256_file, write_json_atomic

MANIFEST_NAME = "edgekit-manifest.json"
SCHEMA = "edgekit-manifest/1"


def artifact_record(model_name: str, source: str, entry: dict[str, Any],
                    checks: list[dict[str, Any]], profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    art = entry.get("artifact") or {}
    io = entry.get("inspect") or {}
    files = entry["files"]
    return {
        "model": model_name,
        "source": source,
        "target": entry["target"],
        "backend": art.get("backend", io.get("backend")),
        "precision": entry.get("precision"),
        "format": io.get("format"),
        "path": files[0]["path"],
        "sha256": files[0]["sha256"],
        "size_bytes": art.get("size_bytes", sum(f["size"] for f in files)),
        "files": files,
        "inputs": io.get("inputs", []),
        "outputs": io.get("outputs", []),
        "verification": without_durations(art.get("verification")),
        "quantization": without_durations(art.get("quantization")),
        "profile": art.get("profile") or (profiles or None),
        "budgets": checks,
        "cache_key": entry.get("key"),
    }


def without_durations(obj: Any) -> Any:
    """`obj` without the wall-clock durations the stages report ("seconds": calibration, rounding, fine-tuning
    took this long): they differ on every run, so a rebuild (--no-cache, a CI cold build) of byte-identical
    artifacts rewrote the manifest and make/CMake/Gradle repackaged the app. What app code needs stays."""
    if isinstance(obj, dict):
        return {k: without_durations(v) for k, v in obj.items() if k != "seconds" and not k.endswith("_seconds")}
    if isinstance(obj, list):
        return [without_durations(v) for v in obj]
    return obj


def make_manifest(records: list[dict[str, Any]], *, config_name: str, versions: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "edgekit_version": versions.get("edgekit"),
        "runtimes": {k: v for k, v in versions.items() if k != "edgekit"},
        "config": config_name,
        "artifacts": records,
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in `folder`, keeping only well-formed artifact records (a damaged or hand-edited
    file must not stop the next build, which rewrites it); None when there is none."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    records = data.get("artifacts")
    data["artifacts"] = [r for r in records if _well_formed(r)] if isinstance(records, list) else []
    return data


def _well_formed(record: Any) -> bool:
    files = record.get("files") if isinstance(record, dict) else None
    return isinstance(files, list) and isinstance(record.get("model"), str) and isinstance(
        record.get("target"), str) and all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest, leaving the file untouched when its content is unchanged: make, CMake and
    Gradle then see an unchanged mtime and rebuild nothing downstream."""
    path = folder / MANIFEST_NAME
    try:
        if json.loads(path.read_text()) == manifest:
            return path
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    write_json_atomic(path, manifest)
    return path


def find_record(artifact: Path) -> dict[str, Any] | None:
    """The manifest record of an artifact, when a manifest next to it lists it with these very bytes (a
    file of that name written since, e.g. by `edgekit convert` into the folder, is not what it describes)."""
    manifest = read_manifest(artifact.parent)
    if not manifest:
        return None
    for rec in manifest["artifacts"]:
        if any(f.get("path") == artifact.name and f.get("sha256") == sha256_file(artifact) for f in rec["files"]):
            return dict(rec, runtimes=manifest.get("runtimes"), edgekit_version=manifest.get("edgekit_version"))
    return None
