"""Whether an int8 artifact matches its int8 ONNX graph to within one step of each output's int8 grid.

A backend's int8 kernels round differently from the QDQ graph run in float (TFLite's SOFTMAX uses a lookup table,
its requantization multipliers are fixed-point): results one output step apart are the same int8 model. A UNet
whose softmax probabilities barely varied (std 0.003, under one 1/256 step) had a correct arm artifact differ from
the graph by exactly one step (max 0.0039), and verification blamed the backend ('trails the int8 ONNX graph's
0.9352 by more than 0.01 (the backend lowered it wrongly)'). Such a difference is int8 rounding, not a lowering
error; the floors against the fp32 source still apply.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def output_steps(qdq_model: Any) -> dict[int, float]:
    """{graph output index: its int8 step} for the outputs a per-tensor DequantizeLinear writes."""
    from onnx import numpy_helper

    inits = {t.name: t for t in qdq_model.graph.initializer}
    producer = {o: n for n in qdq_model.graph.node for o in n.output}
    steps = {}
    for index, out in enumerate(qdq_model.graph.output):
        dq = producer.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[dq.input[1]])
        if scale.size == 1:
            steps[index] = float(scale.reshape(()))
    return steps


def within_one_step(graph_outs: list, cand_outs: list, steps: dict[int, float]) -> bool:
    """True when every float output of every sample is within one step (plus float rounding) of the graph's; an
    output with no known step (written float) makes it False. Integer outputs are judged elsewhere."""
    for g_row, c_row in zip(graph_outs, cand_outs):
        for index, (g, c) in enumerate(zip(g_row, c_row)):
            g, c = np.asarray(g), np.asarray(c)
            if not np.issubdtype(g.dtype, np.floating):
                continue
            if index not in steps or g.size != c.size:
                return False
            diff = np.abs(g.astype(np.float64).ravel() - c.astype(np.float64).ravel())
            if diff.size and not float(diff.max()) <= steps[index] * 1.001 + 1e-7:
                return False
    return True
