"""torch.export programs (.pt2) and TorchScript archives, recognised by their zip members."""

from __future__ import annotations

import zipfile
from pathlib import Path

from edgekit.data import InputSpec
from edgekit.errors import ModelLoadError
from edgekit.sources.model import LoadedModel
from edgekit.sources.onnx_file import file_sha256
from edgekit.sources.shapes import apply_overrides, require_static
from edgekit.sources.torch_common import (
    forward_input_names,
    note_dynamic_batch,
    probe_leading_axis,
    specs_from_overrides,
    stated_shapes,
)

_DT = {"torch.float32": "float32", "torch.int64": "int64", "torch.int32": "int32", "torch.float16": "float16",
       "torch.uint8": "uint8", "torch.int8": "int8", "torch.bool": "bool"}


def zip_kind(path: Path) -> str | None:
    """'pt2', 'torchscript', 'pickle' (a torch.save zip) or None when `path` is not a torch zip archive."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        names = zipfile.ZipFile(path).namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any("serialized_exported_program" in n or n.endswith("archive_format") for n in names):
        return "pt2"
    if any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return None


def _first_line(exc: Exception) -> str:
    """The first non-empty line of an exception's message ('Unknown type name ...' follows a blank line), else its
    type."""
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


class _torch_export_log:
    """Collect what torch.export's logger prints (a traceback on stderr beside edgekit's one-line error) into `lines`
    instead."""

    def __init__(self, lines: list[str]) -> None:
        import logging

        self.logger = logging.getLogger("torch.export")
        self.handler = logging.Handler()
        self.handler.emit = lambda record: lines.append(record.getMessage() + "\n" + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""))

    def __enter__(self):
        self.saved = self.logger.handlers[:], self.logger.propagate
        self.logger.handlers[:] = [self.handler]
        self.logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        self.logger.handlers[:], self.logger.propagate = self.saved


def load_exported(path: Path, *, input_shapes=None) -> LoadedModel:
    import torch

    logged: list[str] = []
    try:
        with _torch_export_log(logged):  # torch logs the real cause with a traceback, then raises 'see above'
            ep = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001
        lines = [ln for ln in "\n".join(logged).splitlines() if ln.strip()]
        why = lines[-1].strip() if lines else _first_line(exc)
        raise ModelLoadError(f"{path}: cannot load the torch.export program ({why})",
                             hint="re-save it with torch.export.save") from exc
    _check_program(ep, path)
    specs: list[InputSpec] = []
    stated: list[InputSpec] = []  # as the program states them (a static leading axis may be no batch axis)
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in ep.graph_signature.user_inputs:
            continue
        val = node.meta.get("val")
        dims = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else ("batch" if i == 0 else str(d))
                     for i, d in enumerate(val.shape)) if val is not None else ()
        dtype = _DT.get(str(getattr(val, "dtype", "")), "float32")
        stated.append(InputSpec(node.name, dims, dtype))
        # a static leading size stays static: the artifact is exported from the program as it is (a static x (1, 6)
        # was reported as ('batch', 6) while every artifact took exactly 1x6). One that --input-shape sets to
        # another size is taken for the example's batch: the program is run and exported at the size given (a
        # CLIP text tower exported with 2 sentences, converted for 1), and verified there
        given = _given_shape(input_shapes, node.name, len(ep.graph_signature.user_inputs))
        if dims and isinstance(dims[0], int) and given is not None and len(given) == len(dims) and given[0] != dims[0]:
            dims = ("batch", *dims[1:])
        specs.append(InputSpec(node.name, dims, dtype))
    specs = apply_overrides(specs, input_shapes, str(path))
    require_static(specs, str(path))
    _check_default_sizes(ep, specs, path)
    module = _positional(ep.module(), ep)
    specs, names, task = probe_leading_axis(module, specs, stated, str(path))
    return LoadedModel(name=path.stem, kind="pt2", inputs=specs, output_names=names, task=task, module=module,
                       source_bytes_sha256=file_sha256(path), meta={"exported_program": ep})


def _given_shape(input_shapes, name: str, n_inputs: int):
    """The --input-shape given for input `name` (a bare one for a single-input program), else None."""
    if not input_shapes:
        return None
    given = input_shapes.get(name)
    if given is None and n_inputs == 1:
        given = input_shapes.get("")
    return given


_TRAINING_ARG = {"batch_norm": 5, "_native_batch_norm_legit": 5, "native_batch_norm": 5, "dropout": 2,
                 "native_dropout": 2, "feature_dropout": 2, "alpha_dropout": 2}


def _aten_name(node) -> str:
    """'batch_norm' for aten.batch_norm.default, 'add_' for aten.add_.Tensor."""
    parts = str(node.target).split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aten" else parts[0]


def _check_program(ep, path: Path) -> None:
    """A program exported from a model in training mode (BatchNorm on batch statistics, Dropout dropping), or one
    that updates a buffer in place on every call (a counter, running statistics): the artifact cannot compute what
    the program does, and verification failed with a bare 'cosine -0.01' (exit 3). Named here."""
    from edgekit.errors import UnsupportedModelError, UsageError

    buffers = dict(ep.graph_signature.inputs_to_buffers)
    calls = [(node, _aten_name(node)) for node in ep.graph.nodes if node.op == "call_function"]
    for node, op in calls:  # training mode first: it also updates BatchNorm's running statistics in place
        k = _TRAINING_ARG.get(op)
        if k is not None and len(node.args) > k and node.args[k] is True:
            raise UsageError(f"{path}: the program was exported in training mode ({op} '{node.name}' uses "
                             f"{'batch statistics' if 'norm' in op else 'random drops'}): "
                             f"{'each output depends on the rest of the batch' if 'norm' in op else 'outputs are random'}",
                             hint="export the model in eval mode: torch.export.export(model.eval(), ...)")
    for node, op in calls:
        target = node.args[0] if node.args else None
        if op.endswith("_") and getattr(target, "op", None) == "placeholder" and target.name in buffers:
            raise UnsupportedModelError(f"{path}: the program updates buffer '{buffers[target.name]}' in place on "
                                        f"every call ({op}): an artifact keeps no state from run to run",
                                        hint="compute it without the in-place update of a buffer in forward()")


def _check_default_sizes(ep, specs: list[InputSpec], path: Path) -> None:
    """A dynamic axis past the first gets the size 16 on synthetic inputs (data.shared_dims); a program whose range
    for it excludes 16 (torch.export.Dim("seq", max=8)) failed its own guard ('Guard failed: input_ids.size()[1] <=
    8', exit 2 with 'check --input-shape'). Named here with the range and a size inside it."""
    from edgekit.errors import UsageError

    ranges = {str(sym): (vr.lower, vr.upper) for sym, vr in ep.range_constraints.items()}
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if axis == 0 or not isinstance(dim, str) or dim not in ranges:
                continue
            lo, hi = ranges[dim]
            try:
                lo, hi = int(lo), (int(hi) if hi.is_finite else None)
            except (TypeError, ValueError, AttributeError):
                continue
            if lo <= 16 and (hi is None or 16 <= hi):
                continue
            size = max(lo, min(16, hi if hi is not None else 16))
            example = "x".join("1" if a == 0 else str(size) if a == axis else str(d) if isinstance(d, int) else "16"
                               for a, d in enumerate(spec.shape))
            raise UsageError(f"{path}: axis {axis} of input '{spec.name}' is dynamic within [{lo}, "
                             f"{hi if hi is not None else 'inf'}] in the program, and edgekit's default size for it "
                             "(16) lies outside", hint=f"give its size: --input-shape {spec.name}={example}")


def _positional(module, ep):
    """The program's module, called with its tensor inputs in order. The program takes its inputs as it was exported:
    keywords (torch.export.export(m, (), kwargs={...})), nested lists/dicts, and non-tensor arguments it specialized
    on (an int k=3); edgekit's positional call of the tensors alone failed ('kwarg keyword mismatch', 'Trying to
    flatten user inputs with exported input tree spec', reported as a bad --input-shape). The call is rebuilt from the
    program's input tree, with its example values for the non-tensor leaves."""
    import torch
    from torch.utils import _pytree as pytree

    spec = ep.call_spec.in_spec
    try:
        leaves, example_spec = pytree.tree_flatten(ep.example_inputs)
    except Exception:  # noqa: BLE001 - no example inputs saved
        return module
    if example_spec != spec:
        return module
    tensor = [isinstance(leaf, torch.Tensor) for leaf in leaves]
    plain = pytree.tree_flatten((tuple(range(len(leaves))), {}))[1]
    if all(tensor) and spec == plain:
        return module  # positional tensors only: called as is

    class ProgramCall(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            given = iter(xs)
            args, kwargs = pytree.tree_unflatten([next(given) if t else leaf for t, leaf in zip(tensor, leaves)], spec)
            return self.inner(*args, **kwargs)

    return ProgramCall(module)


def load_torchscript(path: Path, *, input_shapes=None) -> LoadedModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: cannot load the TorchScript archive ({_first_line(exc)})",
                             hint="re-save it with torch.jit.save") from exc
    try:
        args = module.forward.schema.arguments[1:]
        names = [a.name for k, a in enumerate(args) if k == 0 or not a.has_default_value()]
        optional = [a.name for a in args if a.name not in names]
    except Exception:  # noqa: BLE001
        names, optional = forward_input_names(module), []
    if optional:  # asked as inputs ('no --input-shape for input(s) mask, scale'), or an exporter INTERNAL ASSERT
        from edgekit.errors import UnsupportedModelError

        raise UnsupportedModelError(f"{path}: this TorchScript forward() has optional argument(s) {', '.join(optional)}; "
                                    "the ONNX exporter takes a TorchScript model only with every argument given as a "
                                    "tensor", hint="script a wrapper whose forward() takes the tensor inputs and "
                                                   "calls the model with those defaults, or give the model as a .pt2 "
                                                   "(torch.export) or a factory pkg.module:fn")
    stated = stated_shapes(names, input_shapes, str(path))
    specs, out_names, task = probe_leading_axis(module, specs_from_overrides(names, input_shapes, str(path)), stated,
                                                str(path))
    note_dynamic_batch(specs, stated, str(path))
    return LoadedModel(name=path.stem, kind="torchscript", inputs=specs, output_names=out_names, task=task,
                       module=module, source_bytes_sha256=file_sha256(path))
