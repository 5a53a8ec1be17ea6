"""Data movement: Reshape/Flatten/Squeeze/Unsqueeze, Transpose, Concat, Split, Slice, Gather, Pad, Resize,
Expand, Tile, DepthToSpace/SpaceToDepth. All keep int8 params (TFLite requires equal in/out params)."""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import Val, channels_last, drop_axes, identity, memory_trivial, permute
from edgekit.backends.tflite.ops import hybrid
from edgekit.backends.tflite.ops.common import sattr, unsupported
from edgekit.backends.tflite.ops.registry import register


def _reshape(ctx, x: str, out: str) -> None:
    v = ctx.x(x)
    if not memory_trivial(ctx.shape(x), v.perm):
        v = ctx.x(x, identity(len(ctx.shape(x))))
    shape = list(ctx.shape(out))
    y = ctx.out(out, identity(len(shape)), q=v.q)
    ctx.op("RESHAPE", [v.idx, ctx.i32(shape)], [y], "ReshapeOptions", newShape=shape)


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze", int8=True)
def reshape(ctx, node) -> None:
    _reshape(ctx, node.input[0], node.output[0])


@register("Transpose", int8=True)
def transpose(ctx, node) -> None:
    """A relabelling: the output is the same bytes seen with a composed layout, no op emitted."""
    x = node.input[0]
    rank = len(ctx.shape(x))
    p = tuple(int(i) for i in ctx.attrs(node).get("perm", list(reversed(range(rank)))))
    v = ctx.x(x)
    out_perm = tuple(p.index(s) for s in v.perm)
    ctx.alias(node.output[0], Val(v.idx, out_perm, v.dtype, v.q))


@register("Concat", int8=True)
def concat(ctx, node) -> None:
    out = node.output[0]
    rank = len(ctx.shape(out))
    axis = int(ctx.attrs(node)["axis"]) % rank
    ins = [i for i in node.input if i and int(np.prod(ctx.shape(i))) > 0]
    perm = ctx.first_perm(ins, rank)
    q = ctx.out_q_of(out)
    vals = [ctx.broadcast_operand(i, rank, perm, q=q) for i in ins]
    if len(vals) == 1:
        ctx.alias(out, vals[0])
        return
    y = ctx.out(out, perm)
    ctx.op("CONCATENATION", [v.idx for v in vals], [y], "ConcatenationOptions", axis=perm.index(axis))


@register("Split", int8=True)
def split(ctx, node) -> None:
    x = node.input[0]
    a = ctx.attrs(node)
    rank = len(ctx.shape(x))
    axis = int(a.get("axis", 0)) % rank
    outs = [o for o in node.output]
    if "split" in a:
        sizes = list(a["split"])
    elif len(node.input) > 1 and node.input[1]:
        sizes = [int(s) for s in ctx.const(node.input[1]).reshape(-1)]
    else:
        sizes = [ctx.shape(o)[axis] for o in outs]
    v = ctx.x(x)
    ys = [ctx.out(o, v.perm, q=v.q) if o else ctx.tensor(f"{x}/unused", permute(ctx.shape(x), v.perm), v.dtype) for o in outs]
    ctx.op("SPLIT_V", [v.idx, ctx.i32(sizes, "sizes"), ctx.const_tensor(np.asarray(v.perm.index(axis), np.int32), "axis")],
           ys, "SplitVOptions", numSplits=len(ys))


