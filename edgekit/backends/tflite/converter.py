"""ONNX graph -> TFLite model bytes: prepare, walk the nodes through the op table, fuse, serialize."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.tflite.context import Context, Val, channels_last, identity, np_float, permute
from edgekit.backends.tflite.fuse import fuse_activations
from edgekit.backends.tflite.ops import OPS
from edgekit.backends.tflite.ops.common import OTHER_TARGETS
from edgekit.backends.tflite.prepare import Graph, attrs, load_graph
from edgekit.backends.tflite.versions import assign_versions
from edgekit.errors import UnsupportedModelError, UsageError


def supported_ops() -> list[str]:
    from edgekit.backends.tflite.decompose import RULES

    return sorted({k for k in OPS if "." not in k} | set(RULES))


def _rule_key(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _check_supported(g: Graph) -> None:
    for node in g.nodes:
        if _rule_key(node) not in OPS:
            raise UnsupportedModelError(
                f"op {node.op_type} (node '{node.name or node.output[0]}') has no TFLite lowering",
                hint=f"{OTHER_TARGETS}; edgekit lowers {len(supported_ops())} ONNX ops to TFLite, listed by "
                "edgekit.backends.tflite.supported_ops()",
            )


def _activations(ctx: Context, node) -> list[str]:
    names = [n for n in list(node.input) + list(node.output) if n and not ctx.is_const(n)]
    return [n for n in names if np_float(ctx.dtype(n))]


def convert(onnx_path: Path, options: dict[str, Any] | None = None) -> bytes:
    options = dict(options or {})
    io_layout = str(options.get("io_layout", "nchw")).lower()
    io_dtype = str(options.get("io_dtype", "float")).lower()
    if io_layout not in ("nchw", "nhwc"):
        raise UsageError(f"io_layout '{io_layout}' is not one of nchw, nhwc")
    if io_dtype not in ("float", "int8"):
        raise UsageError(f"io_dtype '{io_dtype}' is not one of float, int8")
    g = load_graph(Path(onnx_path), options.get("input_shapes"))
    precision = options.get("precision")
    if precision == "int8" and not (g.quantized or g.weight_quant):
        raise UsageError(
            f"{onnx_path}: int8 TFLite needs a QDQ-quantized ONNX model (no QuantizeLinear/DequantizeLinear found)",
            hint="quantize first (edgekit convert does this for int8 targets)",
        )
    if precision == "fp32" and g.quantized:  # dropping its activation Q/DQ computed another model (exit 3)
        raise UnsupportedModelError(
            "the model is already quantized (QuantizeLinear/DequantizeLinear on activations): a TFLite fp32 "
            "artifact cannot compute its int8 rounding",
            hint="-t onnxruntime or -t openvino run it as it is; for TFLite give the float model (--precision int8 "
                 "quantizes it)")
    if precision == "fp16" and g.quantized:
        raise UsageError(f"{onnx_path}: fp16 TFLite needs a float model; this one is already quantized",
                         hint="give the float model, or --precision int8")
    if precision in ("fp32", "fp16"):
        g.weight_quant = {}
    if io_dtype == "int8" and not g.quantized and g.weight_quant:
        raise UsageError("--io-dtype int8 needs int8 activations, but this model's int8 TFLite graph has int8 weights "
                         "only (a transformer graph: activations stay float, quantized per run by XNNPACK), so its "
                         "inputs and outputs are float", hint="drop --io-dtype int8")
    if io_dtype == "int8" and not g.quantized:
        raise UsageError("io_dtype int8 needs an int8 (QDQ) model", hint="use io_dtype float for fp32 targets")
    _check_supported(g)
    ctx = Context(g, options)
    w = ctx.w
    io_meta: dict[str, list] = {"inputs": [], "outputs": []}
    for name in g.inputs:
        shape = g.shapes[name]
        perm = _io_perm(g, name, io_layout, output=False)
        dt = np.dtype(g.dtypes[name])
        q = g.act_quant.get(name) if io_dtype == "int8" and np_float(dt) else None
        tdt = np.dtype(np.int8) if q is not None else (np.dtype(np.float32) if np_float(dt) else dt)
        idx = w.tensor(name, permute(shape, perm), tdt, quant=q)
        ctx.unique(name)
        ctx.register(name, Val(idx, perm, tdt, q))
        w.inputs.append(idx)
        w.signature_inputs.append((name, idx))
        io_meta["inputs"].append(_io_entry(name, shape, perm, dt, tdt))
    for node in g.nodes:
        rule = OPS[_rule_key(node)]
        acts = _activations(ctx, node)
        ctx.qmode = g.quantized and rule.quantizable(ctx, node) and all(a in g.act_quant for a in acts)
        ctx.node = node
        try:
            rule.fn(ctx, node)
        except UnsupportedModelError:
            raise
        except Exception as exc:
            raise UnsupportedModelError(
                f"op {node.op_type} (node '{node.name or node.output[0]}') failed to lower: {type(exc).__name__}: {exc}"
            ) from exc
    ctx.qmode = False
    if ctx._pending:
        raise RuntimeError(f"internal: {len(ctx._pending)} requantized tensors were never produced")
    check_order(w)
    names_taken = {t.name: i for i, t in enumerate(w.tensors)}
    for name in g.outputs:
        shape = g.shapes[name]
        perm = _io_perm(g, name, io_layout, output=True)
        dt = np.dtype(g.dtypes[name])
        if io_dtype == "int8" and name in g.act_quant:
            v = ctx.x(name, perm, q=g.act_quant[name])
        else:
            v = ctx.x(name, perm, float_=True)
        idx = v.idx
        if idx in w.inputs or idx in w.outputs or ctx.is_const(name):
            copy = w.tensor(name + "/copy", permute(shape, perm), v.dtype, quant=v.q)
            w.op("RESHAPE", [idx, ctx.i32(list(permute(shape, perm)))], [copy], "ReshapeOptions", newShape=list(permute(shape, perm)))
            idx = copy
        other = names_taken.get(name)
        if other is not None and other != idx:
            w.tensors[other].name = name + "/internal"
        w.tensors[idx].name = name
        w.outputs.append(idx)
        w.signature_outputs.append((name, idx))
        io_meta["outputs"].append(_io_entry(name, shape, perm, dt, v.dtype))
    fused = fuse_activations(w)
    assign_versions(w)  # after every rewrite: versions depend on the final types and options
    w.metadata["edgekit"] = json.dumps(
        {"format": 1, **io_meta, "notes": g.notes, "fused_activations": fused,
         "quantized": g.quantized, "io_layout": io_layout, "io_dtype": io_dtype},
        sort_keys=True,
    ).encode()
    return w.finish()


CARRIERS = ("Cast", "QuantizeLinear", "DequantizeLinear", "Identity")  # keep a tensor's layout


def _already_channels_last(g: Graph, name: str, output: bool) -> bool:
    """A rank-4 graph input that the model itself transposes to channels-first (uint8 (N, H, W, C) pixels, then
    permute(0, 3, 1, 2)), or an output it transposed to channels-last: already NHWC, left as it is by
    --io-layout nhwc (transposed again it became (N, H, C, W))."""
    if output:
        producer = {o: n for n in g.nodes for o in n.output}
        node = producer.get(name)
        while node is not None and node.op_type in CARRIERS:
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "Transpose" and list(attrs(node).get("perm", [])) == [0, 2, 3, 1]
    frontier, seen = [name], 0
    while frontier:
        t = frontier.pop()
        readers = [n for n in g.nodes if t in n.input]
        for n in readers:
            if n.op_type in CARRIERS and n.input[0] == t:
                frontier += list(n.output)
            elif n.op_type == "Transpose" and list(attrs(n).get("perm", [])) == [0, 3, 1, 2]:
                seen += 1
            else:
                return False
    return seen > 0


def _io_perm(g: Graph, name: str, io_layout: str, output: bool) -> tuple[int, ...]:
    rank = len(g.shapes[name])
    if io_layout == "nhwc" and rank == 4 and not _already_channels_last(g, name, output):
        return channels_last(rank)
    return identity(rank)


def _io_entry(name: str, shape: tuple, perm: tuple, onnx_dtype: np.dtype, tfl_dtype: np.dtype) -> dict:
    return {"name": name, "onnx_shape": list(shape), "perm": list(perm), "onnx_dtype": np.dtype(onnx_dtype).name,
            "dtype": np.dtype(tfl_dtype).name}


def check_order(w) -> None:
    """Every operator reads only tensors that are inputs, constants or outputs of an earlier operator: the
    builtin interpreter runs ops in list order (XNNPACK re-sorts, which would hide a misordered graph)."""
    ready = set(w.inputs) | {i for i, t in enumerate(w.tensors) if t.buffer}
    for k, op in enumerate(w.operators):
        missing = [int(i) for i in op.inputs if i >= 0 and int(i) not in ready]
        if missing:
            raise RuntimeError(f"internal: operator {k} reads tensor '{w.tensors[missing[0]].name}' before it is produced")
        ready.update(int(o) for o in op.outputs)
