"""Activations and softmax. Fixed int8 output params where TFLite requires them."""

from __future__ import annotations

import math

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.ops.common import sattr, unsupported
from edgekit.backends.tflite.ops.elementwise import binary, unary
from edgekit.backends.tflite.ops.registry import register
from edgekit.backends.tflite.writer import Quant

LOGISTIC_Q = Quant(1.0 / 256.0, -128)
SOFTMAX_Q = Quant(1.0 / 256.0, -128)
TANH_Q = Quant(1.0 / 128.0, 0)
LOG_SOFTMAX_Q = Quant(16.0 / 256.0, 127)


FINER = 2.0  # run float when the graph quantizes the output this many times finer than the fixed params


def fits(fixed: Quant):
    """int8 test for an op whose TFLite kernel has fixed output params: the int8 kernel only when the QDQ graph's
    own output step is not much finer. Attention probabilities over 197 tokens peak near 0.05: the graph gives
    them a 0.0002 step, the int8 SOFTMAX a 1/256 one, which rounds most of them to 0 (a ViT's attention output
    fell to cosine 0.99 against the QDQ graph); in float and then quantized, it matches the graph."""
    def test(ctx, node) -> bool:
        target = ctx.g.act_quant.get(node.output[0])
        return target is None or float(np.max(target.scale)) * FINER >= float(np.max(fixed.scale))
    return test


def _fixed(ctx, tfl: str, node, q: Quant, options: str | None = None, **fields) -> None:
    v = ctx.x(node.input[0])
    y = ctx.out(node.output[0], v.perm, q=q if ctx.qmode else None)
    ctx.op(tfl, [v.idx], [y], options, **fields)


@register("Relu", int8=True)
def relu(ctx, node) -> None:
    unary(ctx, "RELU", node.input[0], node.output[0])


@register("Sigmoid", int8=fits(LOGISTIC_Q))
def sigmoid(ctx, node) -> None:
    _fixed(ctx, "LOGISTIC", node, LOGISTIC_Q)


@register("Tanh", int8=fits(TANH_Q))
def tanh(ctx, node) -> None:
    _fixed(ctx, "TANH", node, TANH_Q)


@register("HardSwish", int8=True)
def hard_swish(ctx, node) -> None:
    unary(ctx, "HARD_SWISH", node.input[0], node.output[0])


@register("Gelu", int8=True)
def gelu(ctx, node) -> None:
    approx = sattr(ctx.attrs(node), "approximate", "none") == "tanh"
    unary(ctx, "GELU", node.input[0], node.output[0], "GeluOptions", approximate=approx)


@register("LeakyRelu", int8=True)
def leaky_relu(ctx, node) -> None:
    alpha = float(ctx.attrs(node).get("alpha", 0.01))
    unary(ctx, "LEAKY_RELU", node.input[0], node.output[0], "LeakyReluOptions", alpha=alpha)


@register("Elu")
def elu(ctx, node) -> None:
    if not math.isclose(float(ctx.attrs(node).get("alpha", 1.0)), 1.0):
        raise unsupported(node, "alpha != 1 (TFLite ELU has alpha 1)")
    unary(ctx, "ELU", node.input[0], node.output[0])


@register("PRelu", int8=True)
def prelu(ctx, node) -> None:
    x, slope = node.input
    v = ctx.x(x)
    rank = len(ctx.shape(x))
    s = ctx.broadcast_operand(slope, rank, v.perm)
    y = ctx.out(node.output[0], v.perm)
    ctx.op("PRELU", [v.idx, s.idx], [y])


def _clip_bounds(ctx, node) -> tuple[float | None, float | None]:
    a = ctx.attrs(node)
    if ctx.g.opset < 11:
        return a.get("min"), a.get("max")
    bounds = []
    for k in (1, 2):
        name = node.input[k] if len(node.input) > k else ""
        if not name:
            bounds.append(None)
        elif not ctx.is_const(name):
            raise unsupported(node, "min/max must be constant")
        else:
            bounds.append(float(ctx.const(name).reshape(())))
    return bounds[0], bounds[1]


