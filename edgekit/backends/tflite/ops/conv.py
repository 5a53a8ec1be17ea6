"""Conv (plain, grouped, depthwise, dilated, 1-D/2-D, any padding) and ConvTranspose."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import Val, channels_last, permute
from edgekit.backends.tflite.ops.common import explicit_pads, pad_nhwc, sattr, tf_padding, unsupported
from edgekit.backends.tflite.ops.registry import register


def as_2d(ctx, node, x: Val, rank: int) -> Val:
    """A 1-D conv or pooling input (N, L, C) viewed as (N, 1, L, C)."""
    if rank == 4:
        return x
    n, length, c = ctx.w.shape_of(x.idx)
    idx = ctx.tensor(node.input[0] + "/2d", (n, 1, length, c), x.dtype, q=x.q)
    ctx.op("RESHAPE", [x.idx, ctx.i32([n, 1, length, c])], [idx], "ReshapeOptions", newShape=[n, 1, length, c])
    return Val(idx, x.perm, x.dtype, x.q)


def _geometry(ctx, node, w_shape: tuple[int, ...], in_sp: list[int]):
    a = ctx.attrs(node)
    nsp = len(w_shape) - 2
    kernel = list(a.get("kernel_shape", w_shape[2:]))
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    pads = explicit_pads(node, a, in_sp, kernel, strides, dil)
    if nsp == 1:
        kernel, strides, dil, pads, in_sp = [1] + kernel, [1] + strides, [1] + dil, [(0, 0)] + pads, [1] + in_sp
    return a, kernel, strides, dil, pads, in_sp


@register("Conv", int8=True)
def conv(ctx, node) -> None:
    xname, wname = node.input[0], node.input[1]
    if not ctx.is_const(wname):
        raise unsupported(node, "weights must be constant")
    w = ctx.const(wname).astype(np.float32)
    rank = w.ndim
    if rank not in (3, 4):
        raise unsupported(node, f"{rank - 2}-D convolution (only 1-D and 2-D)")
    x = as_2d(ctx, node, ctx.x(xname, channels_last(rank)), rank)
    in_shape = ctx.w.shape_of(x.idx)
    a, kernel, strides, dil, pads, in_sp = _geometry(ctx, node, w.shape, list(ctx.shape(xname)[2:]))
    w4 = w if rank == 4 else w[:, :, None, :]
    m, cg = w4.shape[:2]
    group = int(a.get("group", 1))
    bias = ctx.const(node.input[2]).astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros(m, np.float32)
    if len(node.input) > 2 and node.input[2] and not ctx.is_const(node.input[2]):
        raise unsupported(node, "bias must be constant")
    padding = tf_padding(pads, in_sp, kernel, strides, dil)
    if padding is None:
        x, in_shape = pad_nhwc(ctx, x, pads, xname)
        padding = "VALID"
    out_name = node.output[0]
    onnx_out = ctx.shape(out_name)
    out4 = (onnx_out[0], *(onnx_out[2:] if rank == 4 else (1, onnx_out[2])), m)
    if rank == 4:
        y = ctx.out(out_name, channels_last(4))
    else:
        y = ctx.tensor(out_name + "/2d", out4, np.int8 if ctx.wants_int8(out_name) else np.float32, q=ctx.out_q_of(out_name))
    out_q = ctx.out_q_of(out_name)
    opts = dict(padding=getattr(_pad_enum(), padding), strideH=strides[0], strideW=strides[1],
                dilationHFactor=dil[0], dilationWFactor=dil[1])
    c_in = in_shape[3]
    if group == 1:
        _conv2d(ctx, wname, x, w4, bias, opts, y)
    elif group == c_in and cg == 1:
        wt = np.transpose(w4, (1, 2, 3, 0))
        wi, wq = ctx.weight(wname, wt, (1, 2, 3, 0), 3)
        bi = ctx.bias(wname + "/bias", bias, x.q, wq)
        ctx.op("DEPTHWISE_CONV_2D", [x.idx, wi, bi], [y], "DepthwiseConv2DOptions", depthMultiplier=m // c_in, **opts)
    elif ctx.options.get("grouped_conv") == "native":
        # one CONV_2D whose filter holds C/group input channels: TFLite infers the groups. XNNPACK runs it as one
        # grouped convolution (RegNet-style 3 blocks, 256 channels in groups of 8, 14x14, 1 thread: fp32 0.70 ->
        # 0.58 ms, int8 0.55 -> 0.30 ms); LiteRT's builtin kernels run it by a slow reference path (fp32 2.6 ->
        # 5.4 ms), so a target without XNNPACK keeps one convolution per group
        _conv2d(ctx, wname, x, w4, bias, opts, y)
    else:
        mg = m // group
        parts = []
        for gi in range(group):
            parts.append(ctx.tensor(f"{xname}/group{gi}", (*in_shape[:3], cg), x.dtype, q=x.q))
        ctx.op("SPLIT", [ctx.const_tensor(np.asarray(3, np.int32), "axis"), x.idx], parts, "SplitOptions", numSplits=group)
        outs = []
        for gi in range(group):
            xo = Val(parts[gi], x.perm, x.dtype, x.q)
            yo = ctx.tensor(f"{out_name}/group{gi}", (*out4[:3], mg), np.int8 if out_q else np.float32, q=out_q)
            sl = slice(gi * mg, (gi + 1) * mg)
            _conv2d(ctx, wname, xo, w4[sl], bias[sl], opts, yo, channels=sl)
            outs.append(yo)
        ctx.op("CONCATENATION", outs, [y], "ConcatenationOptions", axis=3)
    if rank == 3:
        final = ctx.out(out_name, channels_last(3))
        shp = list(permute(onnx_out, channels_last(3)))
        ctx.op("RESHAPE", [y, ctx.i32(shp)], [final], "ReshapeOptions", newShape=shp)


def _pad_enum():
    from ai_edge_litert import schema_py_generated as fb

    return fb.Padding


def _conv2d(ctx, wname: str, x: Val, w4: np.ndarray, bias: np.ndarray, opts: dict, y: int, channels=None) -> None:
    wt = np.transpose(w4, (0, 2, 3, 1))
    wi, wq = ctx.weight(wname, wt, (0, 2, 3, 1), 0, channels=channels)
    bi = ctx.bias(wname + "/bias", bias, x.q, wq)
    ctx.op("CONV_2D", [x.idx, wi, bi], [y], "Conv2DOptions", **opts)


@register("ConvTranspose", int8=True)
def conv_transpose(ctx, node) -> None:
    """TRANSPOSE_CONV over the full (N, (in-1)*stride + k) output, then a SLICE for pads / output_padding; 1-D runs
    as 2-D on (N, 1, L, C); groups split the channels, one TRANSPOSE_CONV per group, concatenated."""
    xname, wname = node.input[0], node.input[1]
    if not ctx.is_const(wname):
        raise unsupported(node, "weights must be constant")
    w = ctx.const(wname).astype(np.float32)
    rank = w.ndim
    if rank not in (3, 4):
        raise unsupported(node, f"{rank - 2}-D transposed convolution (only 1-D and 2-D)")
    a = ctx.attrs(node)
    nsp = rank - 2
    if any(d != 1 for d in a.get("dilations", [1] * nsp)):
        raise unsupported(node, "dilated transposed convolution")
    def lift(v, pad: int = 1) -> list[int]:  # 1-D: a height-1 2-D transposed convolution
        return [pad, *v] if nsp == 1 else list(v)

    w4 = w if rank == 4 else w[:, :, None, :]
    kernel = lift(a.get("kernel_shape", w.shape[2:]))
    strides = lift(a.get("strides", [1] * nsp))
    x = as_2d(ctx, node, ctx.x(xname, channels_last(rank)), rank)
    n, h, wd, c_in = ctx.w.shape_of(x.idx)
    group = int(a.get("group", 1))
    mg = w4.shape[1]
    m = mg * group
    onnx_out = ctx.shape(node.output[0])
    out_sp = lift(onnx_out[2:])
    full = [(s - 1) * st + k for s, st, k in zip((h, wd), strides, kernel)]
    opad = lift(a.get("output_padding", [0] * nsp), 0)
    auto = sattr(a, "auto_pad", "NOTSET")
    if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):
        begins = []
        for i in range(2):
            total = full[i] + opad[i] - out_sp[i]
            begins.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
    else:
        begins = lift(list(a.get("pads", [0] * 2 * nsp))[:nsp], 0)
    bias = ctx.const(node.input[2]).astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros(m, np.float32)
    out_q = ctx.out_q_of(node.output[0])
    dt = np.int8 if out_q else np.float32
    crop = begins != [0, 0] or out_sp != full
    fits = all(b >= 0 and b + o <= f for b, o, f in zip(begins, out_sp, full))
    if not fits:
        raise unsupported(node, "output_padding beyond the kernel's reach")
    out4 = (n, *out_sp, m)
    direct = not crop and rank == 4
    y = ctx.out(node.output[0], channels_last(4)) if direct else ctx.tensor(node.output[0] + "/full", (n, *full, m), dt, q=out_q)
    if group == 1:
        parts = [x.idx]
    else:
        parts = [ctx.tensor(f"{xname}/group{gi}", (n, h, wd, c_in // group), x.dtype, q=x.q) for gi in range(group)]
        ctx.op("SPLIT", [ctx.const_tensor(np.asarray(3, np.int32), "axis"), x.idx], parts, "SplitOptions", numSplits=group)
    outs = []
    cg = c_in // group
    for gi, part in enumerate(parts):
        wg = w4[gi * cg:(gi + 1) * cg]
        wi, wq = ctx.weight(wname, np.transpose(wg, (1, 2, 3, 0)), (1, 2, 3, 0), 0)
        bi = ctx.bias(f"{wname}/bias{gi}", bias[gi * mg:(gi + 1) * mg], x.q, wq)
        yo = y if group == 1 else ctx.tensor(f"{node.output[0]}/group{gi}", (n, *full, mg), dt, q=out_q)
        ctx.op("TRANSPOSE_CONV", [ctx.i32([n, *full, mg]), wi, part, bi], [yo], "TransposeConvOptions",
               padding=_pad_enum().VALID, strideH=strides[0], strideW=strides[1])
        outs.append(yo)
    if group > 1:
        ctx.op("CONCATENATION", outs, [y], "ConcatenationOptions", axis=3)
    if crop:
        cropped = ctx.out(node.output[0], channels_last(4)) if rank == 4 else ctx.tensor(node.output[0] + "/2d", out4, dt, q=out_q)
        ctx.op("SLICE", [y, ctx.i32([0, *begins, 0], "begin"), ctx.i32(list(out4), "size")], [cropped])
        y = cropped
    if rank == 3:
        shp = [n, out_sp[1], m]
        ctx.op("RESHAPE", [y, ctx.i32(shp)], [ctx.out(node.output[0], channels_last(3))], "ReshapeOptions", newShape=shp)