@register("Slice", int8=True)
def slice_(ctx, node) -> None:
    x = node.input[0]
    shape = ctx.shape(x)
    rank = len(shape)
    a = ctx.attrs(node)
    if ctx.g.opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        for i in node.input[1:]:
            if i and not ctx.is_const(i):
                raise unsupported(node, "starts/ends/axes/steps must be constant")
        starts = [int(s) for s in ctx.const(node.input[1]).reshape(-1)]
        ends = [int(s) for s in ctx.const(node.input[2]).reshape(-1)]
        axes = [int(s) for s in ctx.const(node.input[3]).reshape(-1)] if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
        steps = [int(s) for s in ctx.const(node.input[4]).reshape(-1)] if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    spec = {ax % rank: (s, e, st) for ax, s, e, st in zip(axes, starts, ends, steps)}
    v = ctx.x(x)
    begin, end, stride, end_mask = [], [], [], 0
    for i, ax in enumerate(v.perm):
        b, e, st = slice(*spec[ax]).indices(shape[ax]) if ax in spec else (0, shape[ax], 1)
        if st < 0 and e < 0:
            end_mask |= 1 << i
            e = 0
        begin.append(b)
        end.append(e)
        stride.append(st)
    y = ctx.out(node.output[0], v.perm, q=v.q)
    if all(s == 1 for s in stride):
        size = [e - b for b, e in zip(begin, end)]
        ctx.op("SLICE", [v.idx, ctx.i32(begin, "begin"), ctx.i32(size, "size")], [y])
    else:
        ctx.op("STRIDED_SLICE", [v.idx, ctx.i32(begin, "begin"), ctx.i32(end, "end"), ctx.i32(stride, "strides")], [y],
               "StridedSliceOptions", endMask=end_mask)


@register("Gather", int8=True)
def gather(ctx, node) -> None:
    data, ind = node.input
    rank = len(ctx.shape(data))
    axis = int(ctx.attrs(node).get("axis", 0)) % rank
    out = node.output[0]
    if hybrid.gather_table(ctx, node):  # an int8 table ("weights" scheme): int8 rows, dequantized
        return
    if ctx.is_const(ind):
        idx = ctx.const(ind).astype(np.int64)
        idx = np.where(idx < 0, idx + ctx.shape(data)[axis], idx).astype(np.int32)
        v = ctx.x(data)
        if idx.ndim > 1:
            v = ctx.x(data, identity(rank))
        perm = drop_axes(v.perm, {axis}) if idx.ndim == 0 else v.perm if idx.ndim == 1 else identity(len(ctx.shape(out)))
        y = ctx.out(out, perm, q=v.q)
        ctx.op("GATHER", [v.idx, ctx.const_tensor(idx, "indices")], [y], "GatherOptions", axis=v.perm.index(axis))
        return
    v = ctx.x(data, identity(rank))
    vi = ctx.x(ind, identity(len(ctx.shape(ind))))
    y = ctx.out(out, identity(len(ctx.shape(out))), q=v.q)
    ctx.op("GATHER", [v.idx, vi.idx], [y], "GatherOptions", axis=axis)


@register("Pad", int8=True)
def pad(ctx, node) -> None:
    x = node.input[0]
    rank = len(ctx.shape(x))
    a = ctx.attrs(node)
    mode = sattr(a, "mode", "constant")
    if ctx.g.opset < 11:
        pads, value = list(a["pads"]), float(a.get("value", 0.0))
    else:
        if not ctx.is_const(node.input[1]):
            raise unsupported(node, "pads must be constant")
        pads = [int(p) for p in ctx.const(node.input[1]).reshape(-1)]
        value = float(ctx.const(node.input[2]).reshape(())) if len(node.input) > 2 and node.input[2] else 0.0
        if len(node.input) > 3 and node.input[3]:
            axes = [int(p) % rank for p in ctx.const(node.input[3]).reshape(-1)]
            full = [0] * (2 * rank)
            for k, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[k], pads[k + len(axes)]
            pads = full
    if any(p < 0 for p in pads):
        raise unsupported(node, "negative pads (cropping)")
    v = ctx.x(x)
    paddings = [[pads[ax], pads[ax + rank]] for ax in v.perm]
    y = ctx.out(node.output[0], v.perm, q=v.q)
    pt = ctx.i32(paddings, "paddings")
    if mode == "constant":
        if value == 0.0:
            ctx.op("PAD", [v.idx, pt], [y])
        else:
            if v.q is not None:
                cval = ctx.const_tensor(ctx.quantize(np.asarray(value, np.float32), v.q), "pad_value", q=v.q)
            else:
                cval = ctx.const_tensor(np.asarray(value, dtype=v.dtype), "pad_value")
            ctx.op("PADV2", [v.idx, pt, cval], [y])
    elif mode == "reflect":
        from ai_edge_litert import schema_py_generated as fb

        ctx.op("MIRROR_PAD", [v.idx, pt], [y], "MirrorPadOptions", mode=fb.MirrorPadMode.REFLECT)
    else:
        raise unsupported(node, f"mode '{mode}' (constant and reflect are supported)")


