"""Load a state_dict without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import ModelLoadError


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON ('{...'). Under another
    suffix it went to torch.load and was refused as 'a pickle that needs code'."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def load_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.suffix == ".safetensors" or _is_safetensors(path):  # by content too: a model.bin / .st in safetensors
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"{path}: not a valid safetensors file ({exc})") from exc
    import torch

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc)
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            raise ModelLoadError(
                f"{path}: refused: this pickle needs code to load (it holds more than tensors)",
                hint="save only the state_dict (torch.save(model.state_dict(), f)) or use .safetensors",
            ) from exc
        raise ModelLoadError(f"{path}: cannot read weights ({msg.splitlines()[0]})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path}: expected a state_dict (a dict of tensors), found {type(sd).__name__}")
    return sd


def apply_state_dict(module, sd: dict, path: Path) -> None:
    """Load `sd` into `module`, strictly, as a state_dict is saved in practice: a prefix every key carries from a
    wrapper (torch.compile's '_orig_mod.', DataParallel's 'module.') is dropped, and a tied tensor saved once
    (safetensors' save_model keeps one of emb.weight / head.weight) fills its twins. Anything else missing, left
    over or of another shape is one ModelLoadError naming the keys."""
    import torch

    from edgekit.progress import log

    sd = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    own = module.state_dict(keep_vars=True)
    prefix = _wrapper_prefix(list(sd), set(own))
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items()}
        log(f"{path.name}: keys carry the prefix '{prefix}' (a wrapped model's state_dict): dropped")
    meta = any(t.is_meta for t in own.values())  # built on the meta device (deferred init): the file's tensors go in
    result = module.load_state_dict(sd, strict=False, assign=meta) if not _mismatched(own, sd) else None
    if result is not None:
        missing = [k for k in result.missing_keys if not _tied_to_loaded(own, k, sd)]
        if not missing and not result.unexpected_keys:
            return
    else:
        missing = [k for k in own if k not in sd and not _tied_to_loaded(own, k, sd)]
    unexpected = [k for k in sd if k not in own]
    problems = [f"shape {tuple(sd[k].shape)} for {k}, the model's is {tuple(own[k].shape)}"
                for k in _mismatched(own, sd)]
    problems += [f"{len(missing)} missing ({_few(missing)})"] if missing else []
    problems += [f"{len(unexpected)} unexpected ({_few(unexpected)})"] if unexpected else []
    raise ModelLoadError(f"{path}: weights do not fit the model: {'; '.join(problems)}",
                         hint="pass the state_dict saved from this very architecture, built with the same settings")


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")


def _mismatched(own: dict, sd: dict) -> list[str]:
    return [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]


def _tied_to_loaded(own: dict, key: str, sd: dict) -> bool:
    """Whether the model's tensor `key` is the very tensor (tied weights) of another key the file holds."""
    t = own.get(key)
    return t is not None and any(k in sd and k != key and v is t for k, v in own.items())


def _wrapper_prefix(keys: list[str], own: set[str]) -> str:
    """The leading 'name.' (up to two) every key carries and the model's own keys lack, when dropping it makes the
    keys match the model's better: '_orig_mod.' (torch.compile), 'module.' (DataParallel / DDP)."""
    if not keys:
        return ""
    best, best_hits = "", sum(k in own for k in keys)
    parts = keys[0].split(".")
    for n in (1, 2):
        prefix = ".".join(parts[:n]) + "."
        if len(parts) <= n or not all(k.startswith(prefix) for k in keys):
            break
        hits = sum(k[len(prefix):] in own for k in keys)
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best
