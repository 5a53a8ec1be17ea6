"""How each torch function / tensor method moves channel labels: one table, a few rule kinds.

Rules take the propagation context and the fx node and return the output label tensor (or a tuple of
them, or None for non-tensor results). Anything not in the table is treated conservatively: every
channel it touches is blocked (correct, never wrong; it only prunes less).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.prune.labels import BLOCK, align, block_const, compress, varying_axes


def _tensor_args(ctx, node) -> list:
    return [a for a in ctx.flat_args(node) if ctx.is_tensor(a)]


def elementwise(ctx, node):
    """add, mul, where, masked_fill ...: operands share channels position by position (residual adds).

    An operand broadcast (size 1) along an axis where another operand's channels vary does not index
    those channels (a (b, s, 1) mask times (b, s, c) hidden states), so it adds no coupling; channels of its own
    on another axis are then blocked: that axis is full size in the others, which keep it whole (rotary
    embeddings' cos/sin from an inv_freq buffer times q (b, heads, t, head_dim): inv_freq was a group of its
    own, and pruning it broke the product, 'the pruned model does not run')."""
    out_shape = ctx.shape(node)
    if out_shape is None:
        args = ctx.flat_args(node)
        if args and all(isinstance(a, (int, float)) or is_static(ctx, a) for a in args) and any(
                is_static(ctx, a) for a in args):
            ctx.static_sizes.add(node.name)  # C // heads
        return None
    nd = len(out_shape)
    ops = [(align(ctx.lab(a), nd), (1,) * (nd - len(ctx.shape(a))) + tuple(ctx.shape(a))) for a in _tensor_args(ctx, node)]
    if not ops:
        return block_const(nd)
    axes = [varying_axes(lab) for lab, _ in ops]
    effective = []
    for i, (lab, shp) in enumerate(ops):
        others = set().union(*(axes[j] for j in range(len(ops)) if j != i))
        bcast = {ax for ax in range(nd) if shp[ax] == 1 and out_shape[ax] > 1}
        if not (bcast & others):
            effective.append(lab)
        elif varying_axes(lab):
            ctx.block(lab)
    if not effective:
        for lab, _ in ops:
            ctx.block(lab)
        return block_const(nd)
    import torch

    common = torch.broadcast_shapes(*(lab.shape for lab in effective))
    first = effective[0].expand(common)
    for other in effective[1:]:
        pairs = np.unique(np.stack([first.reshape(-1).numpy(), other.expand(common).reshape(-1).numpy()], 1), axis=0)
        for a, b in pairs:
            ctx.uf.union(a, b)
    return compress(first.clone())


def keep_first(ctx, node):
    """Unary per-element ops (activations, softmax, dtype casts, dropout): labels pass through."""
    args = _tensor_args(ctx, node)
    if not args or ctx.shape(node) is None:
        return None
    lab = ctx.lab(args[0])
    if tuple(ctx.shape(args[0])) != tuple(ctx.shape(node)):
        return unknown(ctx, node)
    return lab


def movement(ctx, node):
    """view / reshape / permute / cat / split / getitem ...: run the same operator on the labels.

    A reshape that splits one channel axis into several (heads x head_dim) can only keep a
    rectangular set, so it merges each slice along the trailing split axes into one unit (a head)."""
    if not _tensor_args(ctx, node):
        return None
    out = ctx.call_on_labels(node)
    if isinstance(out, (tuple, list)):
        return tuple(compress(ctx.canon(o)) for o in out)
    out = rectangular(ctx, out, [ctx.lab(a) for a in _tensor_args(ctx, node)], key=node.name)
    if node.target in ("view", "reshape", "expand", torch_reshape()):
        out = _computed_sizes(ctx, node, out)
    return out


def glu_halves(ctx, lab, shape, dim: int):
    """GLU along `dim` (out[i] = a[i] * sigmoid(b[i]), a and b the halves of x): channel i of both halves is one
    unit, the output carries the first half's labels."""
    lab = ctx.canon(align(lab, len(shape)))
    dim %= len(shape)
    if lab.shape[dim] == 1:
        return lab
    a, b = lab.chunk(2, dim)
    pairs = np.unique(np.stack([a.reshape(-1).numpy(), b.expand(a.shape).reshape(-1).numpy()], 1), axis=0)
    for x, y in pairs:
        ctx.uf.union(x, y)
    return compress(ctx.canon(a.clone()))


