"""A Python factory `pkg.module:fn` returning an nn.Module, with an optional --weights state_dict."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path

from edgekit.errors import ModelLoadError
from edgekit.sources.model import LoadedModel
from edgekit.sources.onnx_file import file_sha256
from edgekit.sources.torch_common import (
    as_float32,
    forward_input_names,
    note_dynamic_batch,
    probe_leading_axis,
    specs_from_overrides,
    stated_shapes,
)
from edgekit.sources.weights import apply_state_dict, load_state_dict


def _import(name: str):
    """The factory's module; from the current folder too, as `python -m` finds it (the installed `edgekit` command
    did not: 'No module named mypkg' from the project folder itself)."""
    import os
    import sys

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != name.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)
        return importlib.import_module(name)


def load(spec: str, *, weights: Path | None = None, input_shapes=None) -> LoadedModel:
    import torch

    mod_name, fn_name = spec.split(":")
    try:
        mod = _import(mod_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import '{mod_name}' for factory {spec}: {exc}",
                             hint="make the package importable (pip install it or set PYTHONPATH)") from exc
    fn = getattr(mod, fn_name, None)
    if fn is None or not callable(fn):
        raise ModelLoadError(f"'{mod_name}' has no callable '{fn_name}'")
    try:
        required = [p.name for p in inspect.signature(fn).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    except (TypeError, ValueError):  # a builtin or C callable states none
        required = []
    if required:
        raise ModelLoadError(f"factory {spec} needs argument(s) {', '.join(required)}; edgekit calls it with none",
                             hint=f"point at a function without required arguments, e.g. def build(): return "
                                  f"{fn_name}({', '.join(f'{n}=...' for n in required)})")
    try:
        module = fn()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"factory {spec} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory {spec} returned {type(module).__name__}, not a torch.nn.Module")
    module = unwrap(module, spec)
    h = hashlib.sha256(inspect.getsource(mod).encode())
    if weights is not None:
        apply_state_dict(module, load_state_dict(Path(weights)), Path(weights))
        h.update(file_sha256(Path(weights)).encode())
    module.eval()
    empty = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if empty:  # torch.device("meta") (deferred init): the probe said 'Tensor on device meta ... check --input-shape'
        raise ModelLoadError(f"factory {spec} built its model on the meta device: {', '.join(empty[:3])}"
                             f"{' ...' if len(empty) > 3 else ''} hold no values",
                             hint="give --weights with every tensor of the model, or build it on the CPU")
    module = as_float32(module, input_shapes, spec)
    names = forward_input_names(module)
    stated = stated_shapes(names, input_shapes, spec)
    specs, out_names, task = probe_leading_axis(module, specs_from_overrides(names, input_shapes, spec), stated, spec)
    note_dynamic_batch(specs, stated, spec)
    return LoadedModel(name=fn_name, kind="factory", inputs=specs, output_names=out_names, task=task,
                       module=module, source_bytes_sha256=h.hexdigest())


def unwrap(module, spec: str):
    """The model inside a wrapper whose forward() is (*args, **kwargs): torch.compile's OptimizedModule (._orig_mod),
    DataParallel / DistributedDataParallel (.module). edgekit names inputs after forward()'s parameters, and a
    factory returning torch.compile(model) was 'forward() names no inputs'."""
    import torch

    from edgekit.progress import log

    while True:
        if type(module).__name__ == "OptimizedModule" and isinstance(getattr(module, "_orig_mod", None),
                                                                      torch.nn.Module):
            inner = module._orig_mod
        elif isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            inner = module.module
        else:
            return module
        log(f"factory {spec}: converting the model inside its {type(module).__name__} wrapper")
        module = inner
