"""`edgekit build`: every (model, target) of a config, from the cache when its inputs are unchanged.

plan (cache keys; no torch) -> build what is missing (api.convert, under the entries' locks)
     -> tolerances (exit 3) -> budgets (exit 5 unless warn-only) -> install into the output folder
     (atomic copies, only files whose bytes changed) -> edgekit-manifest.json
Nothing is installed when a check fails, so a make/CMake/Gradle step that fails leaves no
up-to-date-looking outputs behind; the built entries stay in the cache for the next attempt.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.build.budgets import Check, check_budgets, check_tolerances, profile_for_budget
from edgekit.build.cache import Cache, FingerprintMemo, cache_key, key_parts, package_versions
from edgekit.build.config import BuildConfig, ModelConfig
from edgekit.build.files import check_writable, copy_beside, replace_all, sha256_file
from edgekit.build.lock import file_lock, many_locks
from edgekit.build.manifest import (
    MANIFEST_NAME,
    artifact_record,
    make_manifest,
    read_manifest,
    write_manifest,
)
from edgekit.errors import BudgetExceededError, ConfigError, UsageError, VerificationError
from edgekit.progress import log, warn

PROFILE_KEYS = ("device", "device_kind", "device_profile", "unit", "estimate", "p50_ms", "p90_ms", "mean_ms",
                "min_ms", "runs", "threads", "peak_memory_mb", "estimate_ms", "roofline_ms", "efficiency", "macs",
                "bound_by", "note")


@dataclass
class Item:
    model: ModelConfig
    target: str
    parts: dict[str, str]
    key: str
    entry: dict[str, Any] | None = None
    built: bool = False
    checks: list[Check] = field(default_factory=list)


def select_models(config: BuildConfig, only: tuple[str, ...] | list[str] = (), targets: tuple[str, ...] = (),
                  precision: str | None = None) -> list[ModelConfig]:
    """The config's models, filtered by name (-m) and with CLI overrides applied."""
    names = [m.name for m in config.models]
    for n in only:
        if n not in names:
            raise UsageError(f"no model named '{n}' in {config.path}", hint=f"models: {', '.join(names)}")
    models = [m for m in config.models if not only or m.name in only]
    if targets:
        from edgekit.build.config import _targets

        try:
            tlist = _targets(list(targets))
        except ValueError as exc:
            raise UsageError(f"--target: expected {exc}") from None
        models = [replace(m, targets=tlist) for m in models]
    if precision:
        models = [replace(m, options={**m.options, "precision": precision}) for m in models]
    return models


def _explain(cache: Cache, old_key: str | None, parts: dict[str, str]) -> str:
    if old_key is None:
        return "new"
    old = cache.get(old_key)
    if old is None or "parts" not in old:
        return "not in the cache"
    changed = [k for k in parts if old["parts"].get(k) != parts[k]]
    return f"{', '.join(changed)} changed" if changed else "not in the cache"


def _convert(model: ModelConfig, targets: list[str], outdir: Path) -> dict[str, Any]:
    from edgekit import api

    o = model.options
    shapes = None
    if "input_shapes" in o:
        from edgekit.sources import parse_input_shapes

        shapes = {k: parse_input_shapes([f"{k}={v}"])[k] if isinstance(v, str) else tuple(v)
                  for k, v in o["input_shapes"].items()}
    from edgekit.targets import get_target

    # max_accuracy_drop is a budget (budgets.py checks every artifact); it is also --max-drop (float
    # fallback) for int8 artifacts only: passed for fp32 alone, convert warned that it was 'ignored'
    int8 = any((o.get("precision") or get_target(t).precision) == "int8" for t in targets)
    return api.convert(
        model.source, targets, outdir, precision=o.get("precision"), input_shapes=shapes,
        weights=o.get("weights"), calibration=o.get("calibration"), calibration_size=o.get("calibration_size"),
        calibration_method=o.get("calibration_method"), verify=o.get("verify", True),
        io_layout=o.get("io_layout", "nchw"), io_dtype=o.get("io_dtype", "float"), prune=o.get("prune"),
        prune_macs=o.get("prune_macs"), prune_exclude=tuple(o.get("prune_exclude", ())),
        round_to=o.get("round_to", 8), importance=o.get("importance", "auto"),
        allocation=o.get("allocation", "auto"), layout_by_latency=o.get("layout_by_latency", False),
        distill_steps=o.get("distill_steps", 0), max_drop=o.get("max_accuracy_drop") if int8 else None,
        fallback_order=o.get("fallback_order", "e2e"),
        int8_finetune=o.get("int8_finetune"), eval_data=o.get("eval_data"), name=model.name, seed=o.get("seed", 0),
        task=o.get("task", "auto"))


