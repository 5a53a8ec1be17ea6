"""Dependency groups from the traced graph (a compact DepGraph on torch.fx).

`analyze(module, example_inputs)` traces the module with torch.fx, runs it once on the example inputs
to learn every tensor's shape, then pushes channel labels through the graph (edgekit/prune/labels.py,
rules in ops.py and handlers.py). The result lists *units* (sets of parameter slices that must be
removed together: one channel of a conv and the matching input channel of every consumer, one
attention head across Q, K, V and the output projection ...) and *groups* (units that are
interchangeable: the channels of one coupled layer set).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedModelError
from edgekit.prune.labels import BLOCK, UnionFind, align, block_const, compress, varying_axes

SliceKey = tuple[str, str, int]  # (module qualname, parameter name, dim)


@dataclass
class Unit:
    root: int
    touches: dict[SliceKey, np.ndarray]  # parameter slice -> indices along that dim
    per_group: dict[SliceKey, int] = field(default_factory=dict)  # slices of a grouped conv's per-group dim: groups
    tables: set[SliceKey] = field(default_factory=set)  # slices of directly read parameter tables

    @property
    def size(self) -> int:
        """Channels the unit carries in the smallest tensor it touches. A grouped conv's per-group weight dim holds
        one index per group position, but the tensor has that position in every group (x groups): the rounding
        (--round-to) is about tensor widths, not group widths (RegNet, group width 8: a position is 8 channels).
        A table's column (Swin's per-head position bias) counts only when the unit touches nothing else."""
        sizes = {k: len(v) * self.per_group.get(k, 1) for k, v in self.touches.items()}
        return int(min((n for k, n in sizes.items() if k not in self.tables), default=min(sizes.values())))


@dataclass
class Group:
    signature: tuple[SliceKey, ...]
    units: list[Unit] = field(default_factory=list)
    _unit_size: tuple[int, int] | None = field(default=None, repr=False, compare=False)  # (len(units), size)

    @property
    def unit_size(self) -> int:
        """Smallest unit's channels; memoized per unit count (the allocation searches ask for it millions of
        times: 25 s of zoo:minilm's sensitivity allocation went to recomputing it)."""
        if self._unit_size is None or self._unit_size[0] != len(self.units):
            self._unit_size = (len(self.units), min(u.size for u in self.units))
        return self._unit_size[1]

    @property
    def channels(self) -> int:
        return sum(u.size for u in self.units)

    def modules(self) -> list[str]:
        return sorted({k[0] for k in self.signature})


def _unfed_defaults(module, inputs) -> dict[str, Any]:
    """forward()'s parameters with a default value that `inputs` does not feed (optional and keyword-only
    extras such as mask=None, scale=1.0): traced as constants, so `if mask is not None` takes the branch the
    model really runs (as a placeholder the proxy is never None: the graph used the missing mask)."""
    import inspect

    if inputs is None:
        return {}
    params = inspect.signature(module.forward).parameters.values()
    return {p.name: p.default for p in params if p.default is not p.empty and p.name not in inputs
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def trace(module, inputs=None):
    """torch.fx graph of `module`; `inputs` (names fed to the model), when given, makes the parameters with a
    default that are not fed constants of the graph (`_unfed_defaults`)."""
    import torch.fx

    from edgekit.prune.fx_patches import traceable_torch_calls
    from edgekit.prune.mha import PrunedMultiheadAttention

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname: str) -> bool:  # a pruned nn.MultiheadAttention stays one, as before
            return isinstance(m, PrunedMultiheadAttention) or super().is_leaf_module(m, qualname)

        def iter(self, obj):  # a loop over torch.chunk(x, n) / split(x, [sizes]) (Res2Net, ECAPA-TDNN): n parts
            n = _parts_count(obj.node)
            return super().iter(obj) if n is None else iter([obj[i] for i in range(n)])

    try:
        tracer = Tracer()
        tracer.proxy_buffer_attributes = True  # a buffer sliced by a traced size: position_ids[:, :seq_len]
        with traceable_torch_calls(), _known_lengths():
            graph = tracer.trace(module, concrete_args=_unfed_defaults(module, inputs) or None)
        return torch.fx.GraphModule(tracer.root, graph, type(module).__name__)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(
            f"cannot trace {type(module).__name__} with torch.fx for pruning: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}{_model_line(exc)}",
            hint="pruning needs a forward without data-dependent Python control flow or Python numbers made from "
                 "tensor sizes (int(x.shape[0] / n): use x.shape[0] // n or -1 in view); convert without --prune",
        ) from exc


