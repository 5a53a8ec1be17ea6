"""Elementwise ops with numpy broadcasting: arithmetic, comparisons, unary math, Where, Cast, Identity."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register
from edgekit.backends.tflite.writer import tensor_type

_BINARY = {
    "Add": ("ADD", "AddOptions"), "Sub": ("SUB", "SubOptions"), "Mul": ("MUL", "MulOptions"),
    "Div": ("DIV", "DivOptions"), "Pow": ("POW", None), "Max": ("MAXIMUM", None), "Min": ("MINIMUM", None),
    "Equal": ("EQUAL", None), "Less": ("LESS", None), "Greater": ("GREATER", None),
    "LessOrEqual": ("LESS_EQUAL", None), "GreaterOrEqual": ("GREATER_EQUAL", None),
    "And": ("LOGICAL_AND", None), "Or": ("LOGICAL_OR", None), "Mod": ("FLOOR_MOD", None),
    "Xor": ("NOT_EQUAL", None),  # bool operands only (ONNX): a xor b == a != b; torch's floor division writes one
}
_SAME_PARAMS = {"MAXIMUM", "MINIMUM"}  # int8 kernels compare raw values: inputs must share the output params


def binary(ctx, tfl: str, options: str | None, a: str, b: str, out: str, out_name: str | None = None) -> None:
    rank = len(ctx.shape(out))
    perm = ctx.first_perm([a, b], rank)
    q = ctx.out_q_of(out) if tfl in _SAME_PARAMS else None
    va = ctx.broadcast_operand(a, rank, perm, q=q)
    vb = ctx.broadcast_operand(b, rank, perm, q=q)
    y = ctx.out(out, perm)
    ctx.op(tfl, [va.idx, vb.idx], [y], options)


def _const_scalar(ctx, name: str) -> float | None:
    if not ctx.is_const(name) or ctx.const(name).size != 1:
        return None
    return float(ctx.const(name).reshape(()))


def _div_int8(ctx, node) -> bool:
    return ctx.is_const(node.input[1])


@register("Add", "Sub", "Mul", int8=True)
def arith(ctx, node) -> None:
    tfl, opts = _BINARY[node.op_type]
    binary(ctx, tfl, opts, node.input[0], node.input[1], node.output[0])


def _int32_binary(ctx, tfl: str, options: str | None, a: str, b: str, out: str) -> None:
    """An integer op LiteRT runs on int32 only (DIV: 'Div only supports FLOAT32, INT32 and quantized ...', an
    internal error on int64 heatmap indices): operands cast to int32, the result cast back (ONNX integer Div
    truncates, as DIV does)."""
    rank = len(ctx.shape(out))
    perm = ctx.first_perm([a, b], rank)
    wide = tensor_type(np.int64)
    narrow = []
    for k, name in enumerate((a, b)):
        v = ctx.broadcast_operand(name, rank, perm)
        t = ctx.tensor(f"{out}/i32_{k}", ctx.w.shape_of(v.idx), np.int32)
        ctx.op("CAST", [v.idx], [t], "CastOptions", inDataType=tensor_type(v.dtype), outDataType=tensor_type(np.int32))
        narrow.append(t)
    y = ctx.out(out, perm)
    mid = ctx.tensor(f"{out}/i32", ctx.w.shape_of(y), np.int32)
    ctx.op(tfl, narrow, [mid], options)
    ctx.op("CAST", [mid], [y], "CastOptions", inDataType=tensor_type(np.int32), outDataType=wide)


@register("Div", int8=_div_int8)
def div(ctx, node) -> None:
    a, b = node.input[0], node.input[1]
    if np.dtype(ctx.dtype(node.output[0])) == np.dtype(np.int64):
        _int32_binary(ctx, "DIV", "DivOptions", a, b, node.output[0])
        return
    if ctx.is_const(b) and np.dtype(ctx.dtype(b)).kind == "f":
        # x / c == x * (1/c): MUL has int8 kernels and is faster; results agree to float rounding
        recip = f"{b}/reciprocal"
        ctx.g.consts[recip] = (1.0 / ctx.const(b).astype(np.float64)).astype(np.float32)
        ctx.g.shapes[recip], ctx.g.dtypes[recip] = ctx.shape(b), ctx.dtype(b)
        binary(ctx, "MUL", "MulOptions", a, recip, node.output[0])
        return
    binary(ctx, "DIV", "DivOptions", a, b, node.output[0])


@register("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod")
def compare(ctx, node) -> None:
    if node.op_type == "Mod" and ctx.attrs(node).get("fmod", 0):
        raise unsupported(node, "fmod=1")
    tfl, opts = _BINARY[node.op_type]
    binary(ctx, tfl, opts, node.input[0], node.input[1], node.output[0])


@register("Max", "Min", int8=True)
def max_min(ctx, node) -> None:
    tfl = _BINARY[node.op_type][0]
    ins = [i for i in node.input if i]
    if len(ins) == 1:
        ctx.alias(node.output[0], ctx.x(ins[0]))
        return
    acc = ins[0]
    for k, nxt in enumerate(ins[1:]):
        last = k == len(ins) - 2
        out = node.output[0] if last else f"{node.output[0]}/partial{k}"
        if not last:
            ctx.g.shapes[out] = tuple(np.broadcast_shapes(ctx.shape(acc), ctx.shape(nxt)))
            ctx.g.dtypes[out] = ctx.dtype(node.output[0])
            if node.output[0] in ctx.g.act_quant:
                ctx.g.act_quant[out] = ctx.g.act_quant[node.output[0]]
        binary(ctx, tfl, None, acc, nxt, out)
        acc = out


@register("Pow")
def power(ctx, node) -> None:
    x, e = node.input[0], node.input[1]
    c = _const_scalar(ctx, e)
    if c == 2.0:
        binary(ctx, "MUL", "MulOptions", x, x, node.output[0])
    elif c == 1.0:
        ctx.alias(node.output[0], ctx.x(x))
    elif c == 0.5:
        unary(ctx, "SQRT", x, node.output[0])
    else:
        base_dt = np.dtype(ctx.dtype(x))
        if np.dtype(ctx.dtype(e)) != base_dt:  # ONNX lets the exponent's type differ; TFLite's POW refuses at load
            if not ctx.is_const(e):
                raise unsupported(node, f"a {np.dtype(ctx.dtype(e))} exponent computed at run time for a {base_dt} base")
            cast = f"{e}/as_{base_dt}"
            ctx.g.consts[cast] = ctx.const(e).astype(base_dt)
            ctx.g.shapes[cast], ctx.g.dtypes[cast] = ctx.shape(e), base_dt
            e = cast
        binary(ctx, "POW", None, x, e, node.output[0])


def unary(ctx, tfl: str, x: str, out: str, options: str | None = None, **fields) -> None:
    v = ctx.x(x)
    y = ctx.out(out, v.perm)
    ctx.op(tfl, [v.idx], [y], options, **fields)


_UNARY = {"Sqrt": "SQRT", "Exp": "EXP", "Log": "LOG", "Floor": "FLOOR", "Ceil": "CEIL", "Sin": "SIN", "Cos": "COS",
          "Not": "LOGICAL_NOT", "Round": "ROUND", "Sign": "SIGN"}


@register(*_UNARY)
def simple_unary(ctx, node) -> None:
    unary(ctx, _UNARY[node.op_type], node.input[0], node.output[0])


@register("Neg", "Abs", int8=True)
def neg_abs(ctx, node) -> None:
    unary(ctx, {"Neg": "NEG", "Abs": "ABS"}[node.op_type], node.input[0], node.output[0])


@register("Atan")
def atan(ctx, node) -> None:
    """TFLite has no ATAN: atan(x) = atan2(x, 1), the ones full-shape (TFLite's ATAN2 does not broadcast)."""
    v = ctx.x(node.input[0], float_=True)
    one = ctx.const_tensor(np.ones(ctx.w.shape_of(v.idx), np.float32), "one")
    y = ctx.out(node.output[0], v.perm)
    ctx.op("ATAN2", [v.idx, one], [y])


@register("Reciprocal")
def reciprocal(ctx, node) -> None:
    v = ctx.x(node.input[0])
    one = ctx.const_tensor(np.ones((1,) * len(ctx.shape(node.input[0])), np.float32), "one")
    y = ctx.out(node.output[0], v.perm)
    ctx.op("DIV", [one, v.idx], [y], "DivOptions")


# Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@register("Erf")
def erf(ctx, node) -> None:
    """TFLite has no ERF: erf(x) = sign(x) * (1 - poly(t) * exp(-x^2)), t = 1 / (1 + p|x|)."""
    v = ctx.x(node.input[0])
    shape = ctx.w.shape_of(v.idx)
    name = node.output[0]

    def t(tag: str) -> int:
        return ctx.tensor(f"{name}/{tag}", shape, np.float32)

    def c(val: float) -> int:
        return ctx.const_tensor(np.asarray([val], np.float32), "c")

    ax, sg, x2, nx2, ex = t("abs"), t("sign"), t("x2"), t("negx2"), t("exp")
    ctx.op("ABS", [v.idx], [ax])
    ctx.op("SIGN", [v.idx], [sg])
    ctx.op("MUL", [v.idx, v.idx], [x2], "MulOptions")
    ctx.op("NEG", [x2], [nx2])
    ctx.op("EXP", [nx2], [ex])
    px, den, tt = t("px"), t("den"), t("t")
    ctx.op("MUL", [ax, c(_ERF_P)], [px], "MulOptions")
    ctx.op("ADD", [px, c(1.0)], [den], "AddOptions")
    ctx.op("DIV", [c(1.0), den], [tt], "DivOptions")
    acc = c(_ERF_A[-1])
    for k, coef in enumerate(reversed(_ERF_A[:-1])):
        m, s = t(f"m{k}"), t(f"s{k}")
        ctx.op("MUL", [acc, tt], [m], "MulOptions")
        ctx.op("ADD", [m, c(coef)], [s], "AddOptions")
        acc = s
    poly, pe, one_minus = t("poly"), t("pe"), t("1m")
    ctx.op("MUL", [acc, tt], [poly], "MulOptions")
    ctx.op("MUL", [poly, ex], [pe], "MulOptions")
    ctx.op("SUB", [c(1.0), pe], [one_minus], "SubOptions")
    y = ctx.out(name, v.perm)
    ctx.op("MUL", [sg, one_minus], [y], "MulOptions")


@register("IsNaN", "IsInf")
def is_nan_inf(ctx, node) -> None:
    """TFLite has neither: IsNaN(x) = x != x; IsInf(x) = |x| == inf (detect_negative/positive: x == -inf / +inf).
    torch's scaled_dot_product_attention with a boolean mask exports Where(IsNaN(softmax), 0, softmax)."""
    v = ctx.x(node.input[0], float_=True)
    shape = ctx.w.shape_of(v.idx)
    if node.op_type == "IsNaN":
        ctx.op("NOT_EQUAL", [v.idx, v.idx], [ctx.out(node.output[0], v.perm)])
        return
    a = ctx.attrs(node)
    neg, pos = bool(a.get("detect_negative", 1)), bool(a.get("detect_positive", 1))
    src = v.idx
    if neg and pos:
        src = ctx.tensor(node.output[0] + "/abs", shape, np.float32)
        ctx.op("ABS", [v.idx], [src])
    target = np.inf if pos else -np.inf if neg else np.nan  # nothing equals NaN: detects nothing
    inf = ctx.const_tensor(np.asarray([target], np.float32), "inf")
    ctx.op("EQUAL", [src, inf], [ctx.out(node.output[0], v.perm)])


@register("Identity", "Dropout", int8=True)
def identity_op(ctx, node) -> None:
    ctx.alias(node.output[0], ctx.x(node.input[0]))


@register("Cast")
def cast(ctx, node) -> None:
    src, dst = ctx.dtype(node.input[0]), ctx.dtype(node.output[0])
    v = ctx.x(node.input[0])
    if np.dtype(v.dtype) == np.dtype(dst) or (src == dst):
        ctx.alias(node.output[0], v)
        return
    y = ctx.out(node.output[0], v.perm)
    ctx.op("CAST", [v.idx], [y], "CastOptions", inDataType=tensor_type(v.dtype), outDataType=tensor_type(dst))


@register("Where")
def where(ctx, node) -> None:
    cond, a, b = node.input
    out = node.output[0]
    rank = len(ctx.shape(out))
    perm = ctx.first_perm([a, b, cond], rank)
    vc, va, vb = (ctx.broadcast_operand(n, rank, perm) for n in (cond, a, b))
    y = ctx.out(out, perm)
    ctx.op("SELECT_V2", [vc.idx, va.idx, vb.idx], [y])


__all__ = ["binary", "unary", "identity"]