def _entry_for(model: ModelConfig, item: Item, art: dict[str, Any], result: dict[str, Any]) -> tuple[list[Path], dict]:
    from edgekit.inspect import inspect_artifact

    files = [Path(f) for f in art["files"]]
    io = inspect_artifact(files[0])
    rel = dict(art, path=files[0].name, files=[f.name for f in files])
    entry = {
        "model": model.name,
        "target": item.target,
        "precision": art.get("precision"),
        "files": [{"path": f.name, "sha256": sha256_file(f), "size": f.stat().st_size} for f in files],
        "artifact": rel,
        "inspect": {k: io.get(k) for k in ("format", "backend", "precision", "inputs", "outputs", "metadata")},
        "model_info": result.get("model"),
        "versions": package_versions(),
        "parts": item.parts,
    }
    return files, entry


def build_missing(cache: Cache, model: ModelConfig, items: list[Item], *, use_cache: bool,
                  previous: dict[tuple[str, str], str]) -> None:
    """Build the items of one model that have no cache entry: one convert call for all their targets."""
    locks = [cache.lock_path(i.key) for i in items]
    with many_locks(locks, what=f"model '{model.name}'"):
        if use_cache:  # another process may have built them while we waited
            for i in items:
                i.entry = cache.get(i.key)
        todo = [i for i in items if i.entry is None]
        if not todo:
            log(f"{model.name}: built by another edgekit process meanwhile, using its result")
            return
        for i in todo:
            why = _explain(cache, previous.get((model.name, i.target)), i.parts) if use_cache else "--no-cache"
            log(f"building {model.name} [{i.target}] ({why})")
        from edgekit.work_dir import make_work_dir, remove_work_dir

        cache.tmp.mkdir(parents=True, exist_ok=True)
        stage = make_work_dir(cache.tmp)  # locked while this build lives; removes the ones of killed builds
        try:
            result = _convert(model, [i.target for i in todo], stage / "out")
            by_target = {a["target"]: a for a in result["artifacts"]}
            for i in todo:
                if i.target not in by_target:
                    raise RuntimeError(f"convert returned no artifact for target {i.target}")
                files, entry = _entry_for(model, i, by_target[i.target], result)
                i.entry = cache.put(i.key, files, entry)
                i.built = True
        finally:
            remove_work_dir(stage)


ESTIMABLE = (".onnx", ".tflite")  # graphs the roofline estimate reads


def _measure(cache: Cache, item: Item, items: list[Item]):
    def measure(entry: dict[str, Any], device: str) -> dict[str, Any]:
        profiles = entry.setdefault("profiles", {})
        if device not in profiles:
            path = Path(entry["dir"]) / entry["files"][0]["path"]
            log(f"measuring latency of {item.model.name} [{item.target}] on {device}")
            try:
                full = profile_for_budget(path, device)
            except UsageError:
                if path.suffix in ESTIMABLE or not _is_estimate(device):
                    raise
                full = _estimate_sibling(item, items, device)
            profiles[device] = {k: full[k] for k in PROFILE_KEYS if k in full}
            cache.update(item.key, profiles=profiles)
        return profiles[device]
    return measure


def _is_estimate(device: str) -> bool:
    if device == "estimate":
        return True
    from edgekit.profile.devices import resolve_device

    return resolve_device(device).kind == "estimate"


def _estimate_sibling(item: Item, items: list[Item], device: str) -> dict[str, Any]:
    """An OpenVINO IR cannot be estimated: use the same model's ONNX/TFLite artifact of the same precision
    (the same graph, hence the same MACs and bytes), saying so."""
    for other in items:
        e = other.entry or {}
        f = e.get("files", [{}])[0].get("path", "")
        if other.model is item.model and e.get("precision") == item.entry.get("precision") and f.endswith(ESTIMABLE):
            res = dict(profile_for_budget(Path(e["dir"]) / f, device))
            res["note"] = f"roofline estimate of {f} (same model and precision)"
            return res
    raise ConfigError(f"{item.model.name}: latency_device '{device}' is a roofline estimate, which reads ONNX or "
                      f"TFLite graphs, and this model builds none for precision {item.entry.get('precision')}",
                      hint="add 'onnxruntime' to its targets, or set latency_device to a device that can run it")