def glu(ctx, node):
    x = node.args[0]
    if not ctx.is_tensor(x) or ctx.shape(node) is None:
        return None
    return glu_halves(ctx, ctx.lab(x), ctx.shape(x), node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else -1))


def torch_reshape():
    import torch

    return torch.reshape


def shape_items(arg, values: dict[str, Any]) -> list | None:
    """The per-axis entries of a size argument: int literals, scalar size nodes, or (node, i) for element i of a
    computed size tuple; a tuple built by `+` (HF: `x.size()[:-1] + (heads, head_dim)`) is opened up so its
    literal part can be rewritten. None when the structure is not known."""
    import operator

    if isinstance(arg, int):
        return [arg]
    if isinstance(arg, (list, tuple)):
        items: list = []
        for a in arg:
            sub = shape_items(a, values)
            if sub is None:
                return None
            items += sub
        return items
    if not hasattr(arg, "op"):
        return None
    value = values.get(arg.name)
    if isinstance(value, int):
        return [arg]
    if not isinstance(value, tuple):
        return None
    if arg.op == "call_function" and arg.target is operator.add and len(arg.args) == 2:
        parts = [shape_items(a, values) for a in arg.args]
        if all(p is not None for p in parts):
            return parts[0] + parts[1]
    return [(arg, i) for i in range(len(value))]


def _computed_sizes(ctx, node, out):
    """A reshape whose size for a channel axis is computed (not a literal the pruner can rewrite) keeps that
    axis whole: the computed number would not follow the pruned channels. Fixed sizes (is_static) and sizes read
    from a channel axis for reshapes only (follows) are rewritten where the count changes (apply.py)."""
    rest = list(node.args[1:]) or [node.kwargs.get("shape")]
    items = shape_items(rest[0] if len(rest) == 1 and not isinstance(rest[0], int) else rest, ctx.values)
    vary = varying_axes(out)
    if items is None or len(items) != out.dim():
        for a in ctx.flat_args(node):  # a size that follows channels, on an axis not known: those channels stay
            if getattr(a, "name", None) in ctx.follow_sizes:
                _block_axes(ctx, *ctx.follow_sizes[a.name])
        if vary:
            ctx.block(out)
            return block_const(out.dim())
        return out
    if any(not isinstance(d, int) and ax in vary and not is_static(ctx, d) and not follows(ctx, d)
           for ax, d in enumerate(items)):
        ctx.block(out)
        return compress(ctx.canon(out))
    return out


def follows(ctx, d) -> bool:
    """A size read from a channel axis and used only in reshapes (read_size): rewritten where it must be."""
    return hasattr(d, "name") and d.name in ctx.follow_sizes


def is_static(ctx, d) -> bool:
    """A computed size whose value pruning cannot change: read from a channel axis (which the read keeps whole)
    or arithmetic on such sizes and constants (`C`, `C // heads` after `B, N, C = x.shape`)."""
    return hasattr(d, "name") and d.name in ctx.static_sizes


def rectangular(ctx, out, sources: list, key: str | None = None):
    """Labels `out` moved from `sources`: where channels of one axis now vary along several axes (heads x
    head_dim; PixelShuffle's r*r sub-pixels), each slice along one of them becomes one unit, the first by
    default. With a `key` (a reshape node), a choice that leaves fewer than two separate units (the q/k/v axis
    of a fused (3, heads, head_dim) split: attention couples the thirds, so slicing them merges everything)
    is recorded in ctx.splits; the analysis is then rerun with the next axis (the heads)."""
    out = compress(ctx.canon(out))
    src_axes = max((len(varying_axes(ctx.canon(lab))) for lab in sources), default=0)
    vary = sorted(varying_axes(out))
    if len(vary) >= 2 and len(vary) > src_axes:
        lead = vary[min(ctx.split_choice.get(key, 0), len(vary) - 1)] if key else vary[0]
        if key:
            ctx.splits[key] = (out.clone(), lead, len(vary))
        for i in range(out.shape[lead]):
            ctx.uf.union_all(out.select(lead, i).numpy())
        out = compress(ctx.canon(out))
    return out


