"""LRN (AlexNet/GoogLeNet-era zoo models) -> TFLite LOCAL_RESPONSE_NORMALIZATION over channels-last channels.

ONNX: y = x / (bias + alpha / size * sum of x^2 over the `size` channels around c)^beta.
TFLite: y = x / (bias + alpha * sum over [c - radius, c + radius])^beta, so radius = (size - 1) / 2 (odd sizes:
an even window is not centred, and ONNX Runtime refuses it too) and alpha is divided by size.
"""

from __future__ import annotations

from edgekit.backends.tflite.context import channels_last
from edgekit.backends.tflite.ops.common import unsupported
from edgekit.backends.tflite.ops.registry import register


@register("LRN")
def lrn(ctx, node) -> None:
    a = ctx.attrs(node)
    size = int(a["size"])
    if size % 2 == 0:
        raise unsupported(node, f"even size {size} (the window is not centred)")
    if ctx.rank(node.input[0]) != 4:
        raise unsupported(node, f"rank-{ctx.rank(node.input[0])} input (TFLite's kernel is 4-D)")
    v = ctx.x(node.input[0], channels_last(4), float_=True)
    y = ctx.out(node.output[0], channels_last(4))
    ctx.op("LOCAL_RESPONSE_NORMALIZATION", [v.idx], [y], "LocalResponseNormalizationOptions", radius=(size - 1) // 2,
           bias=float(a.get("bias", 1.0)), alpha=float(a.get("alpha", 1e-4)) / size, beta=float(a.get("beta", 0.75)))