def _install(outdir: Path, items: list[Item]) -> list[Item]:
    """Copy each artifact's files into outdir when their bytes differ; returns items whose cached
    files do not match their recorded hash (a damaged cache), which the caller rebuilds."""
    blocked = [outdir / f["path"] for i in items for f in i.entry["files"] if (outdir / f["path"]).is_dir()]
    if blocked:  # before any copy: a build installs all its artifacts or none
        raise UsageError(f"{blocked[0]} is a folder where an artifact goes",
                         hint="move it away or choose another output folder")
    corrupt: list[Item] = []
    ready: list[tuple[Path, Path]] = []  # (temp copy beside its destination, destination)
    made: list[Path] = []  # every temp copy, removed if anything below fails or is interrupted
    try:
        for i in items:
            src_dir = Path(i.entry["dir"])
            mine: list[tuple[Path, Path]] = []
            for f in i.entry["files"]:
                dst = outdir / f["path"]
                if dst.is_file() and dst.stat().st_size == f["size"] and sha256_file(dst) == f["sha256"]:
                    continue
                try:
                    tmp, copied = copy_beside(src_dir / f["path"], dst)
                except FileNotFoundError:  # removed since it was built (`edgekit cache clean` meanwhile, a wiped cache)
                    copied = None
                else:
                    made.append(tmp)
                    mine.append((tmp, dst))
                if copied != f["sha256"]:
                    for t, _ in mine:
                        t.unlink(missing_ok=True)
                    corrupt.append(i)
                    break
            else:
                ready += mine
        # every copy made first, then the renames, all or none (an interrupt between an .xml and its .bin
        # would leave a pair that does not load)
        replace_all(ready)
    except BaseException:
        for t in made:
            t.unlink(missing_ok=True)
        raise
    return corrupt


def _source_label(config: BuildConfig, model: ModelConfig) -> str:
    """The source as written, without absolute paths (the manifest must not depend on the checkout)."""
    p = Path(model.source)
    if p.is_absolute():
        try:
            return p.relative_to(config.root).as_posix()
        except ValueError:
            return p.name
    return model.source


def _check_distinct_files(config: BuildConfig, items: list[Item]) -> None:
    """Two (model, target) pairs must not write the same file (model 'x' int8 and model 'x.int8' fp32 are
    both x.int8.tflite): one would silently replace the other, and every build would copy both again."""
    owners: dict[str, Item] = {}
    for i in items:
        for f in i.entry["files"]:
            other = owners.setdefault(f["path"], i)
            if other is not i:
                raise ConfigError(f"{config.path}: models '{other.model.name}' [{other.target}] and "
                                  f"'{i.model.name}' [{i.target}] both produce {f['path']}",
                                  hint="rename one of them (its `name` names the artifact files); nothing was installed")