def getitem(ctx, node):
    src = node.args[0]
    if ctx.is_tensor(src):
        return movement(ctx, node)
    lab = ctx.labels.get(src.name) if hasattr(src, "name") else None
    if isinstance(lab, tuple):  # an element of a split/chunk result
        return lab[node.args[1]]
    x = _size_source(src)
    if x is not None and ctx.is_tensor(x):  # sizes taken out of x.shape / x.size()
        idx = node.args[1]
        if isinstance(idx, int) and not node.users:  # `b, n, _ = x.shape`: a size never used fixes nothing
            return None
        if isinstance(idx, int):  # a number that follows the channels, or a fixed one (the axis kept whole)
            read_size(ctx, node, x, idx)
        else:
            _block_axes(ctx, x, list(range(len(ctx.shape(x))))[idx])
    return None


def _reduce_dims(node, ndim: int) -> list[int] | None:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if dim is None:
        return None
    dims = [dim] if isinstance(dim, int) else list(dim)
    return sorted(d % ndim for d in dims)


def reduce(ctx, node):
    """mean / sum / amax over axes: the result keeps the channels of the axes that remain."""
    x = node.args[0]
    if not ctx.is_tensor(x) or ctx.shape(node) is None:
        return None
    shp = tuple(ctx.shape(x))
    nd = len(shp)
    dims = _reduce_dims(node, nd)
    out_nd = len(ctx.shape(node))
    if dims is None:
        return block_const(out_nd)
    lab = ctx.canon(align(ctx.lab(x), nd))
    keep = [ax for ax in range(nd) if ax not in dims]
    if not (varying_axes(lab) & set(keep)):
        return block_const(out_nd)
    full = lab.expand(shp).permute(*keep, *dims).reshape(int(np.prod([shp[a] for a in keep])), -1).numpy()
    for row in np.unique(full, axis=0):
        ctx.uf.union_all(row)
    import torch

    sliced = lab.expand(shp)
    for d in sorted(dims, reverse=True):
        sliced = sliced.narrow(d, 0, 1)
    if out_nd == nd - len(dims):
        sliced = sliced.reshape([shp[a] for a in keep])
    return compress(ctx.canon(torch.as_tensor(sliced)))


def _batched_union(ctx, labs: list, batch_shape: tuple, out_shape: tuple):
    """Merge everything each batch slice touches into one unit; the output carries that unit."""
    import torch

    nb = len(batch_shape)
    out = torch.zeros(batch_shape, dtype=torch.int64)
    flat = out.reshape(-1)
    exp = [lab.expand(*batch_shape, *lab.shape[nb:]).reshape(int(np.prod(batch_shape or (1,))), -1) for lab in labs]
    for b in range(flat.numel()):
        atoms = np.concatenate([e[b].numpy() for e in exp])
        ctx.uf.union_all(atoms)
        flat[b] = int(atoms[0])
    out = out.reshape(*batch_shape, *([1] * (len(out_shape) - nb)))
    return compress(ctx.canon(out))


def matmul(ctx, node):
    """a @ b: the contracted axis couples a and b; per batch index (attention heads) one unit."""
    args = _tensor_args(ctx, node)
    out_shape = tuple(ctx.shape(node))
    if len(args) != 2 or len(out_shape) < 2:
        return unknown(ctx, node)
    a, b = args
    sa, sb = tuple(ctx.shape(a)), tuple(ctx.shape(b))
    if len(sa) < 2 or len(sb) < 2:
        return unknown(ctx, node)
    batch = out_shape[:-2]
    la = ctx.canon(align(ctx.lab(a), len(out_shape)))
    lb = ctx.canon(align(ctx.lab(b), len(out_shape)))
    return _batched_union(ctx, [la, lb], batch, out_shape)


