"""Helpers shared by the torch sources: input names from forward(), example inputs, task guess."""

from __future__ import annotations

import inspect

from edgekit.data import InputSpec
from edgekit.errors import UsageError
from edgekit.sources.shapes import apply_overrides, batch_size_note, require_static


def forward_input_names(module) -> list[str]:
    fwd = module.forward
    names = []
    for p in inspect.signature(fwd).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is not p.empty and names:
            continue  # optional extras are left at their defaults
        names.append(p.name)
    return names


def as_float32(module, overrides, source: str):
    """A model whose floating weights are all float16, bfloat16 or float64 (a factory returning model.half(), a
    checkpoint kept in bf16), cast to float32: inputs are float32 unless --input-shape says otherwise, and the model
    failed on them ('mat1 and mat2 must have the same dtype ... Float and Half', reported as a bad --input-shape).
    Left as it is when some weights are float32 or an input is declared float16."""
    import torch

    floats = {t.dtype for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()}
    if not floats or torch.float32 in floats:
        return module
    if any(getattr(v, "dtype", None) == "float16" for v in (overrides or {}).values()):
        return module
    from edgekit.progress import log

    names = ", ".join(sorted(str(d).replace("torch.", "") for d in floats))
    log(f"{source}: the model's weights are {names}: converted to float32 (the artifacts compute in float32)")
    return module.float()


def _example(name: str) -> str:
    """An --input-shape example for an input: token ids and masks (by name, as text data matches them) are
    integer sequences; anything else is shown as an image."""
    from edgekit.data.text import input_role

    return f"{name}=1x128:int64" if input_role(name) else f"{name}=1x3x224x224"


def _require_names(names: list[str], source: str) -> None:
    if not names:  # forward(self, *xs) / (**kw): a bare --input-shape said 'this one has ' (no names)
        raise UsageError(f"{source}: forward() names no inputs (it takes *args / **kwargs); edgekit names a torch "
                         "model's inputs after forward()'s parameters",
                         hint="wrap the model in one whose forward(self, x, ...) names each input")


def specs_from_overrides(names: list[str], overrides: dict[str, tuple[int, ...]] | None,
                         source: str) -> list[InputSpec]:
    """Torch sources state no shapes: every input needs --input-shape; the batch axis stays dynamic."""
    _require_names(names, source)
    blank = [InputSpec(n, (), "float32") for n in names]
    if not overrides:
        raise UsageError(f"{source}: input shapes are unknown for a torch model",
                         hint="give --input-shape " + " --input-shape ".join(_example(n) for n in names))
    specs = apply_overrides(blank, overrides, source)
    missing = [s.name for s in specs if not s.shape]
    if missing:
        raise UsageError(f"{source}: no --input-shape for input(s) {', '.join(missing)}",
                         hint=f"give --input-shape {_example(missing[0])}")
    specs = [InputSpec(s.name, ("batch", *s.shape[1:]), s.dtype) for s in specs]
    require_static(specs, source)
    return specs


def note_dynamic_batch(specs: list[InputSpec], stated: list[InputSpec], source: str) -> None:
    """After probe_leading_axis: a leading size --input-shape gave (other than 1) to an axis kept as a dynamic batch."""
    for spec, given in zip(specs, stated):
        if spec.shape and spec.shape[0] == "batch" and given.shape and given.shape[0] != 1:
            batch_size_note(source, spec.name, "batch", given.shape[0])


def stated_shapes(names: list[str], overrides: dict[str, tuple[int, ...]] | None, source: str) -> list[InputSpec]:
    """The shapes exactly as --input-shape gives them (leading axis included)."""
    _require_names(names, source)
    return apply_overrides([InputSpec(n, (), "float32") for n in names], overrides, source)


def probe_leading_axis(module, specs: list[InputSpec], stated: list[InputSpec],
                       source: str) -> tuple[list[InputSpec], list[str], str]:
    """probe() with the leading axis dynamic (as a batch axis); a model that runs only at the leading size it was
    stated with (a batch-free (C, H, W) input: forward() adds the batch itself) keeps that axis static. Returns
    (specs, output names, task)."""
    try:
        return (specs, *probe(module, specs, source))
    except UsageError as first:
        fixed = [InputSpec(s.name, (g.shape[0], *s.shape[1:]), s.dtype)
                 if s.shape and s.shape[0] == "batch" and g.shape and isinstance(g.shape[0], int) and g.shape[0] > 1
                 else s for s, g in zip(specs, stated)]
        if fixed == specs:
            raise
        try:
            names, task = probe(module, fixed, source)
        except UsageError:
            raise first from None
    from edgekit.progress import log

    moved = [f"{f.name} ({f.shape[0]})" for s, f in zip(specs, fixed) if s != f]
    log(f"{source}: the leading axis of {', '.join(moved)} is no batch axis (the model runs only at the size "
        "given): kept static")
    return fixed, names, task


