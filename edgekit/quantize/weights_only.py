"""int8 weights alone: a DequantizeLinear on each constant MatMul/Gemm weight (per output channel, symmetric)
and Gather table (per row), activations left float for the runtime to quantize per run.

OpenVINO's CPU plugin runs a FullyConnected with compressed int8 weights as an i8 kernel, quantizing its
input on the fly (runtimePrecision i8). Measured on minilm (100 held-out sentences, 1 thread, OpenVINO
2026.4): static QDQ cosine 0.948, 1.43 ms; int8 weights alone cosine 0.9994, 1.14 ms; fp32 1.75 ms.
The TFLite backend lowers the same graph to hybrid FULLY_CONNECTED (int8 weights, inputs quantized per run
by XNNPACK; backends/tflite/ops/hybrid.py): minilm at 32 tokens cosine 0.956 -> 0.9989, 1.9 -> 1.1 ms.
Written here because onnxruntime's quantizers have no int8 weight-only QDQ mode (MatMulNBits is 4-bit and
ONNX Runtime-only).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

OPS = ("MatMul", "Gemm", "Gather")


def _slot(node) -> tuple[int, int] | None:
    """(input index of the constant operand, its output-channel axis) of a quantizable node."""
    if node.op_type == "MatMul":
        return 1, 1  # B is (K, N)
    if node.op_type == "Gemm":
        trans = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 1, 0 if trans else 1
    if node.op_type == "Gather":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        return (0, 0) if axis == 0 else None  # rows of an embedding table
    return None


def write(prepared: Path, out_path: Path, exclude: Iterable[str] = ()) -> None:
    """Give every MatMul/Gemm/Gather of `prepared` not named in `exclude` int8 weights; write `out_path`."""
    import onnx
    from onnx import numpy_helper

    from edgekit.quantize.qdq import set_nodes

    model = onnx.load(str(prepared))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    skip = set(exclude)
    made: dict[tuple[str, int], str] = {}
    dq_nodes, new_inits = [], []
    for node in graph.node:
        slot = _slot(node) if node.op_type in OPS and node.name not in skip else None
        if slot is None or node.input[slot[0]] not in inits:
            continue
        idx, axis = slot
        name = node.input[idx]
        if (name, axis) not in made:
            w = numpy_helper.to_array(inits[name])
            if w.dtype != np.float32 or w.ndim != 2:
                continue
            scale = np.abs(w).max(axis=1 - axis) / 127.0
            scale[scale == 0] = 1.0
            shape = (-1, 1) if axis == 0 else (1, -1)
            q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            base = f"{name}_w8_{axis}"
            new_inits += [numpy_helper.from_array(q, f"{base}_q"),
                          numpy_helper.from_array(scale.astype(np.float32), f"{base}_scale"),
                          numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_zp")]
            dq_nodes.append(onnx.helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zp"],
                                                  [base], name=f"{base}_dq", axis=axis))
            made[(name, axis)] = base
        node.input[idx] = made[(name, axis)]
    graph.initializer.extend(new_inits)
    set_nodes(graph, dq_nodes + list(graph.node))  # the DQ nodes read initializers only: first is topological
    onnx.save(model, str(out_path))