def einsum(ctx, node):
    """torch.einsum as attention writes it: one operand with its axes reordered ('bhtd->bthd': the labels are
    permuted), or two operands whose shared output letters are batch axes ('bhqd,bhkd->bhqk': per batch index
    (head) one unit, as matmul). Anything else (ellipsis, a diagonal, three operands) is not understood."""
    eq = node.args[0] if node.args and isinstance(node.args[0], str) else None
    ops = [a for a in ctx.flat_args(node) if ctx.is_tensor(a)]
    out_shape = ctx.shape(node)
    if eq is None or "..." in eq or "->" not in eq or not isinstance(out_shape, tuple) or len(ops) not in (1, 2):
        return unknown(ctx, node)
    ins, out = eq.replace(" ", "").split("->")
    ins = ins.split(",")
    if len(ins) != len(ops) or any(len(set(t)) != len(t) or len(t) != len(ctx.shape(a)) for t, a in zip(ins, ops)) \
            or len(set(out)) != len(out):
        return unknown(ctx, node)
    labs = [align(ctx.lab(a), len(t)) for t, a in zip(ins, ops)]
    if len(ops) == 1:
        if sorted(ins[0]) != sorted(out):
            return unknown(ctx, node)
        return labs[0].permute(*[ins[0].index(c) for c in out]).contiguous()
    batch = [c for c in out if c in ins[0] and c in ins[1]]
    if not batch:  # a contraction with no batch axis (a Linear written as einsum): its inputs stay whole
        return unknown(ctx, node)
    firsts = [lab.permute(*[t.index(c) for c in batch + [c for c in t if c not in batch]]) for t, lab in zip(ins, labs)]
    sizes = tuple(out_shape[out.index(c)] for c in batch)
    merged = _batched_union(ctx, firsts, sizes, (*sizes, *([1] * (len(out) - len(batch)))))
    merged = align(merged, len(out)).reshape(*merged.shape[:len(batch)], *([1] * (len(out) - len(batch))))
    order = batch + [c for c in out if c not in batch]
    return merged.permute(*[order.index(c) for c in out]).contiguous()


def sdpa(ctx, node):
    """F.scaled_dot_product_attention: per batch index (head) one unit, as matmul. An attn_mask is added to the
    (..., Tq, Tk) scores: where it varies along the head axes (T5's relative position bias, ALiBi slopes, Swin's
    bias table) its heads are the heads' (a pruned head takes its bias slice along); one broadcast over them (a
    padding mask) adds nothing. It was ignored: a pruned model with a per-head bias did not run (exit 4)."""
    args = _tensor_args(ctx, node)
    out_shape = tuple(ctx.shape(node))
    labs = [ctx.canon(align(ctx.lab(a), len(out_shape))) for a in args[:3]]
    out = _batched_union(ctx, labs, out_shape[:-2], out_shape)
    mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 else None)
    if not ctx.is_tensor(mask):
        return out
    nd, nb = len(out_shape), len(out_shape) - 2
    shp = (1,) * (nd - len(ctx.shape(mask))) + tuple(ctx.shape(mask))
    lab = align(ctx.lab(mask), nd)
    if varying_axes(lab) - set(range(nb)):  # labels along the query/key axes: not a per-head tensor
        ctx.block(lab)
        ctx.block(out)
        return out
    heads = varying_axes(align(out, nd))
    if {ax for ax in range(nb) if shp[ax] == 1 and out_shape[ax] > 1} & heads:
        return out  # broadcast over the heads: indexes none of them
    batch = out_shape[:nb]
    pairs = np.stack([lab[(..., 0, 0)].expand(batch).reshape(-1).numpy(),
                      align(out, nd)[(..., 0, 0)].expand(batch).reshape(-1).numpy()], 1)
    for a, b in np.unique(pairs, axis=0):
        ctx.uf.union(a, b)
    return out


def last_axis_norm(ctx, node):
    """F.layer_norm / F.rms_norm over the last axis (a custom channels-last LayerNorm2d calls it): the affine
    weight and bias follow that axis's channels; the output keeps the input's labels. Normalizing over
    several axes fixes their shape (blocked)."""
    x = node.args[0]
    norm_shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
    norm_shape = [norm_shape] if isinstance(norm_shape, int) else norm_shape
    if not ctx.is_tensor(x) or not isinstance(norm_shape, (list, tuple)) or len(norm_shape) != 1:
        return unknown(ctx, node)
    shp = tuple(ctx.shape(x))
    affine = _tensor_args(ctx, node)[1:]
    if any(tuple(ctx.shape(a)) != (shp[-1],) for a in affine):
        return unknown(ctx, node)
    atoms = ctx.channel_atoms(ctx.lab(x), shp, len(shp) - 1)
    for a in affine:
        for p, q in zip(ctx.channel_atoms(ctx.lab(a), ctx.shape(a), 0), atoms):
            ctx.uf.union(p, q)
    return ctx.lab(x)


def meta(ctx, node):
    """size(), shape, dim(): no tensor result. A size read from an axis whose channels can be pruned is blocked
    (the model computes with that number: `b, n, d = x.shape; ... reshape(b, n, heads, d // heads)`); reading
    the whole size tuple blocks only the axes later taken out of it (getitem)."""
    if node.target == "size" and ctx.is_tensor(node.args[0]):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dim, int):
            read_size(ctx, node, node.args[0], dim)
    return None


