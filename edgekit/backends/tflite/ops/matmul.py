"""Gemm and MatMul: FULLY_CONNECTED when the weight is a 2-D constant, BATCH_MATMUL otherwise."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.ops import hybrid
from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.elementwise import binary
from edgekit.backends.tflite.ops.registry import register
from edgekit.backends.tflite.ops.shape_ops import _reshape


def _fc(ctx, node, a_name: str, w_name: str, w: np.ndarray, onnx_axes: tuple[int, int], bias: np.ndarray | None, out: str) -> None:
    """y = a @ w.T + bias with w (N, K) constant; a of any rank >= 2 in ONNX layout. int8 weights on a float
    input (the "weights" scheme) take the hybrid kernel (hybrid.py)."""
    hq = hybrid.takes_fully_connected(ctx, a_name, w_name, w.shape[0], onnx_axes[0])
    if hq is not None:
        hybrid.fully_connected(ctx, a_name, w_name, w, hq, bias, out)
        return
    rank = len(ctx.shape(a_name))
    va = ctx.x(a_name, identity(rank))
    wi, wq = ctx.weight(w_name, w, onnx_axes, 0)
    n = w.shape[0]
    bi = ctx.bias(w_name + "/bias", bias if bias is not None else np.zeros(n, np.float32), va.q, wq)
    y = ctx.out(out, identity(len(ctx.shape(out))))
    ctx.op("FULLY_CONNECTED", [va.idx, wi, bi], [y], "FullyConnectedOptions", keepNumDims=rank > 2)


def _temp(ctx, like: str, name: str, shape: tuple[int, ...]) -> str:
    ctx.g.shapes[name], ctx.g.dtypes[name] = tuple(shape), ctx.dtype(like)
    if like in ctx.g.act_quant:
        ctx.g.act_quant[name] = ctx.g.act_quant[like]
    return name


def _batch_matmul(ctx, a: str, b: str, out: str, adj_x: bool = False, adj_y: bool = False) -> None:
    va = ctx.x(a, identity(len(ctx.shape(a))))
    vb = ctx.x(b, identity(len(ctx.shape(b))))
    y = ctx.out(out, identity(len(ctx.shape(out))))
    ctx.op("BATCH_MATMUL", [va.idx, vb.idx], [y], "BatchMatMulOptions", adjX=adj_x, adjY=adj_y)


@register("Gemm", int8=True)
def gemm(ctx, node) -> None:
    a = ctx.attrs(node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    trans_a, trans_b = int(a.get("transA", 0)), int(a.get("transB", 0))
    an, bn = node.input[0], node.input[1]
    cn = node.input[2] if len(node.input) > 2 and node.input[2] else None
    out = node.output[0]
    m, n = ctx.shape(out)
    c_bias = None
    if cn is not None and ctx.is_const(cn) and ctx.const(cn).size in (1, n) and ctx.const(cn).ndim <= 2:
        c_bias = np.broadcast_to(ctx.const(cn).astype(np.float32).reshape(-1), (n,)) * beta
        cn = None
    if trans_a:
        if ctx.is_const(an):
            raise unsupported(node, "constant A with transA")
        va = ctx.x(an, identity(2))
        k = ctx.shape(an)[0]
        tn = _temp(ctx, an, f"{an}/T", (m, k))
        t = ctx.out(tn)
        ctx.op("TRANSPOSE", [va.idx, ctx.i32([1, 0], "perm")], [t])
        an = tn
    post: list[tuple[str, str, str]] = []  # (op, options, constant operand) applied after the product
    if not ctx.is_const(bn):
        if alpha != 1.0:
            post.append(("MUL", "MulOptions", _const(ctx, f"{out}/alpha", np.asarray(alpha, np.float32))))
        if c_bias is not None:
            post.append(("ADD", "AddOptions", _const(ctx, f"{out}/bias", c_bias.astype(np.float32))))
    if cn is not None:
        if beta != 1.0:
            if not ctx.is_const(cn):
                raise unsupported(node, "beta != 1 with a non-constant C")
            cn = _const(ctx, f"{cn}/beta", ctx.const(cn).astype(np.float32) * beta)
        post.append(("ADD", "AddOptions", cn))
    cur = out if not post else _temp(ctx, out, f"{out}/mm", (m, n))
    if ctx.is_const(bn):
        b = ctx.const(bn).astype(np.float32)
        w, axes = (b, (0, 1)) if trans_b else (b.T, (1, 0))
        wname = bn if alpha == 1.0 else _const(ctx, f"{bn}/alpha", b * alpha)
        _fc(ctx, node, an, wname, w * alpha, axes, c_bias, cur)
    else:
        _batch_matmul(ctx, an, bn, cur, adj_y=bool(trans_b))
    for k, (op, opts, operand) in enumerate(post):
        nxt = out if k == len(post) - 1 else _temp(ctx, out, f"{out}/post{k}", (m, n))
        binary(ctx, op, opts, cur, operand, nxt)
        cur = nxt


def _const(ctx, name: str, value: np.ndarray) -> str:
    ctx.g.consts[name] = value
    ctx.g.shapes[name], ctx.g.dtypes[name] = tuple(value.shape), value.dtype
    return name


@register("MatMul", "edgekit.MatMulBias", int8=True)
def matmul(ctx, node) -> None:
    an, bn = node.input[0], node.input[1]
    bias = ctx.const(node.input[2]).astype(np.float32) if len(node.input) > 2 else None
    ra, rb = len(ctx.shape(an)), len(ctx.shape(bn))
    if ra == 1 or rb == 1:  # numpy rules: a vector is a (1, K) row on the left, a (K, 1) column on the right
        a2 = _as_2d(ctx, an, (1, ctx.shape(an)[0]), "row") if ra == 1 else an
        b2 = _as_2d(ctx, bn, (ctx.shape(bn)[0], 1), "col") if rb == 1 else bn
        sa, sb = ctx.shape(a2), ctx.shape(b2)
        mid = _temp(ctx, node.output[0], node.output[0] + "/2d",
                    (*np.broadcast_shapes(sa[:-2], sb[:-2]), sa[-2], sb[-1]))
        _matmul(ctx, node, a2, b2, bias, mid)
        _reshape(ctx, mid, node.output[0])
        return
    _matmul(ctx, node, an, bn, bias, node.output[0])


def _as_2d(ctx, name: str, shape: tuple[int, int], tag: str) -> str:
    new = f"{name}/{tag}"
    if ctx.is_const(name):
        ctx.g.consts[new] = ctx.const(name).reshape(shape)
        ctx.g.shapes[new], ctx.g.dtypes[new] = shape, ctx.dtype(name)
        wq = ctx.g.weight_quant.get(name)
        if wq is not None and wq.scale.size == 1:
            ctx.g.weight_quant[new] = wq
        return new
    _reshape(ctx, name, _temp(ctx, name, new, shape))
    return new


def _matmul(ctx, node, an: str, bn: str, bias: np.ndarray | None, out: str) -> None:
    if ctx.is_const(bn) and len(ctx.shape(bn)) == 2 and not ctx.is_const(an):
        b = ctx.const(bn).astype(np.float32)
        _fc(ctx, node, an, bn, b.T, (1, 0), bias, out)
        return
    if bias is None:
        _batch_matmul(ctx, an, bn, out)
        return
    mm = _temp(ctx, out, out + "/mm", ctx.shape(out))
    _batch_matmul(ctx, an, bn, mm)
    binary(ctx, "ADD", "AddOptions", mm, node.input[2], out)
