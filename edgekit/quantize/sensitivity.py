"""Per-layer error of the int8 graph against fp32 on calibration samples, and what "keep a layer float" means.

The analysis runs the artifact graph itself (Relu/Clip folded into their producer's output quantizer, as
ORT and every backend fuse them), so each number describes the graph that ships. A quantized node N of
that graph reads dequantized inputs and, when its output is quantized, its consumers read DQ(Q(out)).
With the values the graph really passes around (`_seen`) compared against the fp32 tensors of the same
name:
  sqnr_db      10 log10(signal / noise) of N's output as its consumers see it (error accumulated so far)
  added_error  the relative noise power N adds itself: e_out^2 - max(e_in^2) over its activation inputs
               as N sees them (e = ||int8 - fp32|| / ||fp32||): its int8 weights plus the rounding of its
               output. This is exactly what keeping N float removes (its inputs stay rounded by their
               producers), so the per-layer fallback order sorts by it (the default --max-drop order
               is end-to-end: e2e_sensitivity.py; this one serves when the torch evaluator cannot run the graph).
Keeping N float (`float_groups`) = excluding N, the Relu/Clip folded into it, and the consumers of the
(folded) output, so that neither N's weights nor its output are rounded. Excluding a folded Relu/Clip
without its producer would leave the producer quantizing the pre-activation tensor, whose range (after
cross-layer equalization: hundreds of units below zero) crushes the useful 0..6 part: that was the cause
of "more layers float, worse accuracy" in the --max-drop search.
Memory: sums per tensor only, one sample at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.quantize.collect import exposed_model, run_checked, session

FOLDED_ACTIVATIONS = ("Relu", "Clip")


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            out.setdefault(i, []).append(node)
    return out


def _folded_activation(node: Any, consumers: dict[str, list[Any]], outputs: set[str]) -> Any:
    """The Relu/Clip that the quantizer folds into `node`'s output (sole consumer, not a graph output)."""
    if not node.output or node.output[0] in outputs:
        return None
    c = consumers.get(node.output[0], [])
    return c[0] if len(c) == 1 and c[0].op_type in FOLDED_ACTIVATIONS else None


def float_groups(fp32: Any) -> dict[str, list[str]]:
    """Node -> the nodes to exclude so that it runs in float and its output stays float."""
    graph = fp32.graph
    consumers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        unit = [node]
        act = _folded_activation(node, consumers, outputs) if node.op_type not in FOLDED_ACTIVATIONS else None
        if act is not None:
            unit.append(act)
        last = unit[-1]
        names = dict.fromkeys(n.name for n in unit)
        for o in last.output:
            names.update(dict.fromkeys(c.name for c in consumers.get(o, [])))
        groups[node.name] = list(names)
    return groups


def _seen(qdq: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(tensor -> the DQ output its consumers read, DQ output -> the float tensor it rounds)."""
    graph = qdq.graph
    inits = {t.name for t in graph.initializer}
    consumers = _consumers(graph)
    rounded_by: dict[str, str] = {}
    source: dict[str, str] = {}
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue
        for dq in consumers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear":
                rounded_by.setdefault(q.input[0], dq.output[0])
                source[dq.output[0]] = q.input[0]
    return rounded_by, source


def _errors(fp32: Any, qdq: Any, samples: SampleSet, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    graph_inputs = {i.name for i in fp32.graph.input}
    ref_names = sorted({a for a, _ in pairs if a not in graph_inputs})
    cand_names = sorted({b for _, b in pairs})
    ref = session(exposed_model(fp32, ref_names))
    cand = session(exposed_model(qdq, cand_names))
    signal = dict.fromkeys(pairs, 0.0)
    noise = dict.fromkeys(pairs, 0.0)
    for feed in samples:
        a = dict(zip(ref_names, run_checked(ref, feed, samples.description, ref_names)))
        a.update({k: v for k, v in feed.items() if k in graph_inputs})
        b = dict(zip(cand_names, run_checked(cand, feed, samples.description, cand_names)))
        for key in pairs:
            x, y = np.asarray(a[key[0]]), np.asarray(b[key[1]])
            if x.shape != y.shape:
                continue
            if np.isfinite(x).all() and np.isfinite(y).all():  # the usual case: no mask, no masked copies
                x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()  # = x64[finite], in order
            else:
                finite = np.isfinite(x) & np.isfinite(y)
                x64, y64 = np.asarray(x, np.float64)[finite], np.asarray(y, np.float64)[finite]
            signal[key] += float(np.sum(x64 ** 2))
            noise[key] += float(np.sum((x64 - y64) ** 2))
    return {k: (signal[k], noise[k]) for k in pairs}


def per_layer(fp32: Any, qdq: Any, samples: SampleSet, nodes: set[str]) -> list[dict[str, Any]]:
    """One entry per quantized node of the artifact graph `qdq` (graph order): node, op, output, sqnr_db,
    added_error."""
    fp32_tensors = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    rounded_by, source = _seen(qdq)
    plan: list[tuple[Any, tuple[str, str], list[tuple[str, str]]]] = []
    for node in qdq.graph.node:
        if node.name not in nodes or node.op_type in ("QuantizeLinear", "DequantizeLinear") or not node.output:
            continue
        out = node.output[0]
        seen_out = rounded_by.get(out, out)
        ref_out = out if out in fp32_tensors else seen_out
        if ref_out not in fp32_tensors:
            continue
        ins = [(source[i], i) for i in node.input if i in source and source[i] in fp32_tensors]
        plan.append((node, (ref_out, seen_out), ins))
    return plan_rows(fp32, qdq, samples, plan)


def plan_rows(fp32: Any, graph: Any, samples: SampleSet, plan: list[tuple[Any, tuple[str, str], list]]) -> list[dict]:
    """The rows of `plan` ((node, (fp32 output, graph output), [(fp32 input, graph input)])), measured on `samples`."""
    pairs = sorted({p for _, o, ins in plan for p in (o, *ins)})
    errs = _errors(fp32, graph, samples, pairs)

    def rel2(key: tuple[str, str]) -> float:
        s, e = errs.get(key, (0.0, 0.0))
        return e / s if s > 0 else 0.0

    rows = []
    for node, key, ins in plan:
        s, e = errs[key]
        e_in = max((rel2(k) for k in ins), default=0.0)
        rows.append({
            "node": node.name, "op": node.op_type, "output": key[0],
            "sqnr_db": round(float(10 * np.log10(s / e)), 2) if e > 0 and s > 0 else None,
            "added_error": float(f"{max(rel2(key) - e_in, 0.0):.4g}"),
        })
    return rows


def fallback_order(rows: list[dict[str, Any]], quantized: set[str]) -> list[str]:
    """Quantized nodes, the ones most worth keeping in float first (all of them = the fp32 graph)."""
    ranked = [r["node"] for r in sorted(rows, key=lambda r: -r["added_error"])]
    rest = sorted(quantized - set(ranked))
    return [n for n in ranked if n in quantized] + rest
