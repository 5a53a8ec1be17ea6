"""torch nn.Module -> clean fp32 ONNX (the hub).

Exporter: torch.onnx.export(dynamo=False), TorchScript-based. Measured here (DESIGN.md and
benchmarks/export.py): ~1 s vs ~8 s for dynamo=True on a 1.9 GMAC CNN, same accuracy (4e-8), one file,
dynamic batch kept; eval-mode BatchNorm is folded into Conv by the exporter. Clean-up: onnxslim
(constant folding, dead code, shape inference, Conv/BN and Gemm fusions) when it helps, falling back to the
exporter's graph if onnxslim fails; onnx shape inference stamps value_info either way.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

from edgekit.data import InputSpec
from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.native_output import CapturedOutput
from edgekit.progress import log

OPSET = 17
MAX_OPSET = 20  # the TorchScript exporter's newest opset: used only when an operator needs it


def export_onnx(module, inputs: list[InputSpec], output_names: list[str], out_path: Path,
                *, opset: int = OPSET, clean: bool = True, exported=None) -> Path:
    import onnx
    import torch

    from edgekit.sources.torch_common import example_tensors

    args = example_tensors(inputs)
    dynamic_axes = {s.name: {ax: d for ax, d in enumerate(s.shape) if isinstance(d, str)} for s in inputs}
    dynamic_axes = {k: v for k, v in dynamic_axes.items() if v}
    if dynamic_axes:
        for name in output_names:
            dynamic_axes[name] = {0: "batch"}
    out_path = Path(out_path)
    source = module
    try:
        module.eval()
    except NotImplementedError:  # torch.export's unlifted module is already in inference form
        pass
    captured = CapturedOutput()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet(), no_mha_fastpath(), captured:
            warnings.simplefilter("ignore")
            if exported is not None:  # a torch.export program: the dynamo exporter takes it as is
                torch.onnx.export(exported, (), str(out_path), dynamo=True, external_data=False,
                                  opset_version=max(opset, 18), input_names=[s.name for s in inputs],
                                  output_names=list(output_names), verbose=False)
            else:
                module = _traceable(module, args)
                torch.onnx.export(module, args, str(out_path), dynamo=False, opset_version=opset,
                                  input_names=[s.name for s in inputs], output_names=list(output_names),
                                  dynamic_axes=dynamic_axes or None, do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if captured.text.strip():
            log(f"the exporter's own output:\n{captured.text.rstrip()}", verbose_only=True)
        needed = re.search(r"added in version (\d+)", str(exc))  # F.fold (Col2Im) needs opset 18
        if exported is None and needed and opset < int(needed[1]) <= MAX_OPSET:
            log(f"an operator needs ONNX opset {needed[1]}: exporting with opset {needed[1]}")
            return export_onnx(source, inputs, output_names, out_path, opset=int(needed[1]), clean=clean)
        if "prim::DictConstruct" in msg and isinstance(module, torch.jit.ScriptModule):
            raise UnsupportedModelError(f"ONNX export failed: the TorchScript model returns a dict ({msg})",
                                        hint="return a tuple from forward(), or give the model as a torch.export "
                                             "program (.pt2) or a factory pkg.module:fn, whose dict outputs edgekit "
                                             "flattens") from exc
        if "Unsupported" in msg or "not supported" in msg or "Exporting the operator" in msg:
            raise UnsupportedModelError(f"ONNX export failed: {msg}") from exc
        raise UsageError(f"ONNX export failed: {msg}",
                         hint="check --input-shape and that forward() is traceable") from exc
    model = onnx.load(str(out_path))
    if exported is not None:
        name_dynamic_dims(model, inputs)
    if clean:
        model = clean_onnx(model)
    explicit_conv_pads(model)
    model.producer_name, model.producer_version = "edgekit", ""
    onnx.save(model, str(out_path))
    return out_path


def name_dynamic_dims(model, inputs: list[InputSpec]) -> int:
    """The dynamo exporter names a torch.export program's dynamic axes after torch's symbols ('s31', 's40'): the
    artifact's inputs read s31x3x224x224 while edgekit reports 'batch'. Each symbol an input axis carries is
    renamed to that axis's name in the input spec, everywhere in the graph's signatures. Returns how many."""
    rename: dict[str, str] = {}
    by_name = {s.name: s for s in inputs}
    for vi in model.graph.input:
        spec = by_name.get(vi.name)
        if spec is None:
            continue
        for axis, dim in enumerate(vi.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and axis < len(spec.shape) and isinstance(spec.shape[axis], str):
                rename.setdefault(dim.dim_param, spec.shape[axis])
    rename = {k: v for k, v in rename.items() if k != v}
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    return len(rename)


def _traceable(module, args: tuple):
    """The module as the TorchScript exporter can take it. Wrapped (so node names gain an `inner` scope) only
    when needed: forward() has parameters beyond the model's inputs (left at their defaults, the exporter
    would make them graph inputs nothing feeds), or it returns a dict / nested sequence: then exactly the
    inputs are traced and the result is one flat tuple, in the order sources.torch_common.flat_outputs
    gives. TorchScript modules are left as they are (a dict result there stays an export error)."""
    import dataclasses
    import inspect

    import torch

    from edgekit.sources.torch_common import flat_outputs

    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        extra = len(params) > len(args)
    except (TypeError, ValueError):
        extra = False
    with torch.no_grad():
        out = module(*args)
    nested = isinstance(out, dict) or (isinstance(out, (tuple, list)) and
                                       any(isinstance(o, (dict, tuple, list)) for o in out)) \
        or (dataclasses.is_dataclass(out) and not isinstance(out, type))  # the exporter refuses a dataclass
    if not (extra or nested) or isinstance(module, torch.jit.ScriptModule):
        return module  # a TorchScript module cannot be traced from inside a Python wrapper

    class Traceable(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            return tuple(flat_outputs(self.inner(*xs)))

    return Traceable(module).train(module.training)  # the exporter restores the wrapper's mode on the model


@contextlib.contextmanager
def no_mha_fastpath():
    """nn.TransformerEncoderLayer / nn.MultiheadAttention take a fused kernel (aten::_transformer_encoder_layer_fwd)
    under no_grad in eval mode, which has no ONNX export: trace the plain ops instead."""
    import torch

    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def clean_onnx(model):
    """Constant folding, fusions and shape inference; keeps the exporter's graph if onnxslim fails."""
    import onnx

    before = len(model.graph.node)
    try:
        import onnxslim

        from edgekit.export_check import CHECK_MAX_BYTES, same_outputs

        exported = model.SerializeToString() if model.ByteSize() < CHECK_MAX_BYTES else None
        for options in ({}, {"no_shape_infer": True}):  # its shape inference folded a UNet's pads wrongly
            slim = onnxslim.slim(model if exported is None else onnx.load_from_string(exported), **options)
            if slim is None or len(slim.graph.node) == 0:
                break
            agree, diff = (True, 0.0) if exported is None else same_outputs(exported, slim, model)
            if agree:
                model = slim
                break
            log(f"onnxslim clean-up {options or ''} changed the model's outputs (relative difference {diff:.3g}): "
                "not taken", verbose_only=True)
    except Exception as exc:  # noqa: BLE001
        log(f"onnxslim clean-up skipped ({type(exc).__name__}: {exc})", verbose_only=True)
    try:
        from edgekit.onnx_shapes import infer_shapes

        model = infer_shapes(model)  # weights kept out of the round trip (onnx_shapes.py)
    except Exception:  # noqa: BLE001
        pass
    log(f"ONNX clean-up: {before} -> {len(model.graph.node)} nodes", verbose_only=True)
    return model


