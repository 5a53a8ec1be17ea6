"""Targets as data: one `targets/NAME.toml` per target. Adding a target is adding a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, UsageError
from edgekit.resources import data_dir
from edgekit.toml_compat import toml

PRECISIONS = ("fp32", "fp16", "int8")  # fp16: float16 weights, float32 compute where the runtime has no fp16


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    description: str
    precision: str  # default precision
    precisions: tuple[str, ...]
    default_device: str = "local"
    aliases: tuple[str, ...] = ()
    quantization: dict[str, Any] = field(default_factory=dict)  # scheme for int8
    runtime: dict[str, Any] = field(default_factory=dict)  # backend/runtime options
    verify: dict[str, dict[str, float]] = field(default_factory=dict)  # tolerances per precision
    source: Path | None = None

    def tolerances(self, precision: str) -> dict[str, float]:
        return dict(self.verify.get(precision, {}))


_REQUIRED = ("backend", "description")


def _parse(path: Path) -> Target:
    try:
        raw = toml.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{path}: missing key '{key}'")
    precisions = tuple(raw.get("precisions", [raw.get("precision", "fp32")]))
    precision = raw.get("precision", precisions[0])
    for p in (*precisions, precision):
        if p not in PRECISIONS:
            raise ConfigError(f"{path}: precision '{p}' is not one of {', '.join(PRECISIONS)}")
    return Target(
        name=raw.get("name", path.stem),
        backend=raw["backend"],
        description=raw["description"],
        precision=precision,
        precisions=precisions,
        default_device=raw.get("default_device", "local"),
        aliases=tuple(raw.get("aliases", [])),
        quantization=dict(raw.get("quantization", {})),
        runtime=dict(raw.get("runtime", {})),
        verify={k: dict(v) for k, v in raw.get("verify", {}).items()},
        source=path,
    )


def list_targets() -> list[Target]:
    return [_parse(p) for p in sorted(data_dir("targets").glob("*.toml"))]


def get_target(name: str) -> Target:
    targets = list_targets()
    for t in targets:
        if name == t.name or name in t.aliases:
            return t
    names = ", ".join(t.name for t in targets)
    raise UsageError(f"unknown target '{name}'", hint=f"choose one of: {names}; see `edgekit targets`")