def _reshape_size_use(user, node) -> bool:
    """`user` is a view/reshape/expand taking the scalar `node` as one whole axis size (`y.view(b, c, 1, 1)`)."""
    if user.target not in ("view", "reshape", "expand", torch_reshape()) or not user.args or user.args[0] is node:
        return False
    flat: list = []
    for a in [*user.args[1:], *user.kwargs.values()]:
        flat += list(a) if isinstance(a, (list, tuple)) else [a]
    return any(a is node for a in flat)


def read_size(ctx, node, x, axis: int) -> None:
    """`node` is x's size along `axis`. Used only as whole axis sizes of reshapes (SENet's `b, c, _, _ = x.size();
    y = pool(x).view(b, c); ... fc(y).view(b, c, 1, 1)`), x's channels stay prunable: where the reshaped axis
    keeps another count than x's pruned axis, the pruned graph gets that count as a literal (apply.py), else the
    number follows x at run time. Any other use (`c // heads`, a new tensor's size) makes it a fixed number and
    keeps the axis whole."""
    nd = len(ctx.shape(x))
    if node.users and all(_reshape_size_use(u, node) for u in node.users):
        ctx.follow_sizes[node.name] = (x, [axis % nd])
        return
    _block_axes(ctx, x, [axis])
    ctx.static_sizes.add(node.name)


def _block_axes(ctx, x, axes) -> bool:
    """Keep x's channel axes among `axes` whole; True when one was a channel axis (its size is a fixed number)."""
    nd = len(ctx.shape(x))
    lab = ctx.canon(align(ctx.lab(x), nd))
    if varying_axes(lab) & {a % nd for a in axes}:
        ctx.block(lab)
        return True
    return False


def _size_source(node):
    """The tensor whose size tuple `node` is (x.size() or x.shape), else None."""
    if getattr(node, "op", None) == "call_method" and node.target == "size" and len(node.args) == 1:
        return node.args[0]
    if getattr(node, "op", None) == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
        return node.args[0]
    return None


def factory(ctx, node):
    """New tensors (zeros, arange ...): fixed shapes, not channels of anything."""
    shp = ctx.shape(node)
    return None if shp is None else block_const(len(shp))


def repeat_interleave(ctx, node):
    """x.repeat_interleave(r, dim): each slice along `dim` repeated r times in place (grouped-query attention: kv head
    j serves q heads j*r .. j*r + r - 1, so attention couples them into one unit)."""
    x = node.args[0]
    reps = node.args[1] if len(node.args) > 1 else node.kwargs.get("repeats")
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if not ctx.is_tensor(x) or not isinstance(reps, int) or not isinstance(dim, int) or ctx.shape(node) is None:
        return unknown(ctx, node)
    lab = align(ctx.lab(x), len(ctx.shape(x)))
    return lab if lab.shape[dim] == 1 else compress(lab.repeat_interleave(reps, dim=dim))


def unknown(ctx, node):
    for a in _tensor_args(ctx, node):
        ctx.block(ctx.lab(a))
    shp = ctx.shape(node)
    if isinstance(shp, list):  # a tuple of tensors
        return tuple(block_const(len(s)) for s in shp)
    return None if shp is None else block_const(len(shp))