def explicit_conv_pads(model) -> bool:
    """Conv with auto_pad SAME_UPPER / SAME_LOWER (torch's padding="same") -> the same padding as explicit `pads`:
    ONNX Runtime refuses SAME with a dilation ('Dilation not supported for AutoPadType::SAME_UPPER'), and explicit
    pads are what every later pass reads. With stride 1 the total is dilation * (kernel - 1) whatever the input
    size; with a larger stride it needs the static input size (else the node is left as it is). Changes `model` in
    place; True when a node changed."""
    import math

    import onnx
    from onnx import helper

    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.input]}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    changed = False
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            continue
        kernel = attrs.get("kernel_shape") or weights.get(node.input[1], [])[2:]
        if not kernel:
            continue
        nsp = len(kernel)
        strides = attrs.get("strides") or [1] * nsp
        dilations = attrs.get("dilations") or [1] * nsp
        size = (shapes.get(node.input[0]) or [None] * (nsp + 2))[2:]
        totals = []
        for i in range(nsp):
            eff = dilations[i] * (kernel[i] - 1) + 1
            if strides[i] == 1:
                totals.append(eff - 1)
            elif len(size) == nsp and size[i]:
                totals.append(max((math.ceil(size[i] / strides[i]) - 1) * strides[i] + eff - size[i], 0))
            else:
                break
        if len(totals) != nsp:
            continue
        small = [t // 2 for t in totals]
        begin = small if mode == "SAME_UPPER" else [t - s for t, s in zip(totals, small)]
        end = [t - b for t, b in zip(totals, begin)]
        keep = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend([*keep, onnx.helper.make_attribute("pads", begin + end)])
        changed = True
    return changed


class _quiet:
    """Silence the dynamo exporter's progress prints on stdout (stdout is reserved for --json)."""

    def __enter__(self):
        import contextlib
        import sys

        self._cm = contextlib.redirect_stdout(sys.stderr)
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
