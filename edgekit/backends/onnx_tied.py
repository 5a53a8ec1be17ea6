"""One copy of a tied embedding table in an ONNX file.

A language model whose output projection reuses its token embedding (`head.weight = embed.weight`) exports
both: the Gather's table A (vocab, dim) and, for the MatMul, its transpose A^T (dim, vocab) as a second
initializer, the model's largest tensor twice (zoo-size LMs: +90 MB). ONNX Runtime's constant folding would
turn a Transpose(A) node back into a second initializer, so the embedding reads the MatMul's copy instead:
Gather(A, ids) becomes Transpose(Gather(A^T, ids, axis=1)), the same values for each token (a gather of D
columns and a transpose of the few looked-up rows, nothing next to the MatMul), and A is dropped.
Only float tables read by Gather alone on axis 0, with an exact transposed twin, are rewritten.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

MIN_ELEMENTS = 4096  # smaller tables are not worth a node


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def tied_pairs(model: Any) -> list[tuple[str, str]]:
    """(table, transposed twin) initializer names: 2-D float, at least MIN_ELEMENTS, equal after a transpose."""
    from onnx import TensorProto, numpy_helper

    floats = {t.name: t for t in model.graph.initializer
              if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(t.dims) == 2
              and t.dims[0] * t.dims[1] >= MIN_ELEMENTS and t.dims[0] != t.dims[1]}
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, t in floats.items():
        by_shape.setdefault(tuple(t.dims), []).append(name)
    pairs = []
    for name, t in floats.items():
        twins = by_shape.get((t.dims[1], t.dims[0]), [])
        if not twins:
            continue
        a = numpy_helper.to_array(t)
        want = _digest(a.T)
        for other in twins:
            b = numpy_helper.to_array(floats[other])
            if b.dtype == a.dtype and _digest(b) == want:
                pairs.append((name, other))
                break
    return pairs


def share_tied_tables(model: Any) -> int:
    """Rewrite each tied table's Gathers to read its transposed twin (see the module doc); returns the count of
    tables dropped. The graph's own inputs, subgraphs and outputs are left alone (no rewrite when A is one)."""
    import onnx
    from onnx import helper

    pairs = tied_pairs(model)
    if not pairs:
        return 0
    g = model.graph
    protected = {i.name for i in g.input} | {o.name for o in g.output}
    for n in g.node:
        for a in n.attribute:
            if a.HasField("g") or len(a.graphs):
                return 0  # a subgraph may read the table by name
    ranks = _ranks(model)
    done = 0
    for table, twin in pairs:
        users = [n for n in g.node if table in n.input]
        if table in protected or not users or any(
                n.op_type != "Gather" or n.domain not in ("", "ai.onnx") or list(n.input).index(table) != 0
                or _axis(n) != 0 or ranks.get(n.input[1]) is None for n in users):
            continue
        for n in users:
            r = ranks[n.input[1]]
            cols = f"{n.output[0]}__tied_cols"
            gather = helper.make_node("Gather", [twin, n.input[1]], [cols], name=f"{n.name or cols}_tied", axis=1)
            trans = helper.make_node("Transpose", [cols], [n.output[0]], name=f"{n.name or cols}_tied_t",
                                     perm=[*range(1, r + 1), 0])
            pos = list(g.node).index(n)
            g.node.remove(n)
            g.node.insert(pos, trans)
            g.node.insert(pos, gather)
        keep = [t for t in g.initializer if t.name != table]
        del g.initializer[:]
        g.initializer.extend(keep)
        done += 1
    if done:
        onnx.checker.check_model(model)
    return done


def _axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def _ranks(model: Any) -> dict[str, int]:
    """Rank of every value shape inference knows (graph inputs, value_info, outputs)."""

    try:
        from edgekit.onnx_shapes import infer_shapes

        inferred = infer_shapes(model, keep_data=False)
    except Exception:  # noqa: BLE001
        inferred = model
    out: dict[str, int] = {}
    g = inferred.graph
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = len(t.shape.dim)
    for t in g.initializer:
        out[t.name] = len(t.dims)
    return out
