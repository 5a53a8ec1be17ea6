"""Which operators get int8, chosen from the graph's structure (a target may pin `op_types`).

Measured on minilm (ONNX Runtime, 1 thread, a 15-token sentence, 60 held-out sentences, mse ranges):
  fp32                                       7.88 ms
  MatMul/Gemm only (TRANSFORMER_OPS)         1.37 ms, cosine with fp32 0.947, 108 int8 nodes
  + Add/Mul/Reshape/Transpose... (CNN_OPS)    1.29 ms, cosine 0.854, 230 int8 nodes
  + LayerNorm/Softmax/Gather/Erf/Div/...      1.34 ms, cosine 0.851, 242 int8 nodes
The weight matmuls carry the speed-up; quantizing the residual stream, attention scores and norms
buys no time and costs accuracy (outliers), so they stay float.
So a graph that looks like a transformer (Softmax, LayerNormalization or an Erf-based GELU next to
MatMuls) gets TRANSFORMER_OPS; convolutional graphs get CNN_OPS (every op with a fused int8 kernel,
so the activations stay int8 between convolutions). A target whose runtime also runs HardSwish, PRelu, Softmax,
ReduceMean, DepthToSpace/SpaceToDepth or GatherElements int8 adds them ([quantization] cnn_extra_op_types: tflite
and arm, measured there); ONNX Runtime runs them float between Q/DQ and OpenVINO gains nothing, so CNN_OPS leaves them out.
"""

from __future__ import annotations

from typing import Any

CNN_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "LeakyRelu", "Sigmoid",
           "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Resize", "Reshape", "Flatten",
           "Squeeze", "Unsqueeze", "Transpose", "Split", "Pad", "Slice")
TRANSFORMER_OPS = ("MatMul", "Gemm", "Conv")
TRANSFORMER_MARKERS = ("Softmax", "LayerNormalization", "Erf", "Gelu", "FastGelu", "SkipLayerNormalization")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


RECURRENT_OPS = ("LSTM",)  # ONNX Runtime quantizes them at run time only (DynamicQuantizeLSTM)


def is_transformer(model: Any) -> bool:
    """A graph whose activations a target quantizes at run time when its scheme says so (transformer_activations):
    a transformer, or a recurrent graph (LSTM: static QDQ leaves its weights, the bulk of the model, float; ONNX
    Runtime's dynamic LSTM is 4x smaller and 1.5x faster at cosine 0.99999, dynamic.py)."""
    ops = [n.op_type for n in model.graph.node]
    kinds = set(ops)
    if any(r in kinds for r in RECURRENT_OPS):
        return True
    if "MatMul" in kinds and any(m in kinds for m in TRANSFORMER_MARKERS):
        return True
    # torch's dynamo exporter (a .pt2 source) writes a Linear on a 4-D / flattened input as Reshape -> Gemm ->
    # Reshape: a ConvNeXt from .pt2 was taken for a plain CNN (every Add/Mul/Transpose int8) and its arm int8
    # error was 5x the same model's from its factory (max 0.049 vs 0.0097). Several Gemms next to a norm or GELU
    # are the same blocks; a CNN's single Gemm classifier before a Softmax is not.
    return ops.count("Gemm") >= 2 and any(m in kinds for m in TRANSFORMER_MARKERS if m != "Softmax")


def op_types_for(model: Any, pinned: tuple[str, ...] | None = None,
                 cnn_extra: tuple[str, ...] = (), cnn_float: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """(op types to quantize, which policy chose them). `cnn_extra`: a target's ops added to CNN_OPS for
    convolutional graphs (its [quantization] cnn_extra_op_types: ops its runtime runs int8, see CNN_INT8_KERNEL_OPS);
    `cnn_float`: ops left out of them (cnn_float_op_types: ops its runtime has no int8 kernel for)."""
    if pinned:
        return list(pinned), "target"
    if is_transformer(model):
        return list(TRANSFORMER_OPS), "transformer"
    return [o for o in list(CNN_OPS) + [o for o in cnn_extra if o not in CNN_OPS] if o not in cnn_float], "cnn"
