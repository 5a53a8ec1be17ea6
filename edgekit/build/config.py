"""edgekit.toml (or [tool.edgekit] in pyproject.toml): what `edgekit build` builds.

    [build]                      # optional
    output = "build/models"      # default output folder, relative to this file
    warn_only = false            # budgets warn instead of failing the build

    [[models]]                   # one table per model
    name = "digits"
    source = "zoo:mnist_cnn"     # file.onnx | file.pt2 | file.pt | pkg.module:fn | zoo:NAME
    targets = ["onnxruntime", "openvino"]
    precision = "fp32"           # fp32 | int8 (default: each target's own)
    max_size_mb = 2.0            # budgets (optional)
    max_latency_ms = 5.0
    latency_device = "estimate"  # a device profile (see `edgekit devices`), "local" or "estimate"
    max_accuracy_drop = 0.01

Every key is checked against the table below: a wrong key or value is a ConfigError naming the file,
the key and what is allowed. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.distill import TASK_CHOICES
from edgekit.errors import ConfigError, UsageError
from edgekit.prune import ALLOCATION_CHOICES, IMPORTANCE_CHOICES
from edgekit.toml_compat import toml

CONFIG_NAME = "edgekit.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------------- value checks
# Each check takes the raw value and returns the normalized one, or raises ValueError("what is allowed").
Check = Callable[[Any], Any]


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise ValueError("a name of letters, digits, '_', '-', '.' (it names the artifact files)")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _int(lo: int) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"an integer >= {lo}")
        return v
    return check


def _number(lo: float, hi: float | None = None, *, open_lo: bool = False) -> Check:
    def check(v: Any) -> float:
        ok = not isinstance(v, bool) and isinstance(v, (int, float))
        ok = ok and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
        if not ok:
            rng = f"{'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
            raise ValueError(f"a number {rng}")
        return float(v)
    return check


def _choice(*allowed: str) -> Check:
    def check(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"one of {', '.join(repr(a) for a in allowed)}")
        return v
    return check


def _targets(v: Any) -> list[str]:
    from edgekit.targets import list_targets

    known = {}
    for t in list_targets():
        known[t.name] = t.name
        for a in t.aliases:
            known[a] = t.name
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise ValueError(f"a list of target names from: {', '.join(sorted(known))}")
    out: list[str] = []
    for x in v:
        if x not in known:
            raise ValueError(f"target names from: {', '.join(sorted(known))} (got '{x}')")
        if known[x] not in out:
            out.append(known[x])  # aliases normalized: same artifact, same cache key
    return out


def _fraction(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
        raise ValueError("a fraction between 0 and 1 (exclusive)")
    return float(v)


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("a list of strings")
    return list(v)


def _shapes(v: Any) -> dict[str, list[int] | str]:
    msg = 'a table {input_name = [1, 3, 224, 224]} of positive integer shapes (or "1x128:int64" with a dtype)'
    if not isinstance(v, dict):
        raise ValueError(msg)
    for k, dims in v.items():
        if isinstance(dims, str):
            from edgekit.errors import UsageError
            from edgekit.sources import parse_input_shapes

            try:
                parse_input_shapes([f"{k}={dims}"])
            except UsageError as exc:
                raise ValueError(f"{msg} (input '{k}': {exc})") from None
            continue
        if not isinstance(dims, list) or not dims or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise ValueError(f"{msg} (input '{k}')")
    return {k: d if isinstance(d, str) else list(d) for k, d in sorted(v.items())}


TOLERANCE_KEYS = ("max_abs_error", "mean_abs_error", "cosine", "top1_agreement")


def _tolerances(v: Any) -> dict[str, float]:
    if not isinstance(v, dict):
        raise ValueError(f"a table with keys from: {', '.join(TOLERANCE_KEYS)}")
    out = {}
    for k, x in v.items():
        if k not in TOLERANCE_KEYS:
            raise ValueError(f"keys from: {', '.join(TOLERANCE_KEYS)} (got '{k}')")
        try:  # cosine and top-1 agreement are floors of at most 1 (a floor above 1 fails every build)
            out[k] = _number(0.0, 1.0 if k in ("cosine", "top1_agreement") else None)(x)
        except ValueError as exc:
            raise ValueError(f"{exc} for '{k}'") from None
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Key:
    check: Check
    help: str
    path: bool = False  # a file path, resolved against the config folder
    affects_artifact: bool = True  # part of the cache key (budgets and tolerances are checks, not inputs)


MODEL_KEYS: dict[str, Key] = {
    "name": Key(_name, "artifact name stem (required)"),
    "source": Key(_str, "file.onnx | file.pt2 | file.pt | pkg.module:fn | zoo:NAME (required)"),
    "targets": Key(_targets, "list of targets (see `edgekit targets`)"),
    "precision": Key(_choice("fp32", "fp16", "int8"), "fp32 | fp16 | int8 (default: each target's own)"),
    "weights": Key(_str, "state_dict / .safetensors for a factory or zoo source", path=True),
    "input_shapes": Key(_shapes, "{input = [dims]} to fix dynamic axes"),
    "calibration": Key(_str, "calibration data: .npy/.npz, image folder, text file or shipped set name", path=True),
    "calibration_size": Key(_int(1), "number of calibration samples"),
    "calibration_method": Key(_choice("minmax", "percentile", "entropy", "mse"),
                              "minmax | percentile | entropy | mse (default: the target's)"),
    "eval_data": Key(_str, "labelled evaluation data for the accuracy budget", path=True),
    "prune": Key(_fraction, "fraction of channels to prune, between 0 and 1"),
    "prune_macs": Key(_fraction, "fraction of MACs to remove, between 0 and 1"),
    "prune_exclude": Key(_str_list, "layer names pruning must not touch"),
    "round_to": Key(_int(1), "pruned channel counts are multiples of this (default 8)"),
    "importance": Key(_choice(*IMPORTANCE_CHOICES), f"pruning importance: {' | '.join(IMPORTANCE_CHOICES)}"),
    "allocation": Key(_choice(*ALLOCATION_CHOICES), f"pruning allocation: {' | '.join(ALLOCATION_CHOICES)}"),
    "layout_by_latency": Key(_bool, "choose the pruned channel layout by latency measured on the targets' runtimes"),
    "distill_steps": Key(_int(0), "distillation steps after pruning"),
    "task": Key(_choice(*TASK_CHOICES), f"what the outputs are: {' | '.join(TASK_CHOICES)} (default auto)"),
    "int8_finetune": Key(_int(0), "end-to-end int8 fine-tuning steps (default: the target's, 0)"),
    "io_layout": Key(_choice("nchw", "nhwc"), "nchw | nhwc"),
    "io_dtype": Key(_choice("float", "int8"), "float | int8"),
    "verify": Key(_bool, "verify artifacts against the source model (default true)"),
    "seed": Key(_int(0), "random seed (default 0)"),
    "tolerances": Key(_tolerances, f"verification tolerances: {', '.join(TOLERANCE_KEYS)}", affects_artifact=False),
    "max_size_mb": Key(_number(0.0, open_lo=True), "size budget in MB (10^6 bytes), all files of an artifact",
                       affects_artifact=False),
    "max_latency_ms": Key(_number(0.0, open_lo=True), "latency budget (median) in ms", affects_artifact=False),
    "latency_device": Key(_str, "device for the latency budget: a device profile, 'local' or 'estimate'",
                          affects_artifact=False),
    "max_accuracy_drop": Key(_number(0.0, 0.99), "accuracy budget: allowed drop (0..1) vs the source model"),
    "fallback_order": Key(_choice("e2e", "e2e-cost", "e2e-greedy", "layer"),
                          "order in which the budget keeps layers float: e2e | e2e-cost | e2e-greedy | layer"),
}
REQUIRED_MODEL_KEYS = ("name", "source")
BUILD_KEYS: dict[str, Key] = {
    "output": Key(_str, "output folder (default: edgekit-out next to the config)", path=True),
    "warn_only": Key(_bool, "budgets warn instead of failing"),
}
TOP_KEYS = ("build", "models")
DEFAULT_OUTPUT = "edgekit-out"


@dataclass
class ModelConfig:
    name: str
    source: str
    targets: list[str]
    options: dict[str, Any] = field(default_factory=dict)  # every other key, normalized, paths absolute
    index: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass
class BuildConfig:
    path: Path  # the file read
    root: Path  # folder relative paths are resolved against
    output: Path
    warn_only: bool
    models: list[ModelConfig]
    section: str = ""  # "" for edgekit.toml, "tool.edgekit." for pyproject.toml


def _unknown(where: str, key: str, allowed: list[str] | tuple[str, ...]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"{where}: unknown key '{key}'", hint=f"{hint}allowed keys: {', '.join(allowed)}")


def _absolute(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _path_value(root: Path, key: str, value: str, label: str) -> str:
    """A path relative to the config folder -> absolute. A value that is not a path (a shipped
    calibration set name such as "mnist") is kept as is when no such file exists."""
    p = _absolute(root, value)
    if p.exists():
        return str(p)
    if key == "weights" or _looks_like_path(value):
        raise ConfigError(f"{label}: '{key}' not found: {p}", hint="paths are relative to the config file's folder")
    return value


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or Path(value).suffix.lower() in (
        ".onnx", ".pt2", ".pt", ".pth", ".ts", ".npz", ".npy", ".txt", ".safetensors", ".bin")


def _source(root: Path, value: str) -> str:
    if value.startswith("zoo:"):
        return value
    p = Path(value).expanduser()
    p = p if p.is_absolute() else root / p
    if p.exists():
        return str(p.resolve())
    if _looks_like_path(value):
        raise ValueError(f"an existing model file; {p} does not exist")
    return value  # pkg.module:fn


def parse_models_table(raw: Any, file: Path, section: str, root: Path) -> list[ModelConfig]:
    where = f"{file}: {section}models"
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected one or more [[{section}models]] tables",
                          hint="see examples/edgekit.toml")
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        here = f"{file}: {section}models[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: expected a table", hint=f"write it as [[{section}models]]")
        label = f"{here} ('{entry['name']}')" if isinstance(entry.get("name"), str) else here
        for key in REQUIRED_MODEL_KEYS:
            if key not in entry:
                raise ConfigError(f"{label}: missing key '{key}'", hint=MODEL_KEYS[key].help)
        opts: dict[str, Any] = {}
        for key, value in entry.items():
            spec = MODEL_KEYS.get(key)
            if spec is None:
                raise _unknown(label, key, list(MODEL_KEYS))
            try:
                value = _source(root, spec.check(value)) if key == "source" else spec.check(value)
            except ValueError as exc:
                raise ConfigError(f"{label}: bad value for '{key}': {value!r}", hint=f"expected {exc}") from None
            except UsageError as exc:  # targets folder problems
                raise ConfigError(f"{label}: '{key}': {exc}") from None
            if spec.path and isinstance(value, str):
                value = _path_value(root, key, value, label)
            opts[key] = value
        if opts["name"] in seen:
            raise ConfigError(f"{label}: duplicate model name '{opts['name']}'",
                              hint="each [[models]] table needs its own name (it names the artifact files)")
        seen.add(opts["name"])
        if "max_latency_ms" not in opts and "latency_device" in opts:
            raise ConfigError(f"{label}: 'latency_device' without 'max_latency_ms'",
                              hint="add max_latency_ms, or drop latency_device")
        name, source = opts.pop("name"), opts.pop("source")
        targets = opts.pop("targets", None) or ["onnxruntime"]
        models.append(ModelConfig(name=name, source=source, targets=targets, options=opts, index=i))
    return models


def parse_config(path: Path, data: dict[str, Any], section: str = "") -> BuildConfig:
    root = path.parent.resolve()
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(f"{path}: {section or 'top level'}".rstrip("."), key, list(TOP_KEYS))
    build_raw = data.get("build", {})
    if not isinstance(build_raw, dict):
        raise ConfigError(f"{path}: '{section}build' must be a table", hint=f"write it as [{section}build]")
    build: dict[str, Any] = {}
    for key, value in build_raw.items():
        spec = BUILD_KEYS.get(key)
        if spec is None:
            raise _unknown(f"{path}: [{section}build]", key, list(BUILD_KEYS))
        try:
            build[key] = spec.check(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: [{section}build]: bad value for '{key}': {value!r}",
                              hint=f"expected {exc}") from None
    if "models" not in data:
        raise ConfigError(f"{path}: no [[{section}models]] table", hint="add one per model; see examples/edgekit.toml")
    models = parse_models_table(data["models"], path, section, root)
    output = _absolute(root, build.get("output", DEFAULT_OUTPUT))
    return BuildConfig(path=path, root=root, output=output, warn_only=build.get("warn_only", False),
                       models=models, section=section)


def find_config(start: Path | None = None) -> Path:
    """edgekit.toml in `start` (default: the current folder), else a pyproject.toml with [tool.edgekit]."""
    here = (start or Path.cwd()).resolve()
    cand = here / CONFIG_NAME
    if cand.is_file():
        return cand
    py = here / "pyproject.toml"
    if py.is_file() and "tool" in (d := _read_toml(py)) and "edgekit" in d["tool"]:
        return py
    raise UsageError(f"no {CONFIG_NAME} (or pyproject.toml with [tool.edgekit]) in {here}",
                     hint="create one (see examples/edgekit.toml) or pass --config PATH")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return toml.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}", hint="pass an existing edgekit.toml with --config") from None
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", hint="fix the syntax at the position shown") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None


def load_config(path: Path | None = None) -> BuildConfig:
    """Read and check a build config. `path` may be an edgekit.toml, a pyproject.toml or a folder."""
    if path is None or Path(path).is_dir():
        path = find_config(Path(path) if path else None)
    path = Path(path)
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool", {}).get("edgekit")
        if not isinstance(tool, dict):
            raise ConfigError(f"{path}: no [tool.edgekit] section",
                              hint="add [[tool.edgekit.models]] tables, or use an edgekit.toml")
        return parse_config(path, tool, "tool.edgekit.")
    return parse_config(path, data)