@register("Resize", "Upsample", int8=True)
def resize(ctx, node) -> None:
    x = node.input[0]
    a = ctx.attrs(node)
    in_shape, out_shape = ctx.shape(x), ctx.shape(node.output[0])
    if len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
        raise unsupported(node, "only spatial resizing of NCHW tensors")
    mode = sattr(a, "mode", "nearest")
    coord = sattr(a, "coordinate_transformation_mode", "half_pixel" if node.op_type == "Resize" and ctx.g.opset >= 11 else "asymmetric")
    nearest_mode = sattr(a, "nearest_mode", "round_prefer_floor")
    pytorch_hp = coord == "pytorch_half_pixel"
    if pytorch_hp:
        coord = "half_pixel"
    if mode == "linear":
        tfl, opts = "RESIZE_BILINEAR", "ResizeBilinearOptions"
        flags = {"half_pixel": (False, True), "align_corners": (True, False), "asymmetric": (False, False)}.get(coord)
    elif mode == "nearest":
        tfl, opts = "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions"
        flags = {("asymmetric", "floor"): (False, False), ("half_pixel", "round_prefer_ceil"): (False, True),
                 ("align_corners", "round_prefer_ceil"): (True, False)}.get((coord, nearest_mode))
        if flags is None and all(o % i == 0 for o, i in zip(out_shape[2:], in_shape[2:])) and coord in ("asymmetric", "half_pixel"):
            # integer upscaling: every nearest rule picks the same source pixel
            flags = (False, False) if coord == "asymmetric" and nearest_mode != "ceil" else None
            if coord == "half_pixel" and nearest_mode in ("round_prefer_floor", "floor", "round_prefer_ceil"):
                flags = (False, True)
    else:
        raise unsupported(node, f"mode '{mode}' (nearest and linear are supported)")
    if flags is None:
        raise unsupported(node, f"mode={mode} coordinate_transformation_mode={coord} nearest_mode={nearest_mode}")
    if int(a.get("antialias", 0)) and any(o < i for o, i in zip(out_shape[2:], in_shape[2:])):
        raise unsupported(node, "antialiased downscaling")
    scales = _given_scales(ctx, node, a)
    if scales is not None and coord != "align_corners":
        for s, i, o in zip(scales[2:], in_shape[2:], out_shape[2:]):
            if not np.isclose(float(s), o / i, rtol=1e-5):  # ONNX maps coordinates with the scale, TFLite with out / in
                raise unsupported(node, f"scale {float(s):g} resizing {i} to {o} pixels (TFLite resizes by {o}/{i}); "
                                  "give the output size instead of a scale factor, or a factor that divides exactly")
    v = ctx.x(x, channels_last(4))
    if pytorch_hp and any(o == 1 < i for o, i in zip(out_shape[2:], in_shape[2:])):
        # pytorch_half_pixel samples coordinate 0 for a size-1 output (half_pixel: the centre): keep row/column 0
        size = [in_shape[0], *(1 if o == 1 else i for o, i in zip(out_shape[2:], in_shape[2:])), in_shape[1]]
        first = ctx.tensor(x + "/first", tuple(size), v.dtype, q=v.q)
        ctx.op("SLICE", [v.idx, ctx.i32([0, 0, 0, 0], "begin"), ctx.i32(size, "size")], [first])
        v = Val(first, v.perm, v.dtype, v.q)
    y = ctx.out(node.output[0], channels_last(4), q=v.q)
    ctx.op(tfl, [v.idx, ctx.i32(list(out_shape[2:]), "size")], [y], opts, alignCorners=flags[0], halfPixelCenters=flags[1])