def run_build(config: BuildConfig, *, output: Path | None = None, use_cache: bool = True,
              warn_only: bool | None = None, only: tuple[str, ...] = (), targets: tuple[str, ...] = (),
              precision: str | None = None, cache: Cache | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    cache = cache or Cache()
    outdir = Path(output).resolve() if output else config.output
    warn_only = config.warn_only if warn_only is None else warn_only
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output path {outdir} exists and is not a folder", hint="pass a folder with -o")
    check_writable(outdir, what="output folder", hint="choose a writable folder with -o or [build] output")
    check_writable(cache.root, what="the build cache", hint="set EDGEKIT_CACHE_DIR to a writable folder")
    if str(config.root) not in sys.path:
        sys.path.insert(0, str(config.root))  # pkg.module:fn sources next to the config
    models = select_models(config, only, targets, precision)
    old_manifest = read_manifest(outdir) or {}
    previous = {(r.get("model"), r.get("target")): r.get("cache_key") for r in old_manifest.get("artifacts", [])}

    items: list[Item] = []
    memo = FingerprintMemo(cache.root)
    for m in models:
        for t in m.targets:
            parts = key_parts(m, t, memo)
            key = cache_key(parts)
            items.append(Item(m, t, parts, key, cache.get(key) if use_cache else None))
    memo.save()
    for m in models:
        missing = [i for i in items if i.model is m and i.entry is None]
        if missing:
            build_missing(cache, m, missing, use_cache=use_cache, previous=previous)

    _check_distinct_files(config, items)
    from edgekit.input_guard import check_not_inputs, input_files

    for i in items:  # a source kept in the output folder under an artifact's name: replaced, then rebuilt forever
        check_not_inputs([outdir / f["path"] for f in i.entry["files"]],
                         input_files(i.model.source, i.model.get("weights"), i.model.get("calibration"),
                                     i.model.get("eval_data")),
                         hint=f"nothing was installed; move the file out of {outdir} or rename model '{i.model.name}'")
    # checks: tolerances (verification, exit 3), then budgets (exit 5)
    bad_tol = [c for i in items for c in check_tolerances(i.model, i.entry) if not c.ok]
    if bad_tol:
        raise VerificationError("verification tolerance not met: " + "; ".join(c.message() for c in bad_tol),
                                hint="nothing was installed; loosen `tolerances` or change precision/pruning")
    for i in items:
        i.checks = check_budgets(i.model, i.entry, _measure(cache, i, items))
    exceeded = [c for i in items for c in i.checks if not c.ok]
    if exceeded and not warn_only:
        raise BudgetExceededError(
            f"{len(exceeded)} budget(s) exceeded: " + "; ".join(c.message() for c in exceeded),
            hint="nothing was installed; raise the budget in the config, shrink the model (precision = "
                 "\"int8\", prune), or pass --warn-only")
    for c in exceeded:
        warn(f"budget exceeded: {c.message()}")

    outdir.mkdir(parents=True, exist_ok=True)
    out_lock = cache.locks / f"out-{hashlib.sha256(str(outdir).encode()).hexdigest()[:16]}.lock"
    with file_lock(out_lock, what=f"output folder {outdir}"):
        corrupt = _install(outdir, items)
        if corrupt:
            for i in corrupt:
                warn(f"cache entry of {i.model.name} [{i.target}] is damaged; rebuilding it")
                i.entry = None
            for m in {id(i.model): i.model for i in corrupt}.values():
                build_missing(cache, m, [i for i in corrupt if i.model is m], use_cache=False, previous=previous)
            if _install(outdir, corrupt):
                raise RuntimeError("freshly built artifacts do not match their recorded hashes")
        records = [artifact_record(i.model.name, _source_label(config, i.model), i.entry,
                                   [c.to_dict() for c in i.checks], i.entry.get("profiles")) for i in items]
        # read again under the lock: a concurrent build (make -j, one `edgekit build -m X` per model) may have
        # written its records since this build started, and they must be kept
        old_manifest = read_manifest(outdir) or {}
        # kept: what the config still asks for and this run did not build (`-m X`, `-t T` build a subset: the
        # other configured artifacts stay installed); dropped: what the config no longer lists
        built = {(i.model.name, i.target) for i in items}
        configured = {(m.name, t) for m in config.models for t in m.targets}
        kept = [r for r in old_manifest.get("artifacts", [])
                if (r.get("model"), r.get("target")) not in built and (r.get("model"), r.get("target")) in configured
                and all((outdir / f["path"]).is_file() for f in r.get("files", []))]
        records = sorted(kept + records, key=lambda r: (r["model"], r["target"]))
        wanted = {f["path"] for r in records for f in r["files"]}
        for r in old_manifest.get("artifacts", []):  # artifacts this build no longer produces
            for f in r.get("files", []):
                p = f.get("path", "")
                if p and p not in wanted and Path(p).name == p and p != MANIFEST_NAME:
                    (outdir / p).unlink(missing_ok=True)
        manifest = make_manifest(records, config_name=config.path.name, versions=package_versions())
        manifest_path = write_manifest(outdir, manifest)

    seconds = time.perf_counter() - t0
    built = sum(i.built for i in items)
    return {
        "config": str(config.path),
        "output": str(outdir),
        "manifest": str(manifest_path),
        "seconds": round(seconds, 3),
        "built": built,
        "cached": len(items) - built,
        "budget_warnings": [c.message() for c in exceeded],
        "artifacts": [dict(r, cached=not i.built, file=str(outdir / r["path"]))
                      for r in records for i in items
                      if (i.model.name, i.target) == (r["model"], r["target"])],
    }
