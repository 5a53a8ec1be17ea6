"""Helpers shared by op lowerings: padding arithmetic, errors, attribute decoding."""

from __future__ import annotations

import math

import numpy as np
import onnx

from edgekit.errors import UnsupportedModelError

OTHER_TARGETS = "-t onnxruntime or -t openvino run this model (every ONNX op), or change it in the source model"


def unsupported(node: onnx.NodeProto, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{node.op_type} node '{node.name or node.output[0]}': {why}",
                                 hint=f"no TFLite lowering in edgekit; {OTHER_TARGETS}")


def sattr(a: dict, key: str, default: str) -> str:
    v = a.get(key, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def explicit_pads(
    node: onnx.NodeProto, a: dict, in_sp: list[int], kernel: list[int], strides: list[int], dil: list[int]
) -> list[tuple[int, int]]:
    """Per spatial axis (begin, end) padding, resolving auto_pad."""
    n = len(in_sp)
    auto = sattr(a, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = list(a.get("pads", [0] * (2 * n)))
        return [(int(p[i]), int(p[i + n])) for i in range(n)]
    if auto == "VALID":
        return [(0, 0)] * n
    out = []
    for i in range(n):
        total = max((math.ceil(in_sp[i] / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - in_sp[i], 0)
        small = total // 2
        out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return out


def tf_padding(pads: list[tuple[int, int]], in_sp: list[int], kernel: list[int], strides: list[int], dil: list[int]) -> str | None:
    """'VALID' or 'SAME' when TFLite's own padding equals `pads`, else None (an explicit PAD is needed)."""
    if all(b == 0 and e == 0 for b, e in pads):
        return "VALID"
    for i, (b, e) in enumerate(pads):
        total = max((math.ceil(in_sp[i] / strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - in_sp[i], 0)
        if (b, e) != (total // 2, total - total // 2):
            return None
    return "SAME"


def pad_nhwc(ctx, x, pads: list[tuple[int, int]], name: str, value: float | None = None):
    """Emit PAD/PADV2 on a channels-last value x (Val); returns (idx, stored shape)."""
    from edgekit.backends.tflite.context import Val

    shape = list(ctx.w.shape_of(x.idx))
    paddings = [[0, 0]] + [[b, e] for b, e in pads] + [[0, 0]]
    out_shape = [s + p[0] + p[1] for s, p in zip(shape, paddings)]
    idx = ctx.tensor(name + "/pad", tuple(out_shape), x.dtype, q=x.q)
    if value is None or value == 0.0:
        ctx.op("PAD", [x.idx, ctx.i32(paddings, "paddings")], [idx])
    else:
        if x.q is not None:  # clamp to the representable range first (-3e38 "minus infinity" -> -128)
            s, z = float(x.q.scale[0]), int(x.q.zero_point[0])
            value = float(np.clip(value, (-128 - z) * s, (127 - z) * s))
            cv = np.asarray(ctx.quantize(np.asarray([value], np.float32), x.q)[0], dtype=np.int8).reshape(())
            c = ctx.const_tensor(cv, "pad_value", q=x.q)
        else:
            c = ctx.const_tensor(np.asarray(value, dtype=np.float32), "pad_value")
        ctx.op("PADV2", [x.idx, ctx.i32(paddings, "paddings"), c], [idx])
    return Val(idx, x.perm, x.dtype, x.q), tuple(out_shape)