def flat_outputs(out) -> list:
    """A forward()'s result as a list of tensors: a tensor, a (nested) tuple/list, or a dict (its values, in
    order: the ONNX exporter flattens it the same way), or a dataclass (its fields). None is no output (nanoGPT's
    (logits, loss) with no targets; a ModelOutput field left unset): the exporter drops it too."""
    import dataclasses

    if out is None:
        return []
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flat_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flat_outputs(v)]
    return [out]


def output_names(out) -> list[str]:
    """Names for the flattened outputs: a dict's keys (when each holds one tensor), else output / output_i."""
    flat = flat_outputs(out)
    if isinstance(out, dict) and sum(v is not None for v in out.values()) == len(flat):
        return [str(k) for k, v in out.items() if v is not None]
    return ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]


def example_tensors(inputs: list[InputSpec]) -> tuple:
    """Inputs to run or trace a torch model on: float and bool zeros, integer ones (a valid token id, and an
    attention mask that attends everywhere: a mask of zeros gives empty sequences, which pack_padded_sequence
    refuses; a bool mask is torch's key_padding_mask, where True masks: all False attends everywhere)."""
    import numpy as np
    import torch

    from edgekit.data import shared_dims

    kind = {s.name: np.dtype(s.dtype).kind for s in inputs}
    dims = shared_dims(inputs)  # a named dynamic axis has one size in every input
    return tuple(torch.from_numpy((np.ones if kind[s.name] in "iu" else np.zeros)(s.concrete_shape(dims),
                                                                                   dtype=s.dtype))
                 for s in inputs)


def probe(module, inputs: list[InputSpec], source: str) -> tuple[list[str], str]:
    """Run the module once on example_tensors of the stated shapes: output names and task. Bad shapes fail here."""
    import torch

    args = list(example_tensors(inputs))
    try:
        with torch.no_grad():
            out = module(*args)
    except Exception as exc:  # noqa: BLE001
        from edgekit.data import shared_dims

        dims = shared_dims(inputs)  # the shapes example_tensors ran with
        shapes = ", ".join(f"{s.name}={'x'.join(map(str, s.concrete_shape(dims)))}:{s.dtype}" for s in inputs)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "check --input-shape against what the model expects"
        if "Long" in first or "indices" in first:  # e.g. an embedding fed float zeros
            hint += "; integer inputs (token ids) need a dtype: --input-shape NAME=1x128:int64"
        raise UsageError(f"{source}: the model does not run on inputs {shapes}: {first}", hint=hint) from exc
    before = {n: b.detach().clone() for n, b in module.named_buffers()}
    if before:  # a second call: a cache built lazily on the first one is no state that changes on every run
        with torch.no_grad():
            module(*args)
        _check_state(module, before, source)
    outs, names = flat_outputs(out), output_names(out)
    task = "classification" if len(outs) == 1 and outs[0].ndim == 2 and outs[0].shape[1] > 1 else "generic"
    return names, task


def _check_state(module, before: dict, source: str) -> None:
    """A forward() that changes a buffer (a call counter, a cache, running statistics updated in eval mode) computes
    something else on every run; an artifact keeps no state, and verification failed with a bare 'cosine -0.99'
    (exit 3). The buffer is named instead; its value is put back."""
    import torch

    from edgekit.errors import UnsupportedModelError

    for name, buf in module.named_buffers():
        old = before.get(name)
        if old is None:
            continue
        same = old.shape == buf.shape and (torch.equal(old.nan_to_num(), buf.nan_to_num()) if old.is_floating_point()
                                           else torch.equal(old, buf))
        if not same:
            with torch.no_grad():
                if old.shape == buf.shape:
                    buf.copy_(old)
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
                raise UsageError(f"{source}: the model runs in training mode: BatchNorm '{name.rsplit('.', 1)[0]}' "
                                 "updates its running statistics and normalizes with each batch's",
                                 hint="save it from model.eval() (a traced model keeps the mode it was traced in)")
            raise UnsupportedModelError(f"{source}: forward() changes buffer '{name}' on every call: an artifact keeps "
                                        "no state from run to run",
                                        hint="compute it without updating a buffer in forward()")
