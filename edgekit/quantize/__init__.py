"""Post-training static int8 quantization: calibrated ranges -> QDQ ONNX (the hub every backend lowers).

Public API:
  quantize_model(fp32_onnx, out_path, target, calib, *, method=None, held_out=None, task="classification",
                 max_drop=None, eval_set=None, seed=0) -> report dict
  scheme_for(target, method=None) -> Scheme;  METHODS (minmax, percentile, entropy, mse)
Modules: scheme (per-target scheme), equalize (cross-layer equalization), collect (streaming statistics),
methods (ranges), ops (which ops), qdq (QDQ writer, ORT engine, compact), sensitivity (per-layer error), control (accuracy budget), static (the stage).
"""

from __future__ import annotations

from edgekit.quantize.scheme import METHODS, Scheme, scheme_for
from edgekit.quantize.static import quantize_model

__all__ = ["METHODS", "Scheme", "quantize_model", "scheme_for"]
