"""Load a state_dict without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import ModelLoadError


def load_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
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
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise ModelLoadError(f"{path}: weights do not fit the model: {' '.join(first[:2])[:300]}",
                             hint="pass the state_dict saved from this very architecture") from exc