def _table() -> dict[object, Callable]:
    import torch
    import torch.nn.functional as F

    t: dict[object, Callable] = {}
    for f in (operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
              operator.iadd, operator.imul, operator.isub, operator.itruediv,
              torch.add, torch.sub, torch.mul, torch.div, torch.where, torch.maximum, torch.minimum, torch.pow,
              "add", "sub", "mul", "div", "masked_fill", "where", "pow", "add_", "mul_", "maximum", "minimum",
              "type_as"):
        t[f] = elementwise
    for f in (F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.leaky_relu,
              F.elu, F.softmax, F.log_softmax, F.dropout, F.normalize, torch.relu, torch.sigmoid, torch.tanh,
              torch.softmax, torch.log_softmax, torch.exp, torch.sqrt, torch.rsqrt, torch.abs, torch.neg,
              torch.clamp, torch.erf, torch.nn.functional.mish, operator.neg, F.hardtanh, F.relu6, F.softplus,
              F.selu, F.celu, F.logsigmoid, F.softsign, F.hardshrink, F.softshrink, F.tanhshrink, F.softmin,
              F.threshold, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
              "relu", "sigmoid", "tanh", "softmax", "log_softmax", "exp", "sqrt", "rsqrt", "abs", "neg", "clamp",
              "clamp_min", "clamp_max", "to", "float", "half", "double", "contiguous", "clone", "detach", "relu_",
              "erf", "type"):
        t[f] = keep_first
    for f in (torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.cat, torch.concat, torch.stack,
              torch.split, torch.chunk, torch.squeeze, torch.unsqueeze, torch.narrow, torch.unbind,
              torch.movedim,
              "view", "reshape", "permute", "transpose", "flatten", "unflatten", "squeeze", "unsqueeze",
              "split", "chunk", "narrow", "expand", "expand_as", "view_as", "reshape_as", "movedim", "unbind",
              "repeat", "select"):
        t[f] = movement
    for f in (torch.log, torch.log1p, torch.expm1, torch.square, torch.reciprocal, torch.clip, torch.sign, torch.sin,
              torch.cos, torch.round, torch.floor, torch.clamp_min, torch.clamp_max, torch.true_divide, torch.rsub,
              torch.floor_divide, torch.lerp, torch.addcmul, torch.nan_to_num, torch.relu_, torch.sigmoid_, F.relu_,
              F.hardtanh_, F.elu_, F.leaky_relu_, F.threshold_,
              "sub_", "div_", "pow_", "clamp_", "clamp_min_", "clamp_max_", "clip", "clip_", "sigmoid_", "tanh_",
              "exp_", "abs_", "neg_", "sqrt_", "rsqrt_", "log", "log_", "log1p", "expm1", "square", "square_",
              "reciprocal", "sign", "sin", "cos", "floor", "round", "true_divide", "rsub", "lerp", "addcmul",
              "nan_to_num", "masked_fill_", "bool", "long", "int", "bfloat16", "logical_not"):
        t.setdefault(f, elementwise)  # in-place variants and more per-element math: operands share channels
    t[operator.getitem] = getitem
    t[F.glu] = glu
    t[F.pad] = pad
    for f in (torch.repeat_interleave, "repeat_interleave"):
        t[f] = repeat_interleave
    for f in (F.pixel_shuffle, F.pixel_unshuffle, torch.pixel_shuffle, torch.pixel_unshuffle):
        t[f] = movement
    for f in (torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"):
        t[f] = reduce
    for f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.avg_pool1d, F.avg_pool2d,
              F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
              F.adaptive_max_pool3d, F.lp_pool1d, F.lp_pool2d, F.interpolate, F.upsample, F.upsample_nearest,
              F.upsample_bilinear):
        t[f] = pool_fn
    for f in (torch.matmul, torch.bmm, operator.matmul, "matmul", "bmm"):
        t[f] = matmul
    t[torch.einsum] = einsum
    t[F.scaled_dot_product_attention] = sdpa
    for f in (F.layer_norm, getattr(F, "rms_norm", None)):
        if f is not None:
            t[f] = last_axis_norm
    for f in ("size", "dim", "numel", getattr):
        t[f] = meta
    for f in (torch.zeros, torch.ones, torch.arange, torch.full, torch.empty, torch.tensor, torch.zeros_like,
              torch.ones_like, torch.full_like, torch.finfo, "new_zeros", "new_ones", "new_full", "new_empty"):
        t[f] = factory
    return t


def pool_fn(ctx, node):
    """Functional pooling and resizing (interpolate): channel axis 1 passes through; spatial axes change size."""
    if isinstance(ctx.shape(node), list):  # return_indices=True: (values, indices)
        return unknown(ctx, node)
    x = node.args[0]
    return ctx.per_channel(ctx.lab(x), ctx.shape(x), ctx.shape(node), axis=1)


def pad(ctx, node):
    """F.pad (causal / same padding of a TCN's time axis): the padded axes change size and must not carry channels
    (then they are blocked); every other axis keeps its labels."""
    x = node.args[0]
    if not ctx.is_tensor(x) or ctx.shape(node) is None:
        return unknown(ctx, node)
    return ctx.per_channel(ctx.lab(x), ctx.shape(x), ctx.shape(node))


_TABLE: dict[object, Callable] | None = None


def rule_for(target) -> Callable:
    global _TABLE
    if _TABLE is None:
        _TABLE = _table()
    try:
        return _TABLE.get(target, unknown)
    except TypeError:  # unhashable target
        return unknown


__all__ = ["BLOCK", "rule_for"]
