"""Per-layer error of the int8 graph against fp32, measured on calibration samples.

Both graphs run with every node output exposed (the QDQ graph keeps the fp32 tensor names on node
outputs: a node's output is computed from dequantized inputs and weights, before its own Q/DQ).
For each quantized node:
  sqnr_db      10 log10(signal / noise) of its output, fp32 vs int8 graph (error accumulated so far)
  added_error  the share of relative noise power the node adds itself: e_out^2 - max(e_in^2) over its
               activation inputs (e = ||int8 - fp32|| / ||fp32||), i.e. rounding of its inputs to
               int8 plus its int8 weights, as seen at its output. The fallback order sorts by this.
Memory: sums per tensor only, one sample at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.quantize.collect import exposed_model, run_checked, session


def _errors(fp32: Any, qdq: Any, samples: SampleSet, tensors: list[str]) -> dict[str, tuple[float, float]]:
    ref = session(exposed_model(fp32, tensors))
    cand = session(exposed_model(qdq, tensors))
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    for feed in samples:
        a = run_checked(ref, feed, samples.description, tensors)
        b = run_checked(cand, feed, samples.description, tensors)
        for name, x, y in zip(tensors, a, b):
            x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
            if x64.shape != y64.shape:
                continue
            finite = np.isfinite(x64) & np.isfinite(y64)
            signal[name] += float(np.sum(x64[finite] ** 2))
            noise[name] += float(np.sum((x64[finite] - y64[finite]) ** 2))
    return {n: (signal[n], noise[n]) for n in tensors}


def per_layer(fp32: Any, qdq: Any, samples: SampleSet, nodes: set[str]) -> list[dict[str, Any]]:
    """One entry per quantized node (graph order): node, op, output, sqnr_db, added_error."""
    qdq_outputs = {o for n in qdq.graph.node for o in n.output}
    producers = {o: n for n in fp32.graph.node for o in n.output}
    candidates = [n for n in fp32.graph.node if n.name in nodes and n.output and n.output[0] in qdq_outputs]
    tensors = sorted({n.output[0] for n in candidates}
                     | {i for n in candidates for i in n.input if i in producers and i in qdq_outputs})
    errs = _errors(fp32, qdq, samples, tensors)

    def rel2(name: str) -> float:
        s, e = errs.get(name, (0.0, 0.0))
        return e / s if s > 0 else 0.0

    rows = []
    for node in candidates:
        out = node.output[0]
        s, e = errs[out]
        e_in = max((rel2(i) for i in node.input if i in errs), default=0.0)
        rows.append({
            "node": node.name, "op": node.op_type, "output": out,
            "sqnr_db": round(float(10 * np.log10(s / e)), 2) if e > 0 and s > 0 else None,
            "added_error": float(f"{max(rel2(out) - e_in, 0.0):.4g}"),
        })
    return rows


def fallback_order(rows: list[dict[str, Any]], quantized: set[str]) -> list[str]:
    """Quantized nodes, the ones most worth keeping in float first (all of them = the fp32 graph)."""
    ranked = [r["node"] for r in sorted(rows, key=lambda r: -r["added_error"])]
    rest = sorted(quantized - set(ranked))
    return [n for n in ranked if n in quantized] + rest