@register("Clip", int8=True)
def clip(ctx, node) -> None:
    lo, hi = _clip_bounds(ctx, node)
    lo = None if lo is not None and lo <= -3.0e38 else lo
    hi = None if hi is not None and hi >= 3.0e38 else hi
    named = {(0.0, 6.0): "RELU6", (0.0, None): "RELU", (-1.0, 1.0): "RELU_N1_TO_1"}
    dtype = np.dtype(ctx.dtype(node.input[0]))
    integer = dtype.kind in "iu"  # x.clamp(min=1) of a token count: RELU takes no int64, bounds take x's dtype
    if (lo, hi) in named and not integer:
        unary(ctx, named[(lo, hi)], node.input[0], node.output[0])
        return
    if lo is None and hi is None:
        ctx.alias(node.output[0], ctx.x(node.input[0]))
        return
    cur = node.input[0]
    steps = [("MAXIMUM", lo), ("MINIMUM", hi)]
    steps = [(op, b) for op, b in steps if b is not None]
    for k, (op, b) in enumerate(steps):
        bound = f"{node.output[0]}/bound{k}"
        bound_dtype = dtype if integer else np.dtype(np.float32)
        ctx.g.consts[bound] = np.asarray(b).astype(bound_dtype)
        ctx.g.shapes[bound], ctx.g.dtypes[bound] = (), bound_dtype
        out = node.output[0] if k == len(steps) - 1 else f"{node.output[0]}/clip{k}"
        if out != node.output[0]:
            ctx.g.shapes[out], ctx.g.dtypes[out] = ctx.shape(node.output[0]), ctx.dtype(node.output[0])
            if node.output[0] in ctx.g.act_quant:
                ctx.g.act_quant[out] = ctx.g.act_quant[node.output[0]]
        binary(ctx, op, None, cur, bound, out)
        cur = out


def _hard_sigmoid_int8(ctx, node) -> bool:
    return float(ctx.attrs(node).get("alpha", 0.2)) > 0


@register("HardSigmoid", int8=_hard_sigmoid_int8)
def hard_sigmoid(ctx, node) -> None:
    """max(0, min(1, a*x + b)) = relu6(6a*x + 6b) / 6. Between int8 tensors (MobileNetV3's squeeze-excitation
    gates): an exact int8 MUL by a (output scale a*s_x, the input's zero point: the same integers), an int8 ADD of b
    into the output's params, and MAXIMUM/MINIMUM only where those params reach below 0 or above 1 (calibrated
    ranges of a gate are [0, <=1]: saturation already clips; within half a step of 0 and 1 it rounds alike)."""
    a = ctx.attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    v = ctx.x(node.input[0])
    if ctx.qmode:
        _hard_sigmoid_int8_ops(ctx, node, v, alpha, beta)
        return
    shape = ctx.w.shape_of(v.idx)
    t1, t2, t3 = (ctx.tensor(f"{node.output[0]}/{k}", shape, np.float32) for k in ("mul", "add", "relu6"))
    ctx.op("MUL", [v.idx, ctx.const_tensor(np.asarray([6 * alpha], np.float32), "c")], [t1], "MulOptions")
    ctx.op("ADD", [t1, ctx.const_tensor(np.asarray([6 * beta], np.float32), "c")], [t2], "AddOptions")
    ctx.op("RELU6", [t2], [t3])
    y = ctx.out(node.output[0], v.perm)
    ctx.op("MUL", [t3, ctx.const_tensor(np.asarray([1.0 / 6.0], np.float32), "c")], [y], "MulOptions")


