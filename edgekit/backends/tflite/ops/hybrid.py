"""int8 weights with float activations ("weights" scheme, quantize/weights_only.py): LiteRT's hybrid kernels.

A MatMul/Gemm whose constant weight is DequantizeLinear(int8, zero point 0) and whose input carries no QDQ
parameters becomes a dynamic-range FULLY_CONNECTED: float input, int8 weight tensor with the DQ's per-output-
channel scales (quantized_dimension 0), float bias, float output, asymmetricQuantizeInputs: the kernel
quantizes each input row to int8 at run time (its own min/max, zero point) and runs int8 x int8 products.
XNNPACK takes it (qd8 x qc8w) as well as the builtin kernel.

A Gather reading a DequantizeLinear(int8) table becomes GATHER on the int8 table + DEQUANTIZE. GATHER copies
bytes, so the output cannot carry per-row scales (its rows are whichever the indices pick): with one scale per
row the int8 rows are gathered as integers (scale 1), the row scales are gathered alongside (a (V, 1) float
vector) and multiplied in. LiteRT loads a GATHER whose table carries per-row scales, but a DEQUANTIZE after it
only knows the output tensor's own (static) params, so per-row scales there would be wrong, not refused.
"""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.writer import Quant


def weight_params(ctx, name: str, size: int, onnx_axis: int) -> Quant | None:
    """The int8 params of constant `name` when its QDQ weight quantization is symmetric int8 and either per
    tensor or per channel along ONNX axis `onnx_axis` with `size` channels; None otherwise (it stays float)."""
    if ctx.qmode or name not in ctx.g.weight_quant:
        return None
    wq = ctx.g.weight_quant[name]
    if wq.zero_point.any() or not np.all(wq.scale > 0):
        return None
    if wq.scale.size == 1:
        return Quant(wq.scale, 0, 0)
    if wq.axis != onnx_axis or wq.scale.size != size:
        return None
    return Quant(wq.scale, 0, 0)


def _int8(value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The int8 values of a dequantized constant (value = q * scale, scale broadcast along axis 0)."""
    s = scale.reshape((-1,) + (1,) * (value.ndim - 1)) if scale.size > 1 else scale.reshape(())
    return np.clip(np.round(value / s), -127, 127).astype(np.int8)


def takes_fully_connected(ctx, a_name: str, w_name: str, n: int, onnx_out_axis: int) -> Quant | None:
    """Params for a hybrid FULLY_CONNECTED of float input `a_name` and weight `w_name` (n output channels on
    ONNX axis `onnx_out_axis`), or None when the node is not in that form."""
    if ctx.act_q(a_name) is not None or not np.dtype(ctx.dtype(a_name)).kind == "f":
        return None  # a QDQ'd input belongs to the full-int8 (or exact float) lowering
    return weight_params(ctx, w_name, n, onnx_out_axis)


def fully_connected(ctx, a_name: str, w_name: str, w: np.ndarray, q: Quant, bias: np.ndarray | None, out: str) -> None:
    """y = a @ w.T + bias, w (N, K) float values on the int8 grid of `q`; a float of any rank >= 2."""
    rank = len(ctx.shape(a_name))
    va = ctx.x(a_name, identity(rank), float_=True)
    wi = ctx.const_tensor(_int8(np.asarray(w, np.float32), q.scale), w_name, q=q)
    n = w.shape[0]
    bi = ctx.const_tensor(np.asarray(bias if bias is not None else np.zeros(n), np.float32), w_name + "/bias")
    y = ctx.out(out, identity(len(ctx.shape(out))))
    ctx.op("FULLY_CONNECTED", [va.idx, wi, bi], [y], "FullyConnectedOptions", keepNumDims=rank > 2,
           asymmetricQuantizeInputs=True)


def gather_table(ctx, node) -> bool:
    """Lower Gather(int8 table, indices) as GATHER on the int8 table + DEQUANTIZE; False when `node` is not a
    row lookup of a DequantizeLinear(int8) table with run-time indices."""
    data, ind = node.input
    out = node.output[0]
    axis = int(ctx.attrs(node).get("axis", 0)) % len(ctx.shape(data))
    if axis != 0 or not ctx.is_const(data) or ctx.is_const(ind) or ctx.act_q(out) is not None:
        return False
    table = np.asarray(ctx.const(data), np.float32)
    q = weight_params(ctx, data, table.shape[0], 0)
    if q is None:
        return False
    out_shape = ctx.shape(out)
    vi = ctx.x(ind, identity(len(ctx.shape(ind))))
    per_row = q.scale.size > 1
    stored = Quant(1.0, 0) if per_row else q  # per row: the integers, scaled after the lookup
    ti = ctx.const_tensor(_int8(table, q.scale), data + "/int8", q=stored)
    rows = ctx.tensor(out + "/int8", out_shape, np.int8, q=stored)
    ctx.op("GATHER", [ti, vi.idx], [rows], "GatherOptions", axis=0)
    if not per_row:
        ctx.op("DEQUANTIZE", [rows], [ctx.out(out, identity(len(out_shape)))])
        return True
    ints = ctx.tensor(out + "/rows", out_shape, np.float32)
    ctx.op("DEQUANTIZE", [rows], [ints])
    scales = ctx.const_tensor(q.scale.reshape((-1,) + (1,) * (table.ndim - 1)), data + "/row_scales")
    picked_shape = tuple(ctx.shape(ind)) + (1,) * (table.ndim - 1)
    picked = ctx.tensor(out + "/scales", picked_shape, np.float32)
    ctx.op("GATHER", [scales, vi.idx], [picked], "GatherOptions", axis=0)
    ctx.op("MUL", [ints, picked], [ctx.out(out, identity(len(out_shape)))], "MulOptions")
    return True
