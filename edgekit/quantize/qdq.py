"""Write the QDQ graph from calibrated ranges, with ONNX Runtime's QDQ quantizer as the engine.

Ranges are computed once (collect.py + methods.py) and handed to `onnxruntime.quantization.quantize_static`
as a calibration cache, so re-quantizing with other layers kept in float (accuracy control) costs no
new calibration pass.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.quantize.scheme import Scheme


def prepare(model: Any) -> Any:
    """Name every node (nodes_to_exclude needs names) and stamp shapes/types on every tensor."""
    import onnx

    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is best effort; ORT infers what it needs
        pass
    return model


def _cache(ranges: dict[str, tuple[float, float]], path: Path) -> None:
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        save_tensors_data,
    )

    data = {name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
            for name, (lo, hi) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def write_qdq(prepared: Path, out_path: Path, ranges: dict[str, tuple[float, float]], scheme: Scheme,
              op_types: list[str], exclude: Iterable[str] = (), keep_activations: bool = False) -> None:
    """Quantize `prepared` (an fp32 .onnx) into `out_path` with the given activation ranges.

    keep_activations keeps Relu/Clip nodes that int8 ranges make redundant (for per-layer analysis,
    where each fp32 tensor name must keep its meaning); artifacts drop them.
    """
    from onnxruntime.quantization import QuantFormat, quantize_static

    act, weight = scheme.ort_types()
    extra = {
        "ActivationSymmetric": scheme.activation_symmetric,
        "WeightSymmetric": scheme.weight_symmetric,
        "QDQKeepRemovableActivations": keep_activations,
    }
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(prefix="edgekit-qdq-") as tmp:
        cache = Path(tmp) / "ranges.json"
        _cache(ranges, cache)
        try:
            root.setLevel(logging.ERROR)  # ORT logs a pre-processing suggestion on every call
            quantize_static(str(prepared), str(out_path), calibration_data_reader=None,
                            calibration_cache_path=str(cache), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types, per_channel=scheme.per_channel,
                            activation_type=act, weight_type=weight, nodes_to_exclude=list(exclude),
                            extra_options=extra)
        finally:
            root.setLevel(level)


def quantized_nodes(qdq_model: Any) -> set[str]:
    """Names of nodes that read at least one DequantizeLinear output (they run in int8 after fusion)."""
    dq_out = {o for n in qdq_model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in qdq_model.graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_out for i in n.input)}

