"""Outputs ranked by an in-graph TopK: compared as ranked sets, not position by position.

A detector that ends in TopK (top-k scores, the boxes gathered by their indices, the indices themselves) puts
its k best rows in score order. int8 (or another runtime's rounding) may swap two near-tied scores, which moves
whole rows: compared position by position, a correct artifact failed verification (cosine 0.57, exit 3). Here
the candidate's rows of each such group of outputs are put in the reference's row order first: by the indices
when the group outputs them (equal indices are the same anchor), else by nearest rows (greedy, on the group's
float outputs scaled by the reference's spread). A row the candidate does not have at all stays a mismatch.

`ranked_groups` finds the groups in the ONNX graph: the outputs a TopK's values or indices reach through ops
that keep its row order (gathers, reshapes, slices, casts, element-wise math).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ORDER_KEEPING = {
    "Gather", "GatherElements", "GatherND", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Transpose", "Flatten",
    "Identity", "Cast", "Concat", "Split", "Expand", "Tile", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log",
    "Abs", "Neg", "Sigmoid", "Tanh", "Relu", "Clip", "Min", "Max", "Floor", "Ceil", "Round", "Softmax",
}


def ranked_groups(model: Any) -> list[dict[str, Any]]:
    """[{"k": k or None, "outputs": [graph output indices]}], one per TopK node that reaches a graph output."""
    from onnx import numpy_helper

    g = model.graph
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            consts[n.output[0]] = n.attribute[0].t
    reach: dict[str, int] = {}
    ks: list[int | None] = []
    for n in g.node:
        if n.op_type == "TopK":
            k = None
            if len(n.input) > 1 and n.input[1] in consts:
                k = int(np.asarray(numpy_helper.to_array(consts[n.input[1]])).ravel()[0])
            else:
                k = next((int(a.i) for a in n.attribute if a.name == "k"), None)  # opset 1
            ks.append(k)
            for out in n.output:
                reach[out] = len(ks) - 1
        elif n.op_type in ORDER_KEEPING:
            hit = next((reach[i] for i in n.input if i in reach), None)
            if hit is not None:
                for out in n.output:
                    reach[out] = hit
    groups: dict[int, list[int]] = {}
    for index, out in enumerate(g.output):
        if out.name in reach:
            groups.setdefault(reach[out.name], []).append(index)
    return [{"k": ks[t], "outputs": idx} for t, idx in sorted(groups.items())]


def _axis(shape: tuple[int, ...], k: int | None) -> int | None:
    """The axis holding the k ranked rows: the first past the batch of length k (or the last axis when k is
    unknown and the array is 2-D: (batch, k))."""
    if k is not None:
        return next((a for a, d in enumerate(shape) if a > 0 and d == k), None)
    return 1 if len(shape) == 2 else None


def _permutation(ref_rows: list[np.ndarray], cand_rows: list[np.ndarray], exact: bool) -> np.ndarray:
    """perm with cand[perm[i]] matched to ref[i]: identical rows first (exact keys), else greedy nearest."""
    k = ref_rows[0].shape[0]
    r = np.concatenate([x.reshape(k, -1) for x in ref_rows], axis=1)
    c = np.concatenate([x.reshape(k, -1) for x in cand_rows], axis=1)
    perm = np.full(k, -1)
    free = np.ones(k, bool)
    if exact:
        for i in range(k):
            hit = np.flatnonzero(free & (c == r[i]).all(axis=1))
            if hit.size:
                perm[i], free[hit[0]] = hit[0], False
    else:
        r64, c64 = r.astype(np.float64), c.astype(np.float64)
        scale = r64.std(axis=0) + 1e-12
        d = (((r64[:, None, :] - c64[None, :, :]) / scale) ** 2).sum(-1)
        d[~np.isfinite(d)] = np.inf
        for flat in np.argsort(d, axis=None, kind="stable"):  # closest pairs first, each row and column once
            i, j = divmod(int(flat), k)
            if perm[i] < 0 and free[j] and np.isfinite(d[i, j]):
                perm[i], free[j] = j, False
    rest = iter(np.flatnonzero(free))
    return np.array([p if p >= 0 else next(rest) for p in perm])


def align_ranked(refs: list[list[np.ndarray]], cands: list[list[np.ndarray]],
                 groups: list[dict[str, Any]] | None) -> list[list[np.ndarray]]:
    """The candidate outputs with each ranked group's rows in the reference's order (per sample)."""
    if not groups:
        return cands
    out = [list(c) for c in cands]
    for ref, cand in zip(refs, out):
        for group in groups:
            idx = [i for i in group["outputs"] if i < len(ref) and np.shape(ref[i]) == np.shape(cand[i])]
            axes = {i: _axis(np.shape(ref[i]), group["k"]) for i in idx}
            idx = [i for i in idx if axes[i] is not None]
            lengths = {np.shape(ref[i])[axes[i]] for i in idx}
            if not idx or len(lengths) != 1 or np.shape(ref[idx[0]])[0] != 1:
                continue  # one sample per run (batch 1): rows of one ranking
            moved_r = {i: np.moveaxis(np.asarray(ref[i])[0], axes[i] - 1, 0) for i in idx}
            moved_c = {i: np.moveaxis(np.asarray(cand[i])[0], axes[i] - 1, 0) for i in idx}
            ints = [i for i in idx if np.asarray(ref[i]).dtype.kind in "iub"]
            keys = ints or [i for i in idx if np.asarray(ref[i]).dtype.kind == "f"]
            if not keys:
                continue
            perm = _permutation([moved_r[i] for i in keys], [moved_c[i] for i in keys], exact=bool(ints))
            for i in idx:
                cand[i] = np.moveaxis(moved_c[i][perm], 0, axes[i] - 1)[None]
    return out
