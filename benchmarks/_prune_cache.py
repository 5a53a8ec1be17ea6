"""Cache of pruned students for benchmarks/prune.py (--cache DIR): pruning + least-squares refit of
mobilenet_v2 with 1,024 samples takes ~30 min on 2 cores, and comparing distillation schedules needs
the same student each time. Key: the model and every pruning argument. Stored: the state_dict and
the pruning report. Reloading resizes the original architecture's Conv2d / BatchNorm / Linear layers
to the stored shapes (and adds the biases the refit created); a model whose forward reads widths from
attributes other than these is not cached (prune again)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any


def key(**args: Any) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save(folder: Path, k: str, student, report: dict) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{k}.pt.tmp"
    torch.save(student.state_dict(), tmp)
    tmp.replace(folder / f"{k}.pt")
    (folder / f"{k}.json").write_text(json.dumps(report, default=str))


def _resize(model, sd: dict):
    import torch

    m = copy.deepcopy(model)
    for name, mod in m.named_modules():
        for pn, p in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            k = f"{name}.{pn}" if name else pn
            if k in sd and sd[k].shape != p.shape:
                v = sd[k].clone()
                setattr(mod, pn, torch.nn.Parameter(v) if isinstance(p, torch.nn.Parameter) else v)
        if isinstance(mod, torch.nn.Conv2d):
            depthwise = mod.groups > 1 and mod.groups == mod.in_channels
            mod.out_channels = mod.weight.shape[0]
            mod.in_channels = mod.out_channels if depthwise else mod.weight.shape[1] * mod.groups
            mod.groups = mod.out_channels if depthwise else mod.groups
        elif isinstance(mod, torch.nn.BatchNorm2d):
            mod.num_features = mod.weight.shape[0]
        elif isinstance(mod, torch.nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape
    for k, v in sd.items():
        owner, _, pn = k.rpartition(".")
        mod = m.get_submodule(owner)
        if pn == "bias" and getattr(mod, "bias", "absent") is None:
            mod.bias = torch.nn.Parameter(v.clone())
    m.load_state_dict(sd)
    return m


def load(folder: Path, k: str, teacher, example: dict) -> tuple[Any, dict] | None:
    import torch

    if not (folder / f"{k}.pt").is_file() or not (folder / f"{k}.json").is_file():
        return None
    try:
        student = _resize(teacher, torch.load(folder / f"{k}.pt", weights_only=True)).eval()
        with torch.no_grad():
            student(**example)
    except Exception as exc:  # noqa: BLE001
        print(f"prune cache {k}: cannot rebuild the student ({exc}); pruning again", flush=True)
        return None
    return student, json.loads((folder / f"{k}.json").read_text())
