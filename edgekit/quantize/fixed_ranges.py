"""Exact ranges for op outputs whose bounds the op itself fixes, instead of calibrated ones.

A Sigmoid writes (0, 1) whatever its input. Calibrated, its output range is what the samples reached, trimmed by
the method (mse): a squeeze-excitation gate got [0, 0.983] (step 0.003855), so every gate above 0.983 was clipped,
and TFLite's int8 LOGISTIC, whose output params are fixed at scale 1/256, zero point -128 (uint8: zero point 0),
needed a QUANTIZE after each gate to reach the graph's step, a second rounding. With [0, 255/256] the QDQ step is
1/256 exactly: TFLite's LOGISTIC writes the graph's own params (no requantize), ONNX Runtime and OpenVINO get a
range that clips nothing.

Measured (RegNet-style net, 5 SE blocks with gates spread over (0, 1), 3x64x64, 64 natural_images, verification
on 16 held-out crops; before -> after; numbers in tests/test_sweep8_int8_accuracy.py's docstring and the commit).

Only when the calibrated range already reaches SIGMOID_MIN_HIGH: a sigmoid whose outputs all stay near 0 (a
gate that is almost always closed) keeps its finer calibrated step (TFLite then runs that LOGISTIC float,
backends/tflite/ops/activations.fits). Only for asymmetric activations (the exact grid needs zero at the low end).
"""

from __future__ import annotations

from typing import Any

SIGMOID_HIGH = 255.0 / 256.0  # uint8 [0, 255/256] -> scale 1/256, zero point 0 (int8: zero point -128): TFLite's LOGISTIC
SIGMOID_MIN_HIGH = 0.5  # calibrated high end below this: the samples use less than half of (0, 1); keep their step


def apply(model: Any, ranges: dict[str, tuple[float, float]], symmetric: bool) -> list[str]:
    """Give every Sigmoid output in `ranges` its exact range, in place; returns the tensors changed."""
    if symmetric:
        return []
    changed = []
    for node in model.graph.node:
        if node.op_type != "Sigmoid" or node.domain not in ("", "ai.onnx"):
            continue
        name = node.output[0]
        if name in ranges and float(ranges[name][1]) >= SIGMOID_MIN_HIGH:
            ranges[name] = (0.0, SIGMOID_HIGH)
            changed.append(name)
    return changed
