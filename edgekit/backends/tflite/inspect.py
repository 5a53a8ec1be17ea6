"""Read a .tflite file back: op counts, TRANSPOSE count, float ops left in an int8 graph, hybrid ops (float
activations, int8 weights)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ai_edge_litert import schema_py_generated as fb

from edgekit.backends.tflite.versions import model_versions
from edgekit.backends.tflite.writer import op_name, read_metadata, read_model

_BOUNDARY = {"QUANTIZE", "DEQUANTIZE"}
_HYBRID = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"}  # kernels with a dynamic-range path


def describe(path: Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    model = read_model(data)
    sg = model.subgraphs[0]
    codes = [c.builtinCode for c in model.operatorCodes]
    ops = Counter()
    float_ops = Counter()
    hybrid_ops = Counter()
    int8_ops = 0
    for op in sg.operators:
        name = op_name(codes[op.opcodeIndex])
        ops[name] += 1
        if name in _BOUNDARY:
            continue
        tensors = [sg.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
        acts = [t for t in tensors if model.buffers[t.buffer].data is None]
        if any(t.type == fb.TensorType.FLOAT32 for t in acts):
            if name in _HYBRID and any(t.type == fb.TensorType.INT8 for t in tensors if t not in acts):
                hybrid_ops[name] += 1  # int8 weights, activations quantized per run by the kernel
            else:
                float_ops[name] += 1
        elif any(t.type == fb.TensorType.INT8 for t in acts):
            int8_ops += 1
    versions: dict[str, set[int]] = {}
    for name, written, _ in model_versions(model):
        versions.setdefault(name, set()).add(written)
    return {
        "ops": dict(sorted(ops.items())),
        "op_versions": {k: sorted(v) for k, v in sorted(versions.items())},
        "op_count": sum(ops.values()),
        "transposes": ops.get("TRANSPOSE", 0),
        "float_ops": sum(float_ops.values()),
        "float_op_types": dict(sorted(float_ops.items())),
        "int8_ops": int8_ops,
        "hybrid_ops": dict(sorted(hybrid_ops.items())),
        "tensors": len(sg.tensors),
        "size_bytes": len(data),
        "metadata": read_metadata(model),
    }
