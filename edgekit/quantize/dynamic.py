"""Dynamic int8 for transformer graphs: int8 per-channel weights, activations quantized at run time.

A target's scheme picks it with `transformer_activations = "dynamic"` (ONNX Runtime, ORT mobile); it applies
to graphs `ops.is_transformer` recognises, CNNs keep the static QDQ scheme. The engine is onnxruntime's
`quantize_dynamic`: each MatMul/Gemm with a constant weight becomes DynamicQuantizeLinear (uint8 range of
that very input, taken per run) + MatMulInteger (int8 per-channel weights); activation x activation
MatMuls (attention scores) stay float; Gather on a constant table (token embeddings) reads int8 rows.

Why: a static per-tensor range has to cover the outliers of every input a layer will ever see, and the
transformer FFN's second matmul reads GELU outputs with a long tail. Measured on minilm (100 held-out
sentences, ONNX Runtime 1.32, 1 thread, 15 tokens):
  static QDQ (MatMul/Gemm)           cosine 0.948 (worst 0.921)   1.10 ms   size 0.65x
  dynamic (MatMul/Gemm + Gather)     cosine 0.994 (worst 0.988)   0.91 ms   size 0.26x
  fp32                                                            4.11 ms
Keeping the six FFN output matmuls float in the static graph reached only 0.97. OpenVINO runs such a graph
in f32 (6 ms); its scheme says "weights" instead: int8 weights alone, its CPU plugin quantizes the
activations per run (weights_only.py; minilm cosine 0.9994).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgekit.data import SampleSet
from edgekit.quantize.ops import RECURRENT_OPS
from edgekit.quantize.weights_only import OPS as WEIGHT_OPS

OPS = WEIGHT_OPS + RECURRENT_OPS  # "weights" mode: WEIGHT_OPS alone (recurrent weights stay float there)

__all__ = ["NAMES", "OPS", "per_layer", "quantized_nodes", "write"]
NAMES = {"dynamic": "dynamic uint8 activations (range per run), int8 per-channel weights",
         "weights": "int8 per-channel weights, activations quantized by the runtime per run"}


def write(prepared: Path, out_path: Path, exclude: Iterable[str] = (), mode: str = "dynamic") -> None:
    """Quantize `prepared` (an fp32 .onnx) into `out_path`: nodes named in `exclude` stay float. mode "dynamic":
    quantize ops in the graph (ONNX Runtime); "weights": int8 weights alone, the runtime quantizes activations
    (weights_only.py, OpenVINO)."""
    if mode == "weights":
        from edgekit.quantize import weights_only

        weights_only.write(prepared, out_path, exclude)
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # ORT logs a pre-processing suggestion on every call
        quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(OPS), nodes_to_exclude=list(exclude),
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


def quantized_nodes(fp32: Any, quantized: Any) -> set[str]:
    """Nodes of `fp32` (MatMul/Gemm/Gather) that the dynamic model `quantized` no longer holds as they were:
    the quantizer replaced them (MatMulInteger, int8 table) and kept the names of their outputs."""
    kept = {(n.name, n.op_type, tuple(n.input)) for n in quantized.graph.node}
    return {n.name for n in fp32.graph.node
            if n.op_type in OPS and (n.name, n.op_type, tuple(n.input)) not in kept}


def per_layer(fp32: Any, quantized: Any, samples: SampleSet, nodes: set[str]) -> list[dict[str, Any]]:
    """One row per quantized node (fp32 graph order), as sensitivity.per_layer: the output's SQNR against fp32
    and the relative noise the node adds over its (float) input's. The output keeps its tensor name in the
    dynamic graph, so both graphs are read at the same names."""
    from edgekit.quantize.sensitivity import plan_rows

    graph_inputs = {i.name for i in fp32.graph.input}
    tensors = {o for n in quantized.graph.node for o in n.output} | graph_inputs
    inits = {t.name for t in fp32.graph.initializer}
    plan = []
    for node in fp32.graph.node:
        if node.name in nodes and node.output and node.output[0] in tensors:
            ins = [(i, i) for i in node.input[:2] if i not in inits and i in tensors]
            plan.append((node, (node.output[0], node.output[0]), ins))
    return plan_rows(fp32, quantized, samples, plan)
