"""torch nn.Module -> clean fp32 ONNX (the hub).

Exporter: torch.onnx.export(dynamo=False), TorchScript-based. Measured here (DESIGN.md and
benchmarks/export.py): ~1 s vs ~8 s for dynamo=True on a 1.9 GMAC CNN, same accuracy (4e-8), one file,
dynamic batch kept; eval-mode BatchNorm is folded into Conv by the exporter. Clean-up: onnxslim
(constant folding, dead code, shape inference, Conv/BN and Gemm fusions) when it helps, falling back to the
exporter's graph if onnxslim fails; onnx shape inference stamps value_info either way.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

from edgekit.data import InputSpec
from edgekit.errors import UnsupportedModelError, UsageError
from edgekit.progress import log

OPSET = 17


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
    try:
        module.eval()
    except NotImplementedError:  # torch.export's unlifted module is already in inference form
        pass
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet(), no_mha_fastpath():
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
        if "Unsupported" in msg or "not supported" in msg or "Exporting the operator" in msg:
            raise UnsupportedModelError(f"ONNX export failed: {msg}") from exc
        raise UsageError(f"ONNX export failed: {msg}",
                         hint="check --input-shape and that forward() is traceable") from exc
    model = onnx.load(str(out_path))
    if clean:
        model = clean_onnx(model)
    model.producer_name, model.producer_version = "edgekit", ""
    onnx.save(model, str(out_path))
    return out_path


def _traceable(module, args: tuple):
    """The module as the TorchScript exporter can take it. Wrapped (so node names gain an `inner` scope) only
    when needed: forward() has parameters beyond the model's inputs (left at their defaults, the exporter
    would make them graph inputs nothing feeds), or it returns a dict / nested sequence: then exactly the
    inputs are traced and the result is one flat tuple, in the order sources.torch_common.flat_outputs
    gives. TorchScript modules are left as they are (a dict result there stays an export error)."""
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
                                       any(isinstance(o, (dict, tuple, list)) for o in out))
    if not (extra or nested) or isinstance(module, torch.jit.ScriptModule):
        return module  # a TorchScript module cannot be traced from inside a Python wrapper

    class Traceable(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            return tuple(flat_outputs(self.inner(*xs)))

    return Traceable(module)


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

        slim = onnxslim.slim(model)
        if slim is not None and len(slim.graph.node) > 0:
            model = slim
    except Exception as exc:  # noqa: BLE001
        log(f"onnxslim clean-up skipped ({type(exc).__name__}: {exc})", verbose_only=True)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001
        pass
    log(f"ONNX clean-up: {before} -> {len(model.graph.node)} nodes", verbose_only=True)
    return model


class _quiet:
    """Silence the dynamo exporter's progress prints on stdout (stdout is reserved for --json)."""

    def __enter__(self):
        import contextlib
        import sys

        self._cm = contextlib.redirect_stdout(sys.stderr)
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