def _hard_sigmoid_int8_ops(ctx, node, v, alpha: float, beta: float) -> None:
    shape = ctx.w.shape_of(v.idx)
    name = node.output[0]
    yq = ctx.act_q(name)
    s_y, z_y = float(yq.scale[0]), int(yq.zero_point[0])
    lo, hi = (-128 - z_y) * s_y, (127 - z_y) * s_y
    clamps = [(op, bound) for op, bound, needed in (("MAXIMUM", 0.0, lo < -s_y / 2), ("MINIMUM", 1.0, hi > 1 + s_y / 2)) if needed]
    tq = Quant(alpha * float(v.q.scale[0]), int(v.q.zero_point[0]))
    t = ctx.tensor(f"{name}/scaled", shape, np.int8, q=tq)
    aq = Quant(alpha / 127.0, 0)
    ctx.op("MUL", [v.idx, ctx.const_tensor(np.asarray([127], np.int8), "alpha", q=aq)], [t], "MulOptions")
    bq = ctx._asym_params(np.asarray([beta], np.float32))
    b = ctx.const_tensor(ctx.quantize(np.asarray([beta], np.float32), bq), "beta", q=bq)
    outs = [ctx.tensor(f"{name}/{op.lower()}", shape, np.int8, q=yq) for op, _ in clamps] + [ctx.out(name, v.perm)]
    ctx.op("ADD", [t, b], [outs[0]], "AddOptions")
    for k, (op, bound) in enumerate(clamps):
        c = ctx.const_tensor(ctx.quantize(np.asarray([bound], np.float32), yq), "bound", q=yq)
        ctx.op(op, [outs[k], c], [outs[k + 1]])


@register("Softplus")
def softplus(ctx, node) -> None:
    v = ctx.x(node.input[0])
    shape = ctx.w.shape_of(v.idx)
    e, s = ctx.tensor(node.output[0] + "/exp", shape, np.float32), ctx.tensor(node.output[0] + "/1p", shape, np.float32)
    ctx.op("EXP", [v.idx], [e])
    ctx.op("ADD", [e, ctx.const_tensor(np.asarray([1.0], np.float32), "c")], [s], "AddOptions")
    y = ctx.out(node.output[0], v.perm)
    ctx.op("LOG", [s], [y])


def _softmax(ctx, node, tfl: str, q: Quant, options: str | None, **fields) -> None:
    x = node.input[0]
    shape = ctx.shape(x)
    rank = len(shape)
    default = -1 if ctx.g.opset >= 13 else 1
    axis = int(ctx.attrs(node).get("axis", default)) % rank
    if ctx.g.opset < 13 and axis != rank - 1 and int(np.prod(shape[axis + 1 :])) != 1:
        # old semantics: softmax over the flattened trailing block
        v = ctx.x(x, identity(rank))
        flat = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        f_in = ctx.tensor(x + "/flat", flat, v.dtype, q=v.q)
        ctx.op("RESHAPE", [v.idx, ctx.i32(flat)], [f_in], "ReshapeOptions", newShape=list(flat))
        oq = q if ctx.qmode else None
        f_out = ctx.tensor(node.output[0] + "/flat", flat, v.dtype, q=oq)
        ctx.op(tfl, [f_in], [f_out], options, **fields)
        y = ctx.out(node.output[0], identity(rank), q=oq)
        ctx.op("RESHAPE", [f_out, ctx.i32(shape)], [y], "ReshapeOptions", newShape=list(shape))
        return
    cur = ctx.primary[x][0] if x in ctx.primary else identity(rank)
    perm = cur if cur[-1] == axis else tuple(p for p in cur if p != axis) + (axis,)
    v = ctx.x(x, perm)
    y = ctx.out(node.output[0], perm, q=q if ctx.qmode else None)
    ctx.op(tfl, [v.idx], [y], options, **fields)


@register("Softmax", int8=fits(SOFTMAX_Q))
def softmax(ctx, node) -> None:
    _softmax(ctx, node, "SOFTMAX", SOFTMAX_Q, "SoftmaxOptions", beta=1.0)


@register("LogSoftmax", int8=fits(LOG_SOFTMAX_Q))
def log_softmax(ctx, node) -> None:
    _softmax(ctx, node, "LOG_SOFTMAX", LOG_SOFTMAX_Q, None)
