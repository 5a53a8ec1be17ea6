"""LayerNormalization, InstanceNormalization (decomposed) and BatchNormalization (scale + shift)."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register


def _normalize(ctx, node, axes: list[int], eps: float, scale: np.ndarray | None, shift: np.ndarray | None,
               param_shape: tuple[int, ...]) -> None:
    """y = (x - mean) * rsqrt(var + eps) * scale + shift over ONNX `axes`."""
    x = node.input[0]
    v = ctx.x(x)
    rank = len(ctx.shape(x))
    shape = ctx.w.shape_of(v.idx)
    stored_axes = sorted(v.perm.index(a) for a in axes)
    red_shape = tuple(1 if i in stored_axes else d for i, d in enumerate(shape))
    name = node.output[0]
    axes_t = ctx.i32(np.asarray(stored_axes), "axes")

    def t(tag: str, shp) -> int:
        return ctx.tensor(f"{name}/{tag}", shp, np.float32)

    mean, d, d2, var, ve, r = t("mean", red_shape), t("centered", shape), t("sq", shape), t("var", red_shape), t("var_eps", red_shape), t("rstd", red_shape)
    ctx.op("MEAN", [v.idx, axes_t], [mean], "ReducerOptions", keepDims=True)
    ctx.op("SUB", [v.idx, mean], [d], "SubOptions")
    ctx.op("MUL", [d, d], [d2], "MulOptions")
    ctx.op("MEAN", [d2, axes_t], [var], "ReducerOptions", keepDims=True)
    ctx.op("ADD", [var, ctx.const_tensor(np.asarray([eps], np.float32), "eps")], [ve], "AddOptions")
    ctx.op("RSQRT", [ve], [r])
    steps = [("MUL", r, "MulOptions")]
    for arr, op, opts in ((scale, "MUL", "MulOptions"), (shift, "ADD", "AddOptions")):
        if arr is not None:
            full = np.asarray(arr, np.float32).reshape(param_shape)
            full = full.reshape((1,) * (rank - full.ndim) + full.shape).transpose(v.perm)
            steps.append((op, ctx.const_tensor(full, f"{name}/{op.lower()}"), opts))
    cur = d
    for k, (op, operand, opts) in enumerate(steps):
        out = ctx.out(name, v.perm) if k == len(steps) - 1 else t(f"step{k}", shape)
        ctx.op(op, [cur, operand], [out], opts)
        cur = out


@register("LayerNormalization")
def layer_norm(ctx, node) -> None:
    a = ctx.attrs(node)
    if len(node.output) > 1 and any(node.output[1:]):
        raise unsupported(node, "Mean/InvStdDev outputs")
    rank = len(ctx.shape(node.input[0]))
    axis = int(a.get("axis", -1)) % rank
    for k in (1, 2):
        if len(node.input) > k and node.input[k] and not ctx.is_const(node.input[k]):
            raise unsupported(node, "scale and bias must be constant")
    scale = ctx.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    shift = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    pshape = ctx.shape(node.input[0])[axis:]
    scale = None if scale is None else np.broadcast_to(scale, pshape)
    shift = None if shift is None else np.broadcast_to(shift, pshape)
    _normalize(ctx, node, list(range(axis, rank)), float(a.get("epsilon", 1e-5)), scale, shift, pshape)


@register("InstanceNormalization")
def instance_norm(ctx, node) -> None:
    rank = len(ctx.shape(node.input[0]))
    c = ctx.shape(node.input[0])[1]
    pshape = (c,) + (1,) * (rank - 2)
    _normalize(ctx, node, list(range(2, rank)), float(ctx.attrs(node).get("epsilon", 1e-5)),
               ctx.const(node.input[1]), ctx.const(node.input[2]), pshape)


@register("BatchNormalization")
def batch_norm(ctx, node) -> None:
    if len(node.output) > 1 and any(node.output[1:]):
        raise unsupported(node, "training mode outputs")
    x = node.input[0]
    for n in node.input[1:5]:
        if not ctx.is_const(n):
            raise unsupported(node, "statistics must be constant")
    scale, bias, mean, var = (ctx.const(n).astype(np.float64) for n in node.input[1:5])
    eps = float(ctx.attrs(node).get("epsilon", 1e-5))
    k = scale / np.sqrt(var + eps)
    c = bias - mean * k
    v = ctx.x(x)
    rank = len(ctx.shape(x))
    pshape = (1, -1) + (1,) * (rank - 2)
    kk = ctx.const_like(k.astype(np.float32).reshape(pshape), x + "/bn_scale", rank, v.perm)
    cc = ctx.const_like(c.astype(np.float32).reshape(pshape), x + "/bn_shift", rank, v.perm)
    mid = ctx.tensor(node.output[0] + "/scaled", ctx.w.shape_of(v.idx), np.float32)
    ctx.op("MUL", [v.idx, kk.idx], [mid], "MulOptions")
    y = ctx.out(node.output[0], v.perm)
    ctx.op("ADD", [mid, cc.idx], [y], "AddOptions")