@contextlib.contextmanager
def _known_lengths():
    """len() of a traced chunk / split result whose part count the arguments give (`_parts_count`):
    `list(x.chunk(2, 1))` (YOLOv8's C2f) asks for it before iterating; any other len() still fails."""
    from torch.fx import Proxy

    original = Proxy.__len__

    def length(self):
        n = _parts_count(self.node)
        return original(self) if n is None else n

    Proxy.__len__ = length
    try:
        yield
    finally:
        Proxy.__len__ = original


def _parts_count(node) -> int | None:
    """How many tensors a chunk / tensor_split / split node returns when its arguments say so without the input's
    size: chunk(x, n) (n parts: a channel axis of at least n), tensor_split(x, n), split(x, [sizes]); else None."""
    import torch

    if node.op == "call_function":
        name = {torch.chunk: "chunk", torch.tensor_split: "tensor_split", torch.split: "split"}.get(node.target)
    else:
        name = node.target if node.op == "call_method" else None
    arg = node.args[1] if len(node.args) > 1 else node.kwargs.get(
        {"chunk": "chunks", "tensor_split": "indices_or_sections", "split": "split_size_or_sections"}.get(name, ""))
    if name in ("chunk", "tensor_split") and isinstance(arg, int):
        return arg
    if name == "split" and isinstance(arg, (list, tuple)) and all(isinstance(a, int) for a in arg):
        return len(arg)
    return None


def _model_line(exc: BaseException) -> str:
    """' at file.py:LINE: code' for the last frame of the model's own code in the traceback ('' if none)."""
    import os
    import traceback

    skip = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(__import__("torch").__file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(skip)]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {os.path.basename(f.filename)}:{f.lineno}: {(f.line or '').strip()}"


