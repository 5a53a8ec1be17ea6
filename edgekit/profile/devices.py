"""Device profiles (devices/*.toml) and the `--device` spec: local | NAME | ssh://user@host[:port] | adb:SERIAL.

Profiles are searched in $EDGEKIT_DEVICE_PATH (os.pathsep-separated folders, first wins), then
~/.config/edgekit/devices, then the shipped devices/ folder: copy a shipped profile, fill in
`[access] host = "pi@raspberrypi.local"` and `--device raspberry-pi-5` measures on the board.
A profile without a reachable access is used for a roofline estimate.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, UsageError
from edgekit.resources import data_dir
from edgekit.toml_compat import toml

ACCESS_KINDS = ("local", "ssh", "adb", "none")


@dataclass
class DeviceProfile:
    name: str
    description: str
    kind: str = "board"
    os: str | None = None
    arch: str | None = None
    isa: list[str] = field(default_factory=list)
    cores: int | None = None
    clock_ghz: float | None = None
    memory_gb: float | None = None
    memory_bandwidth_gbs: float | None = None
    units: dict[str, dict[str, float]] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=list)
    delegates: list[str] = field(default_factory=list)
    access: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def peak_gops(self, unit: str = "CPU", precision: str = "fp32") -> float | None:
        u = self.units.get(unit.upper()) or {}
        return u.get(f"peak_{precision}_gops")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "description", "kind", "os", "arch", "isa", "cores", "clock_ghz",
                                           "memory_gb", "memory_bandwidth_gbs", "units", "runtimes", "delegates",
                                           "access", "sources")}
        d.update(self.extra)
        d["source"] = str(self.source) if self.source else None
        return d


def search_path() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("EDGEKIT_DEVICE_PATH", "").split(os.pathsep) if p]
    dirs.append(Path.home() / ".config" / "edgekit" / "devices")
    dirs.append(data_dir("devices"))
    # each folder once, where it first comes: $EDGEKIT_DEVICE_PATH naming the shipped folder (or one folder twice)
    # listed its profiles twice and warned that they were two files of one name
    seen: set[Path] = set()
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


_KNOWN = {f for f in DeviceProfile.__dataclass_fields__ if f not in ("extra", "source")}


# key -> (what it must be, check). A profile is user-written: a wrong type is named here (exit 2), not met later
# as an internal error in `edgekit devices` or an estimate ('int' object has no attribute 'items').
def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _words(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("a string", lambda v: isinstance(v, str) and bool(v.strip())),
    "description": ("a string", lambda v: isinstance(v, str)),
    "kind": ("a string", lambda v: isinstance(v, str)),
    "os": ("a string", lambda v: isinstance(v, str)),
    "arch": ("a string", lambda v: isinstance(v, str)),
    "isa": ("a list of strings", _words),
    "cores": ("a positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "clock_ghz": ("a positive number", _number),
    "memory_gb": ("a positive number", _number),
    "memory_bandwidth_gbs": ("a positive number", _number),
    "runtimes": ("a list of strings", _words),
    "delegates": ("a list of strings", _words),
    "sources": ("a list of strings", _words),
    "detected": ("true or false", lambda v: isinstance(v, bool)),
    "units": ("a table of [units.NAME] tables", lambda v: isinstance(v, dict) and all(isinstance(r, dict)
                                                                                     for r in v.values())),
    "access": ("an [access] table", lambda v: isinstance(v, dict)),
    "roofline": ("a [roofline] table", lambda v: isinstance(v, dict)),
}
_ACCESS_FIELDS: dict[str, tuple[str, Any]] = {
    "kind": (f"one of {', '.join(ACCESS_KINDS)}", lambda v: v in ACCESS_KINDS),
    "host": ("a string such as \"pi@raspberrypi.local\"", lambda v: isinstance(v, str)),
    "port": ("a port number (1-65535)", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536),
    "serial": ("a string (see `adb devices`)", lambda v: isinstance(v, str)),
    "python": ("a string (the interpreter's path on the device)", lambda v: isinstance(v, str)),
    "benchmark_model": ("a string (the tool's path on the device)", lambda v: isinstance(v, str)),
    "tmpdir": ("a string (a writable folder on the device)", lambda v: isinstance(v, str) and bool(v.strip())),
}
_ROOFLINE_FIELDS: dict[str, tuple[str, Any]] = {
    # measured / roofline time: 1 keeps the roofline, 0.3 says the device reaches 30% of its peaks
    "efficiency": ("a number in (0, 1]", lambda v: _number(v) and v <= 1),
}
_RATES = ("peak_fp32_gops", "peak_fp16_gops", "peak_int8_gops")


def _unknown(path: Path, where: str, keys: Any, known: Any) -> None:
    """A key edgekit does not read is a typo until shown otherwise: `[acces]` or `memory_bandwith_gbs` was
    ignored without a word, and the profile gave a roofline estimate (or 'lacks memory_bandwidth_gbs') while
    the file plainly had them."""
    import difflib

    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            guess = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{path}: unknown key '{key}'{where}{guess}",
                              hint=f"known keys{where}: {', '.join(known)}")


def _check_fields(path: Path, raw: dict[str, Any]) -> None:
    _unknown(path, "", raw, _FIELDS)
    for key, (what, ok) in _FIELDS.items():
        if key in raw and not ok(raw[key]):
            raise ConfigError(f"{path}: '{key}' must be {what} (got {raw[key]!r})")
    for table, fields in (("access", _ACCESS_FIELDS), ("roofline", _ROOFLINE_FIELDS)):
        _unknown(path, f" in [{table}]", raw.get(table, {}), fields)
        for key, (what, ok) in fields.items():
            value = raw.get(table, {}).get(key)
            if value is not None and not ok(value):
                raise ConfigError(f"{path}: [{table}] {key} must be {what} (got {value!r})")
    seen: dict[str, str] = {}
    for unit, rates in raw.get("units", {}).items():
        if unit.upper() in seen:  # units are matched case-blind (--unit npu): two spellings of one unit
            raise ConfigError(f"{path}: [units.{seen[unit.upper()]}] and [units.{unit}] are the same unit")
        seen[unit.upper()] = unit
        _unknown(path, f" in [units.{unit}]", rates, _RATES)
        for k, v in rates.items():
            if not _number(v):
                raise ConfigError(f"{path}: units.{unit}.{k} must be a positive number (got {v!r})")


def parse_profile(path: Path) -> DeviceProfile:
    try:
        raw = toml.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "description" not in raw:
        raise ConfigError(f"{path}: missing key 'description'")
    _check_fields(path, raw)
    access = dict(raw.get("access", {}))
    kwargs = {k: v for k, v in raw.items() if k in _KNOWN}
    kwargs.setdefault("name", path.stem)
    kwargs["access"] = access
    kwargs["units"] = {u.upper(): dict(r) for u, r in raw.get("units", {}).items()}  # [units.npu] is the NPU
    prof = DeviceProfile(**kwargs, extra={k: v for k, v in raw.items() if k not in _KNOWN}, source=path)
    if raw.get("detected"):
        prof = _fill_detected(prof)
    return prof


def _fill_detected(prof: DeviceProfile) -> DeviceProfile:
    from edgekit.profile import hostinfo

    info = hostinfo.detect()
    prof.description = info["description"]
    for key in ("os", "arch", "isa", "cores", "clock_ghz", "memory_gb", "memory_bandwidth_gbs"):
        if info.get(key) is not None:
            setattr(prof, key, info[key])
    prof.units = {**info["units"], **prof.units}
    prof.extra.update({"peak_basis": info["peak_basis"], "bandwidth_basis": info.get("bandwidth_basis"),
                       "cpu_model": info["cpu_model"]})
    return prof


def _index() -> list[tuple[str, Path]]:
    """(name, file) of every profile in precedence order: the folders of search_path(), then file names. A
    profile's name is its `name` key, else its file name; a file TOML cannot read is listed under its file name
    (parse_profile then says what is wrong with it)."""
    out = []
    for d in search_path():
        for p in sorted(d.glob("*.toml")):
            try:
                name = toml.loads(p.read_text()).get("name", p.stem)
            except Exception:  # noqa: BLE001
                name = p.stem
            out.append((name if isinstance(name, str) and name.strip() else p.stem, p))
    return out


def list_profiles() -> list[DeviceProfile]:
    """One profile per name, the first in precedence order: what `--device NAME` measures with (get_profile)."""
    from edgekit.progress import warn

    seen: dict[str, DeviceProfile] = {}
    for name, p in _index():
        if name in seen:
            first = seen[name].source
            if first is not None and first.parent == p.parent:  # one folder, two files: which one is meant?
                warn(f"device profiles {first.name} and {p.name} (in {p.parent}) are both named '{name}'; "
                     f"--device {name} uses {first.name}")
            continue
        seen[name] = parse_profile(p)
    return sorted(seen.values(), key=lambda p: (p.name != "local", p.name))


def get_profile(name: str) -> DeviceProfile:
    """The profile named `name` (its `name` key, e.g. a copy of raspberry-pi-5.toml saved as my-pi.toml with the
    host filled in shadows the shipped one, as `edgekit devices` lists it), else the file called NAME.toml."""
    if name.endswith(".toml"):
        if Path(name).is_file():
            return parse_profile(Path(name))
        raise UsageError(f"device profile file {name} not found",
                         hint="give the path of a .toml device profile, or a profile name (`edgekit devices`)")
    index = _index()
    for key, p in (*index, *((p.stem, p) for _, p in index)):
        if key == name:
            return parse_profile(p)
    names = ", ".join(sorted(dict.fromkeys(n for n, _ in index)))
    missing = [p for p in os.environ.get("EDGEKIT_DEVICE_PATH", "").split(os.pathsep) if p and not Path(p).is_dir()]
    gone = f"; $EDGEKIT_DEVICE_PATH names no such folder: {', '.join(missing)}" if missing else ""
    raise UsageError(f"unknown device '{name}'{gone}",
                     hint=f"use local, ssh://user@host[:port], adb:SERIAL or a profile: {names} (`edgekit devices`)")


@dataclass
class DeviceTarget:
    """Where a profile run goes. kind: local | ssh | adb | estimate (profile known, device not attached)."""

    kind: str
    spec: str
    profile: DeviceProfile | None = None
    user: str | None = None
    host: str | None = None
    port: int | None = None
    serial: str | None = None
    python: str = "python3"
    benchmark_model: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "ssh":
            return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"
        if self.kind == "adb":
            return f"adb:{self.serial}"
        return self.profile.name if self.profile else self.spec


_SSH_RE = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^@/:\s]+)(?::(?P<port>\d+))?/?$")
_HOST_RE = re.compile(r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>\d+))?$")


def _safe(value: str, what: str) -> str:
    # ssh would read a leading '-' as an option: refuse it rather than pass it on
    if value.startswith("-") or any(c.isspace() for c in value):
        raise UsageError(f"invalid {what} '{value}'", hint="no leading '-' and no spaces")
    return value


def parse_ssh(spec: str) -> tuple[str | None, str, int | None]:
    m = _SSH_RE.match(spec) if spec.startswith("ssh://") else _HOST_RE.match(spec)
    if not m:
        raise UsageError(f"invalid ssh device '{spec}'", hint="write ssh://user@host[:port]")
    user = _safe(m["user"], "ssh user") if m["user"] else None
    host = _safe(m["host"].strip("[]"), "ssh host")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"invalid ssh port {port} in '{spec}'")
    return user, host, port


def resolve_device(spec: str, *, remote_python: str | None = None) -> DeviceTarget:
    spec = (spec or "local").strip()
    if spec == "local":
        return DeviceTarget("local", spec, get_profile("local"))
    if spec.startswith("ssh://"):
        user, host, port = parse_ssh(spec)
        return DeviceTarget("ssh", spec, None, user, host, port, python=remote_python or "python3")
    if spec.startswith("adb:"):
        serial = _safe(spec[4:], "adb serial")
        if not serial:
            raise UsageError("adb device needs a serial", hint="write adb:SERIAL (see `adb devices`)")
        return DeviceTarget("adb", spec, None, serial=serial)
    prof = get_profile(spec)
    acc = prof.access
    kind = acc.get("kind", "none")
    if kind == "local":
        return DeviceTarget("local", spec, prof)
    if kind == "ssh" and acc.get("host"):
        user, host, port = parse_ssh(str(acc["host"]))
        if acc.get("port"):
            port = int(acc["port"])
        return DeviceTarget("ssh", spec, prof, user, host, port, python=remote_python or acc.get("python", "python3"),
                            benchmark_model=acc.get("benchmark_model"))
    if kind == "adb" and acc.get("serial"):
        return DeviceTarget("adb", spec, prof, serial=_safe(str(acc["serial"]), "adb serial"),
                            benchmark_model=acc.get("benchmark_model"))
    return DeviceTarget("estimate", spec, prof)
