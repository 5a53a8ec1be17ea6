"""Channel labels: the bookkeeping behind dependency groups.

Every tensor in the traced graph carries a *label tensor* of atom ids that broadcasts to the tensor's
shape (axes along which the labels do not vary are stored with size 1). An atom is one prunable
channel position of some layer; atoms that must be removed together are merged in a union-find.
Atom 0 is BLOCK: anything merged with it can never be pruned (model inputs and outputs, parameters
used as whole tensors, operators the analysis does not understand).

Data-movement operators (view, permute, cat, split, slicing ...) are handled by running the very same
operator on the label tensor, so index offsets of concat, split and flatten come out exactly.
"""

from __future__ import annotations

import numpy as np

BLOCK = 0


class UnionFind:
    def __init__(self) -> None:
        self.parent = np.zeros(1, dtype=np.int64)  # atom 0 = BLOCK
        self.size = 1
        self.merges = 0  # unions that joined two sets: roots computed before a merge are stale after it

    def new(self, n: int) -> np.ndarray:
        if self.size + n > len(self.parent):
            grow = np.arange(len(self.parent), max(2 * len(self.parent), self.size + n), dtype=np.int64)
            self.parent = np.concatenate([self.parent, grow])
        ids = np.arange(self.size, self.size + n, dtype=np.int64)
        self.parent[ids] = ids
        self.size += n
        return ids

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        lo, hi = (ra, rb) if ra < rb else (rb, ra)  # BLOCK (0) always wins as the root
        self.parent[hi] = lo
        self.merges += 1

    def union_all(self, atoms) -> None:
        atoms = np.unique(np.asarray(atoms).reshape(-1))
        for a in atoms[1:]:
            self.union(atoms[0], a)

    def roots(self, atoms: np.ndarray) -> np.ndarray:
        """Vectorized find (compresses every path first)."""
        p = self.parent[: self.size]
        while True:
            pp = p[p]
            if np.array_equal(pp, p):
                break
            p = pp
        self.parent[: self.size] = p
        return p[np.asarray(atoms, dtype=np.int64)]


def compress(lab):
    """Shrink every axis along which the labels are constant to size 1."""
    for ax in range(lab.dim()):
        if lab.shape[ax] > 1 and bool((lab == lab.narrow(ax, 0, 1)).all()):
            lab = lab.narrow(ax, 0, 1)
    return lab.contiguous()


def varying_axes(lab) -> set[int]:
    return {ax for ax in range(lab.dim()) if lab.shape[ax] > 1}


def block_const(ndim: int):
    import torch

    return torch.zeros((1,) * ndim, dtype=torch.int64)


def align(lab, ndim: int):
    """Left-pad a label tensor with size-1 axes (numpy broadcasting rules)."""
    while lab.dim() < ndim:
        lab = lab.unsqueeze(0)
    return lab