def record_run(gm, example_inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the graph once: tensor shapes (tuple, or list of tuples) and the values of non-tensor nodes."""
    import torch
    import torch.fx

    shapes: dict[str, Any] = {}
    values: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                shapes[n.name] = tuple(out.shape)
            elif isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) for o in out):
                shapes[n.name] = [tuple(o.shape) for o in out]
            else:
                values[n.name] = out
            return out

    args = _positional(gm, example_inputs)
    with torch.no_grad():
        Recorder(gm).run(*args)
    return shapes, values


def _positional(gm, example_inputs: dict[str, Any]) -> list:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    args = []
    for n in placeholders:
        if n.target in example_inputs:
            args.append(example_inputs[n.target])
        elif n.args:
            args.append(n.args[0])  # default value
        else:
            raise UnsupportedModelError(f"no example input for model argument '{n.target}'",
                                        hint=f"give example inputs named {[p.target for p in placeholders]}")
    return args


class Analysis:
    """The propagation context handed to op rules and layer handlers."""

    def __init__(self, gm, shapes: dict[str, Any], values: dict[str, Any],
                 split_choice: dict[str, int] | None = None) -> None:
        self.gm = gm
        self.split_choice = dict(split_choice or {})  # reshape node -> index of the split axis sliced into units
        self.splits: dict[str, tuple] = {}  # reshape node -> (labels before the merge, sliced axis, candidates)
        self.static_sizes: set[str] = set()  # scalar nodes whose value pruning cannot change (ops.is_static)
        self.whole_params: set[tuple[str, str]] = set()  # (module, parameter) read whole by a graph op (_get_attr)
        self.follow_sizes: dict[str, tuple] = {}  # size node -> (tensor node, [axis]) it was read from (ops.read_size)
        self.shapes, self.values = shapes, values
        self.uf = UnionFind()
        self.labels: dict[str, Any] = {}
        self.slices: dict[SliceKey, np.ndarray] = {}
        self.out_dims: set[SliceKey] = set()
        self.tables: set[SliceKey] = set()  # last axis of a multi-dim parameter read directly (not a layer's)
        self.producers: list[str] = []  # conv/linear/embedding modules in call order
        self.first_layers: list[str] = []  # producers that read a floating-point model input directly
        self.float_inputs: set[str] = set()  # names of floating-point model inputs
        self.modules = dict(gm.named_modules())
        # memos for expected_shape, which the MAC target searches call for every node of every candidate:
        self._canon_memo: dict[tuple[int, int, int], tuple[Any, np.ndarray]] = {}  # (id, rank, merges) -> (lab, roots)
        self._removed_memo: tuple[frozenset, np.ndarray] | None = None  # the last removed roots, as a mask

    # --- helpers used by rules and handlers ---------------------------------------------------------
    def is_tensor(self, a) -> bool:
        return hasattr(a, "name") and hasattr(a, "op") and isinstance(self.shapes.get(a.name), tuple)

    def shape(self, a):
        return self.shapes.get(a.name) if hasattr(a, "op") else None

    def lab(self, a):
        lab = self.labels.get(a.name)
        return lab if lab is not None and not isinstance(lab, tuple) else block_const(len(self.shapes[a.name]))

    def canon(self, lab):
        import torch

        return torch.as_tensor(self.uf.roots(lab.numpy()))

    def block(self, lab) -> None:
        if lab is None:
            return
        atoms = np.unique(lab.numpy()) if not isinstance(lab, tuple) else np.concatenate(
            [np.unique(x.numpy()) for x in lab])
        for a in atoms:
            self.uf.union(BLOCK, a)

    def flat_args(self, node) -> list:
        out: list = []

        def walk(a):
            if isinstance(a, (list, tuple)):
                for x in a:
                    walk(x)
            elif isinstance(a, dict):
                for x in a.values():
                    walk(x)
            else:
                out.append(a)

        walk(node.args)
        walk(node.kwargs)
        return out

    def _concrete(self, a):
        import torch.fx

        def sub(x):
            if self.is_tensor(x):
                return align(self.lab(x), len(self.shape(x))).expand(*self.shape(x))
            if x.name in self.values:
                return self.values[x.name]
            raise KeyError(x.name)

        return torch.fx.node.map_arg(a, sub)

    def call_on_labels(self, node):
        args, kwargs = self._concrete(node.args), self._concrete(node.kwargs)
        if node.op == "call_method":  # labels are expanded/permuted views: view() becomes reshape()
            method = {"view": "reshape", "view_as": "reshape_as"}.get(node.target, node.target)
            return getattr(args[0], method)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def channel_atoms(self, lab, shape, axis: int) -> np.ndarray:
        """Atoms along `axis` (length shape[axis]); channels varying along other axes are blocked."""
        lab = self.canon(align(lab, len(shape)))
        if varying_axes(lab) - {axis}:
            self.block(lab)
            return np.zeros(shape[axis], dtype=np.int64)
        idx = [0] * len(shape)
        idx[axis] = slice(None)
        return np.broadcast_to(lab[tuple(idx)].numpy(), (shape[axis],)).copy()

    def channel_labels(self, atoms: np.ndarray, ndim: int, axis: int):
        import torch

        shp = [1] * ndim
        shp[axis] = len(atoms)
        return compress(torch.as_tensor(np.asarray(atoms, dtype=np.int64)).reshape(shp))

    def per_channel(self, lab, in_shape, out_shape, axis: int = 1):
        if tuple(in_shape) == tuple(out_shape):
            return lab
        lab = self.canon(align(lab, len(in_shape)))
        changed = {ax for ax in range(len(in_shape)) if in_shape[ax] != out_shape[ax]}
        if len(in_shape) != len(out_shape) or varying_axes(lab) & changed:
            self.block(lab)
            return block_const(len(out_shape))
        return lab

    def record(self, module: str, pname: str, dim: int, atoms: np.ndarray, out_dim: bool = False) -> None:
        key = (module, pname, dim)
        atoms = np.asarray(atoms, dtype=np.int64)
        if key in self.slices:  # a module called twice: both calls must agree
            for a, b in zip(self.slices[key], atoms):
                self.uf.union(a, b)
        else:
            self.slices[key] = atoms
        if out_dim:
            self.out_dims.add(key)

    # --- the pass --------------------------------------------------------------------------------------
    def run(self) -> Analysis:
        from edgekit.prune.handlers import handler_for
        from edgekit.prune.ops import rule_for

        raw: dict[str, bool] = {}  # node -> computed from a float model input without passing a layer
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                raw[node.name] = node.target in self.float_inputs
            elif node.op in ("call_function", "call_method"):
                raw[node.name] = any(raw.get(getattr(a, "name", None), False) for a in self.flat_args(node))
            elif node.op == "call_module":
                reads = any(raw.get(getattr(a, "name", None), False) for a in self.flat_args(node))
                is_layer = handler_for(self.modules[node.target]).produces
                raw[node.name] = reads and not is_layer
                if reads and is_layer:
                    self.first_layers.append(node.target)
            if node.op == "placeholder":
                shp = self.shapes.get(node.name)
                self.labels[node.name] = block_const(len(shp)) if isinstance(shp, tuple) else None
            elif node.op == "get_attr":
                self.labels[node.name] = self._get_attr(node)
            elif node.op == "call_module":
                mod = self.modules[node.target]
                h = handler_for(mod)
                if h.produces:
                    self.producers.append(node.target)
                self.labels[node.name] = h.propagate(self, node.target, mod, node)
            elif node.op in ("call_function", "call_method"):
                self.labels[node.name] = rule_for(node.target)(self, node)
            elif node.op == "output":
                for a in self.flat_args(node):
                    if self.is_tensor(a):
                        self.block(self.lab(a))
        for key, atoms in self.slices.items():  # a layer's weight also read whole (a decoder reusing it): kept whole
            if key[:2] in self.whole_params:
                for a in atoms:
                    self.uf.union(BLOCK, int(a))
        return self

    def _get_attr(self, node):
        import torch

        shp = self.shapes.get(node.name)
        if not isinstance(shp, tuple):
            return None
        owner, _, pname = node.target.rpartition(".")
        t = getattr(self.modules[owner], pname) if owner else getattr(self.gm, pname)
        wide = [ax for ax, d in enumerate(shp) if d != 1]
        per_channel_buffer = not isinstance(t, torch.nn.Parameter) and isinstance(t, torch.Tensor) \
            and t.is_floating_point() and len(wide) <= 1  # FrozenBatchNorm2d's statistics and affine
        if (isinstance(t, torch.nn.Parameter) and (len(shp) == 2 or len(wide) <= 1)) or per_channel_buffer:
            # a per-channel parameter (scale, bias; (C, 1, 1) or (1, C, 1, 1) layer scales and biases broadcast
            # over NCHW), a (1, 1, C) token, or a table whose rows are gathered (Swin's relative position bias,
            # (positions, heads)): channels on its one wide axis, else the last; the op rules take it from here
            axis = wide[0] if len(wide) == 1 else len(shp) - 1
            atoms = self.uf.new(shp[axis])
            self.record(owner, pname, axis, atoms)
            if len(shp) > 1:
                self.tables.add((owner, pname, axis))
            return self.channel_labels(atoms, len(shp), axis)
        self.whole_params.add((owner, pname))
        return block_const(len(shp))  # used as a whole tensor: its shape is fixed

    # --- results ---------------------------------------------------------------------------------------
    def units(self, exclude: set[str] = frozenset()) -> list[Unit]:
        """Prunable units (blocked ones dropped). Units that touch an output dim of an excluded module
        are dropped too."""
        by_root: dict[int, dict[SliceKey, list[int]]] = defaultdict(lambda: defaultdict(list))
        for key, atoms in self.slices.items():
            for i, r in enumerate(self.uf.roots(atoms)):
                by_root[int(r)][key].append(i)
        units = []
        for root, touches in by_root.items():
            if root == BLOCK:
                continue
            if any(k in self.out_dims and k[0] in exclude for k in touches):
                continue
            units.append(Unit(root, {k: np.asarray(v) for k, v in touches.items()},
                              {k: g for k in touches if (g := self._groups_of(k)) > 1},
                              {k for k in touches if k in self.tables}))
        return units

    def _groups_of(self, key: SliceKey) -> int:
        """The group count when `key` is the per-group dim (1) of a grouped conv's weight, else 1."""
        import torch

        mod = self.modules.get(key[0])
        if key[1:] == ("weight", 1) and isinstance(mod, torch.nn.modules.conv._ConvNd):
            return int(mod.groups)
        return 1

    def groups(self, exclude: set[str] = frozenset()) -> list[Group]:
        by_sig: dict[tuple, Group] = {}
        for u in self.units(exclude):
            sig = tuple(sorted(u.touches))
            by_sig.setdefault(sig, Group(sig)).units.append(u)
        return [g for g in by_sig.values() if len(g.units) > 1]

    def expected_shape(self, node_name: str, removed_roots: set[int]):
        """The shape a node must have once the units `removed_roots` are gone."""
        shp = self.shapes.get(node_name)
        lab = self.labels.get(node_name)
        if isinstance(shp, list) and isinstance(lab, tuple) and removed_roots:  # split / chunk results
            return [self._expected(s, lb, removed_roots) for s, lb in zip(shp, lab)]
        return self._expected(shp, lab, removed_roots)

    def _expected(self, shp, lab, removed_roots: set[int]):
        if not isinstance(shp, tuple) or lab is None or isinstance(lab, tuple) or not removed_roots:
            return shp
        lab = self._canon_roots(lab, len(shp))  # compressed: size-1 axes do not vary
        keep = ~self._removed_mask(removed_roots)[lab]
        out = []
        for ax in range(len(shp)):
            if lab.shape[ax] == 1:
                out.append(shp[ax] if keep.any() else 0)
                continue
            other = tuple(a for a in range(len(shp)) if a != ax)
            out.append(int(keep.any(axis=other).sum()) if other else int(keep.sum()))
        return tuple(out)


    def _canon_roots(self, lab, rank: int) -> np.ndarray:
        key = (id(lab), rank, self.uf.merges)
        hit = self._canon_memo.get(key)
        if hit is None or hit[0] is not lab:  # the label tensor is kept in the value: its id stays its own
            hit = self._canon_memo[key] = (lab, self.canon(align(lab, rank)).numpy())
        return hit[1]

    def _removed_mask(self, removed_roots) -> np.ndarray:
        """Boolean table over atoms: True for the removed roots. A frozenset (immutable) is converted once per
        search candidate, not once per node."""
        memo = self._removed_memo
        if memo is not None and memo[0] is removed_roots:
            return memo[1]
        mask = np.zeros(self.uf.size, dtype=bool)
        mask[np.fromiter(removed_roots, dtype=np.int64)] = True
        if isinstance(removed_roots, frozenset):
            self._removed_memo = (removed_roots, mask)
        return mask

    def collapsed_splits(self) -> dict[str, int]:
        """Reshape splits whose sliced axis left fewer than two separate units, with the next axis to try."""
        out = {}
        for key, (lab, axis, n) in self.splits.items():
            roots = {int(self.uf.find(int(lab.select(axis, i).reshape(-1)[0]))) for i in range(lab.shape[axis])}
            choice = self.split_choice.get(key, 0)
            if len(roots - {BLOCK}) < 2 and choice + 1 < n:
                out[key] = choice + 1
        return out


def analyze(module, example_inputs: dict[str, Any]) -> Analysis:
    gm = trace(module, example_inputs)
    shapes, values = record_run(gm, example_inputs)
    floats = {k for k, v in example_inputs.items() if getattr(v, "is_floating_point", lambda: False)()}
    choice: dict[str, int] = {}
    while True:  # at most (axes of a split) rounds: every round moves at least one split to its next axis
        an = Analysis(gm, shapes, values, choice)
        an.float_inputs = floats
        an.run()
        retry = an.collapsed_splits()
        if not retry:
            return an
        choice.update(retry)
