"""Which operators get int8, chosen from the graph's structure (a target may pin `op_types`).

Measured (benchmarks/quantize.py, minilm on ONNX Runtime, 1 thread, seq 16-40):
  - quantizing every op ORT can quantize (LayerNormalization, Gather, Softmax inputs, Add, Mul ...)
    costs accuracy (residual stream and attention scores have outliers) and adds Q/DQ hops that
    ORT does not fuse, so it is slower than MatMul-only;
  - MatMul/Gemm only: the weight matmuls (90%+ of the MACs) run as int8 MatMulIntegerToFloat while
    LayerNorm / Softmax / GELU (Erf) / residual Adds stay float.
So a graph that looks like a transformer (Softmax, LayerNormalization or an Erf-based GELU next to
MatMuls) gets TRANSFORMER_OPS; convolutional graphs get CNN_OPS (every op with a fused int8 kernel,
so the activations stay int8 between convolutions).
"""

from __future__ import annotations

from typing import Any

CNN_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid",
           "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Resize", "Reshape", "Flatten",
           "Squeeze", "Unsqueeze", "Transpose", "Split", "Pad", "Slice")
TRANSFORMER_OPS = ("MatMul", "Gemm", "Conv")
TRANSFORMER_MARKERS = ("Softmax", "LayerNormalization", "Erf", "Gelu", "FastGelu", "SkipLayerNormalization")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def is_transformer(model: Any) -> bool:
    ops = {n.op_type for n in model.graph.node}
    return "MatMul" in ops and any(m in ops for m in TRANSFORMER_MARKERS)


def op_types_for(model: Any, pinned: tuple[str, ...] | None = None) -> tuple[list[str], str]:
    """(op types to quantize, which policy chose them)."""
    if pinned:
        return list(pinned), "target"
    if is_transformer(model):
        return list(TRANSFORMER_OPS), "transformer"
    return list(CNN_OPS), "cnn"
