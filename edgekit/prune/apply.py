"""Build the pruned model: new, smaller dense layers; shape constants rewritten; result checked.

The traced graph is copied, every layer that loses channels is rebuilt by its handler, and reshape
constants that encode a pruned size (the head count in `view(b, s, 12, 32)`) are rewritten from the
predicted shapes. The pruned graph is then run on the example inputs and every tensor's shape is
compared with the shape the dependency analysis predicted: a dependency the analysis got wrong fails
here, loudly, instead of producing a model that breaks later.
"""

from __future__ import annotations

import copy
import operator
from collections import defaultdict
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError
from edgekit.prune.graph import Analysis, record_run
from edgekit.prune.labels import align
from edgekit.prune.ops import shape_items

RESHAPES = ("view", "reshape", "expand")


def keep_indices(an: Analysis, removed: set[int]) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """module -> param -> dim -> kept indices, for the slices that lose something."""
    rm = np.fromiter(removed, dtype=np.int64) if removed else np.zeros(0, np.int64)
    out: dict[str, dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    for (mod, pname, dim), atoms in an.slices.items():
        keep = np.nonzero(~np.isin(an.uf.roots(atoms), rm))[0]
        if len(keep) < len(atoms):
            out[mod][pname][dim] = keep
    return out


def _set_module(root, name: str, new) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _slice_param(owner, pname: str, dims: dict[int, np.ndarray]) -> None:
    """Keep the indices `dims` of a parameter (or a buffer, which stays a buffer) of a module pruning does not rebuild."""
    import torch

    t = getattr(owner, pname)
    with torch.no_grad():
        for dim, idx in dims.items():
            t = t.index_select(dim, torch.as_tensor(idx, dtype=torch.long))
    if pname in owner._buffers:
        owner.register_buffer(pname, t.clone(), persistent=pname not in owner._non_persistent_buffers_set)
        return
    setattr(owner, pname, torch.nn.Parameter(t.clone(), requires_grad=getattr(owner, pname).requires_grad))


def _rewrite_shape_args(gm, node, old: tuple, new: tuple, values: dict[str, Any], static: set[str],
                        follow: dict[str, int] | None = None) -> bool:
    """Replace integer size constants of a view/reshape/expand whose axis changed size (literals inside a computed
    size tuple too: the tuple is rebuilt from its elements, computed ones staying computed). A computed size the
    pruning cannot change (`C` of `B, N, C = x.shape` with x's channels kept, ops.is_static) becomes the new
    literal: it is a fixed number, so the literal is exact. `follow` {size node: its value in the pruned graph}
    (ops.read_size): such a size stays computed where that value is the axis's new size, else becomes the literal."""
    import operator

    rest = list(node.args[1:])
    packed = len(rest) == 1 and not isinstance(rest[0], int)
    dims = shape_items(rest[0] if packed else rest, values)
    if dims is None or len(dims) != len(old):
        return False
    changed = False
    for ax, d in enumerate(dims):
        name = getattr(d, "name", None)
        if follow and name in follow:
            if follow[name] != new[ax]:
                dims[ax] = new[ax]
                changed = True
            continue
        fixed = d if isinstance(d, int) else values.get(name) if name in static else None
        if fixed is not None and fixed != -1 and old[ax] != new[ax] and fixed == old[ax]:
            dims[ax] = new[ax]
            changed = True
    if changed:
        with gm.graph.inserting_before(node):
            dims = [gm.graph.call_function(operator.getitem, d) if isinstance(d, tuple) else d for d in dims]
        node.args = (node.args[0], *([list(dims)] if packed else dims))
    return changed


def _last_axis_norms() -> tuple:
    import torch.nn.functional as F

    return tuple(f for f in (F.layer_norm, getattr(F, "rms_norm", None)) if f is not None)


def _rewrite_normalized_shape(an: Analysis, node, removed: set[int]) -> bool:
    """F.layer_norm(x, (C,), w, b): the normalized size constant follows x's pruned last axis."""
    x = node.args[0]
    old, new = an.shapes.get(x.name), an.expected_shape(x.name, removed)
    if not isinstance(old, tuple) or old[-1] == new[-1]:
        return False
    if len(node.args) > 1:
        node.args = (x, (new[-1],), *node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "normalized_shape": (new[-1],)}
    return True


def _rewrite_slice_bounds(an: Analysis, node, removed: set[int]) -> bool:
    """x[:, :n] (GhostNet's torch.cat([x1, x2], 1)[:, :oup]): integer slice bounds on an axis that loses channels
    become the number of kept channels before them. Returns whether the node changed."""
    src, idx = node.args[0], node.args[1]
    items = idx if isinstance(idx, tuple) else (idx,)
    shp, lab = an.shapes.get(src.name), an.labels.get(src.name)
    if not removed or not isinstance(shp, tuple) or lab is None or isinstance(lab, tuple) or len(items) > len(shp) \
            or not all(isinstance(i, (slice, int)) for i in items):
        return False
    keep = ~np.isin(an.canon(align(lab, len(shp))).numpy(), np.fromiter(removed, dtype=np.int64))
    out, changed = [], False
    for ax, it in enumerate(items):
        if not isinstance(it, slice) or keep.shape[ax] == 1 or it.step not in (None, 1) or not all(
                b is None or isinstance(b, int) for b in (it.start, it.stop)):
            out.append(it)
            continue
        kept = keep.any(axis=tuple(a for a in range(len(shp)) if a != ax))
        start, stop, _ = it.indices(shp[ax])
        new = slice(None if it.start is None else int(kept[:start].sum()),
                    None if it.stop is None else int(kept[:stop].sum()), it.step)
        changed |= new != it
        out.append(new)
    if changed:
        node.args = (src, tuple(out) if isinstance(idx, tuple) else out[0])
    return changed


def _chunk_to_split(node, new) -> bool:
    """chunk(n) cuts equal pieces; when the pieces keep different channel counts (each piece's channels are pruned
    as their own group) it becomes split with the kept sizes. Returns whether the node changed."""
    import torch

    if not isinstance(new, list):
        return False
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
    sizes = [s[dim] for s in new]
    total, step = sum(sizes), -(-sum(sizes) // int(node.args[1]))
    if sizes == [min(step, total - i) for i in range(0, total, step)]:
        return False
    node.target = "split" if node.op == "call_method" else torch.split
    node.args, node.kwargs = (node.args[0], sizes, dim), {}
    return True


def build_pruned(an: Analysis, removed: set[int], example_inputs: dict[str, Any], original=None,
                 means: dict[str, Any] | None = None):
    """-> (model, graph_rewritten). Returns a copy of `original` (same class) with smaller layers when no
    graph constant had to change, else the rewritten torch.fx GraphModule (same forward signature).
    `means` (per-layer input channel means, compensate.input_means) turns on bias compensation."""
    gm, rewritten, new_modules, sliced = _build_graph(an, removed, example_inputs, means)
    if rewritten or original is None:
        return gm, rewritten
    model = copy.deepcopy(original)
    for name, m in new_modules.items():
        _set_module(model, name, m)
    for name, params in sliced.items():  # e.g. a layer-scale gamma of a block: the block itself stays
        owner = model.get_submodule(name) if name else model
        for pname, dims in params.items():
            _slice_param(owner, pname, dims)
    from edgekit.prune.tie import retie

    retie(original, model)
    return model, False


def pruned_graph(an: Analysis, removed: set[int], example_inputs: dict[str, Any],
                 means: dict[str, Any] | None = None) -> tuple[Any, set[str]]:
    """-> (the pruned torch.fx GraphModule, names of the modules whose parameters changed): what a partial
    evaluation needs (suffix.py); build_pruned's model computes the same."""
    gm, _, new_modules, sliced = _build_graph(an, removed, example_inputs, means)
    return gm, set(new_modules) | set(sliced)


def _build_graph(an: Analysis, removed: set[int], example_inputs: dict[str, Any], means: dict[str, Any] | None):
    import torch

    from edgekit.prune.handlers import OpaqueHandler, handler_for

    gm = copy.deepcopy(an.gm)
    keep = keep_indices(an, removed)
    new_modules = {}
    sliced: dict[str, dict[str, dict[int, np.ndarray]]] = {}  # parameters of non-layer modules, sliced in place
    for mod_name, params in keep.items():
        owner = gm.get_submodule(mod_name) if mod_name else gm
        h = handler_for(owner)
        if isinstance(h, OpaqueHandler) or not mod_name:
            for pname, dims in params.items():
                _slice_param(owner, pname, dims)
            sliced[mod_name] = params
            continue
        new = h.rebuild(owner, params)
        _set_module(gm, mod_name, new)
        new_modules[mod_name] = new
    if means:
        from edgekit.prune.compensate import compensate

        compensate(an, gm, keep, means, new_modules)
    rewritten = False
    follow = {n: an.expected_shape(x.name, removed)[ax[0]] for n, (x, ax) in an.follow_sizes.items()}
    for node in gm.graph.nodes:
        if node.target in RESHAPES or (node.op == "call_function" and getattr(node.target, "__name__", "") == "reshape"):
            old = an.shapes.get(node.name)
            new = an.expected_shape(node.name, removed)
            if isinstance(old, tuple) and (old != new or any(getattr(a, "name", None) in follow
                                                             for a in an.flat_args(node))):
                rewritten |= _rewrite_shape_args(gm, node, old, new, an.values, an.static_sizes, follow)
        elif node.target in ("split", torch.split) and len(node.args) > 1:  # sizes, or one size (literal or computed)
            old = an.shapes.get(node.name)
            new = an.expected_shape(node.name, removed)
            if old != new:
                dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
                node.args = (node.args[0], [s[dim] for s in new], *node.args[2:])
                rewritten = True
        elif node.op == "call_function" and node.target is operator.getitem and an.is_tensor(node.args[0]):
            rewritten |= _rewrite_slice_bounds(an, node, removed)
        elif node.target in ("chunk", torch.chunk) and len(node.args) > 1:
            rewritten |= _chunk_to_split(node, an.expected_shape(node.name, removed))
        elif node.op == "call_function" and node.target in _last_axis_norms():
            rewritten |= _rewrite_normalized_shape(an, node, removed)
    from edgekit.prune.tie import retie

    retie(an.gm, gm)  # rebuilt layers hold copies: tied embeddings were two matrices (prune/tie.py)
    gm.recompile()
    check_shapes(an, gm, removed, example_inputs)
    return gm, rewritten, new_modules, sliced


def check_shapes(an: Analysis, gm, removed: set[int], example_inputs: dict[str, Any]) -> None:
    try:
        got, _ = record_run(gm, example_inputs)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"the pruned model does not run: {type(exc).__name__}: {exc}",
                                    hint="a channel dependency was not found; exclude the layers involved "
                                         "(--prune-exclude) or report this model") from exc
    for name, shp in got.items():
        want = an.expected_shape(name, removed)
        if isinstance(shp, (tuple, list)) and type(want) is type(shp) and list(shp) != list(want):
            raise UnsupportedModelError(
                f"pruning dependency mismatch at node '{name}': shape {shp}, expected {want}",
                hint="a channel dependency was not found; exclude the layers involved (--prune-exclude)")