def _given_scales(ctx, node, a: dict) -> np.ndarray | None:
    """The scale per axis when the node resizes by scale factors (not output sizes); None otherwise."""
    rank = len(ctx.shape(node.input[0]))
    if node.op_type == "Upsample" or ctx.g.opset < 11:
        name = node.input[1] if len(node.input) > 1 else ""
        given = a.get("scales") if not name else ctx.const(name) if ctx.is_const(name) else None
    else:
        sizes = node.input[3] if len(node.input) > 3 else ""
        name = node.input[2] if len(node.input) > 2 else ""
        if sizes or not name or not ctx.is_const(name):
            return None
        given = ctx.const(name)
    if given is None or np.size(given) == 0:
        return None
    given = np.asarray(given, np.float64).reshape(-1)
    full = np.ones(rank)
    axes = [int(ax) % rank for ax in a.get("axes", range(rank))][:given.size]
    full[axes] = given
    return full


@register("Expand", int8=True)
def expand(ctx, node) -> None:
    x, out = node.input[0], node.output[0]
    rank = len(ctx.shape(out))
    perm = ctx.first_perm([x], rank)
    v = ctx.broadcast_operand(x, rank, perm)
    target = list(permute(ctx.shape(out), perm))
    if list(ctx.w.shape_of(v.idx)) == target:
        ctx.alias(out, v)
        return
    y = ctx.out(out, perm, q=v.q)
    ctx.op("BROADCAST_TO", [v.idx, ctx.i32(target)], [y])


@register("Tile", int8=True)
def tile(ctx, node) -> None:
    if not ctx.is_const(node.input[1]):
        raise unsupported(node, "repeats must be constant")
    reps = [int(r) for r in ctx.const(node.input[1]).reshape(-1)]
    v = ctx.x(node.input[0])
    y = ctx.out(node.output[0], v.perm, q=v.q)
    ctx.op("TILE", [v.idx, ctx.i32([reps[p] for p in v.perm], "multiples")], [y])


@register("DepthToSpace", "SpaceToDepth", int8=True)
def depth_to_space(ctx, node) -> None:
    a = ctx.attrs(node)
    v = ctx.x(node.input[0], channels_last(4))
    if node.op_type == "DepthToSpace" and sattr(a, "mode", "DCR") == "CRD":  # torch's PixelShuffle
        # TFLite implements DCR (input channel (i*b + j)*C + c); CRD reads c*b*b + i*b + j: gather those first
        b, c_out = int(a["blocksize"]), ctx.shape(node.output[0])[1]
        order = np.asarray([c * b * b + i * b + j for i in range(b) for j in range(b) for c in range(c_out)], np.int32)
        dcr = ctx.tensor(node.output[0] + "/dcr", permute(ctx.shape(node.input[0]), v.perm), v.dtype, q=v.q)
        ctx.op("GATHER", [v.idx, ctx.const_tensor(order, "crd_order")], [dcr], "GatherOptions", axis=3)
        v = Val(dcr, v.perm, v.dtype, v.q)
    y = ctx.out(node.output[0], channels_last(4), q=v.q)
    tfl, opts = ("DEPTH_TO_SPACE", "DepthToSpaceOptions") if node.op_type == "DepthToSpace" else ("SPACE_TO_DEPTH", "SpaceToDepthOptions")
    ctx.op(tfl, [v.idx], [y], opts, blockSize=int(a["blocksize"]))
