"""One handler class per layer kind, found through one table (HANDLERS, matched by isinstance).

A handler does two things:
  propagate(ctx, name, module, node) -> output labels: says which parameter slices belong to which
      channel atoms (ctx.record) and creates fresh atoms for the channels the layer produces;
  rebuild(module, keep) -> a new, smaller module of the same kind, where keep[param][dim] holds the
      indices that survive along that parameter dimension.
Modules not in the table are opaque: every channel they touch is blocked.
"""

from __future__ import annotations

import functools

import numpy as np

from edgekit.prune.labels import block_const


def _idx(keep: dict, pname: str, dim: int, size: int) -> np.ndarray:
    return keep.get(pname, {}).get(dim, np.arange(size))


def _copy_params(old, new, keep: dict) -> None:
    import torch

    with torch.no_grad():
        for pname, tensor in list(old.named_parameters(recurse=False)) + list(old.named_buffers(recurse=False)):
            if tensor is None or tensor.dim() == 0:
                getattr(new, pname).copy_(tensor) if getattr(new, pname, None) is not None else None
                continue
            t = tensor
            for dim, idx in keep.get(pname, {}).items():
                t = t.index_select(dim, torch.as_tensor(idx, dtype=torch.long))
            getattr(new, pname).copy_(t)
    new.train(old.training)


def _record_affine(ctx, name: str, m, atoms) -> None:
    """A norm layer's per-channel weight and bias (when it has them) follow `atoms`."""
    for p in ("weight", "bias"):
        if getattr(m, p, None) is not None:
            ctx.record(name, p, 0, atoms, out_dim=True)


def _like(ref) -> dict:
    """device/dtype keyword arguments of a rebuilt layer (none for a layer without parameters)."""
    return {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}


def _record_outputs(ctx, name: str, m, out, weight_dim: int) -> None:
    """A layer's output channels `out`: its weight's output axis and its bias follow them."""
    ctx.record(name, "weight", weight_dim, out, out_dim=True)
    if getattr(m, "bias", None) is not None:
        ctx.record(name, "bias", 0, out, out_dim=True)


class Handler:
    types: tuple = ()
    produces = False  # creates new channels (Conv/Linear/Embedding): counts as a "layer" for first/last

    def propagate(self, ctx, name: str, module, node):
        raise NotImplementedError

    def rebuild(self, module, keep: dict):
        raise NotImplementedError


class ConvHandler(Handler):
    """Conv1d/2d/3d. groups == 1: in-channels follow the producer, out-channels are new atoms.
    Depthwise (one input channel per group): whole groups are pruned, out-channels of group j share the
    atom of input channel j. Grouped (several input channels per group): position c of every group is
    one unit, so all groups keep the same width and `groups` stays."""

    produces = True

    @property
    def types(self):  # noqa: D401
        from torch import nn

        return (nn.Conv1d, nn.Conv2d, nn.Conv3d)

    def propagate(self, ctx, name, m, node):
        x = node.args[0]
        cin = ctx.channel_atoms(ctx.lab(x), ctx.shape(x), 1)
        g, cout = m.groups, m.out_channels
        cpg, opg = m.in_channels // g, cout // g
        if g == 1:
            ctx.record(name, "weight", 1, cin)
            out = ctx.uf.new(cout)
        elif cpg == 1:
            out = np.repeat(cin, opg)
        else:
            for c in range(cpg):
                ctx.uf.union_all(cin[c::cpg])
            ctx.record(name, "weight", 1, cin[:cpg])
            out = np.tile(ctx.uf.new(opg), g)
        _record_outputs(ctx, name, m, out, 0)
        return ctx.channel_labels(out, len(ctx.shape(node)), 1)

    def rebuild(self, m, keep):
        w = m.weight
        kept_out = len(_idx(keep, "weight", 0, w.shape[0]))
        kept_in_local = len(_idx(keep, "weight", 1, w.shape[1]))
        g = m.groups
        if g > 1 and m.in_channels // g == 1:  # depthwise: groups shrink with the channels
            opg = m.out_channels // g
            g = kept_out // opg
            cin = g
        else:
            cin = kept_in_local * g
        new = type(m)(cin, kept_out, m.kernel_size, m.stride, m.padding, m.dilation, g, m.bias is not None,
                      m.padding_mode, device=w.device, dtype=w.dtype)
        _copy_params(m, new, keep)
        return new


class ConvTransposeHandler(Handler):
    """ConvTranspose1d/2d/3d (UNet up-convolutions, deconvolution heads): the weight is (in, out // groups, k...),
    so in-channels follow the producer on dim 0 and out-channels are new atoms on dim 1. Grouped ones are opaque."""

    produces = True

    @property
    def types(self):  # noqa: D401
        from torch import nn

        return (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

    def propagate(self, ctx, name, m, node):
        if m.groups != 1:
            return OpaqueHandler().propagate(ctx, name, m, node)
        x = node.args[0]
        ctx.record(name, "weight", 0, ctx.channel_atoms(ctx.lab(x), ctx.shape(x), 1))
        out = ctx.uf.new(m.out_channels)
        _record_outputs(ctx, name, m, out, 1)
        return ctx.channel_labels(out, len(ctx.shape(node)), 1)

    def rebuild(self, m, keep):
        w = m.weight
        new = type(m)(len(_idx(keep, "weight", 0, w.shape[0])), len(_idx(keep, "weight", 1, w.shape[1])),
                      m.kernel_size, m.stride, m.padding, m.output_padding, m.groups, m.bias is not None, m.dilation,
                      m.padding_mode, device=w.device, dtype=w.dtype)
        _copy_params(m, new, keep)
        return new


class LinearHandler(Handler):
    """Linear: in-features follow whatever feeds the last axis (after a flatten, one channel = a block
    of features); out-features are new atoms."""

    produces = True

    @property
    def types(self):
        from torch import nn

        return (nn.Linear,)

    def propagate(self, ctx, name, m, node):
        x = node.args[0]
        shp = ctx.shape(x)
        ctx.record(name, "weight", 1, ctx.channel_atoms(ctx.lab(x), shp, len(shp) - 1))
        out = ctx.uf.new(m.out_features)
        _record_outputs(ctx, name, m, out, 0)
        nd = len(ctx.shape(node))
        return ctx.channel_labels(out, nd, nd - 1)

    def rebuild(self, m, keep):
        w = m.weight
        new = type(m)(len(_idx(keep, "weight", 1, w.shape[1])), len(_idx(keep, "weight", 0, w.shape[0])),
                      m.bias is not None, device=w.device, dtype=w.dtype)
        _copy_params(m, new, keep)
        return new


class EmbeddingHandler(Handler):
    produces = True

    @property
    def types(self):
        from torch import nn

        return (nn.Embedding,)

    def propagate(self, ctx, name, m, node):
        out = ctx.uf.new(m.embedding_dim)
        ctx.record(name, "weight", 1, out, out_dim=True)
        nd = len(ctx.shape(node))
        return ctx.channel_labels(out, nd, nd - 1)

    def rebuild(self, m, keep):
        import torch

        new = type(m)(m.num_embeddings, len(_idx(keep, "weight", 1, m.embedding_dim)), m.padding_idx,
                      m.max_norm, m.norm_type, m.scale_grad_by_freq, m.sparse,
                      device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(m.weight.index_select(1, torch.as_tensor(_idx(keep, "weight", 1, m.embedding_dim))))
        return new


class BatchNormHandler(Handler):
    """BatchNorm and InstanceNorm: per-channel parameters and running statistics follow channel axis 1
    (instance statistics are per channel too, so removing a channel changes no other)."""

    @property
    def types(self):
        from torch import nn

        return (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)

    def propagate(self, ctx, name, m, node):
        x = node.args[0]
        atoms = ctx.channel_atoms(ctx.lab(x), ctx.shape(x), 1)
        for p in ("weight", "bias", "running_mean", "running_var"):
            if getattr(m, p, None) is not None:
                ctx.record(name, p, 0, atoms, out_dim=True)
        return ctx.lab(x)

    def rebuild(self, m, keep):
        n = len(_idx(keep, "running_mean" if m.running_mean is not None else "weight", 0, m.num_features))
        ref = m.weight if m.weight is not None else m.running_mean
        new = type(m)(n, m.eps, m.momentum, m.affine, m.track_running_stats, device=ref.device, dtype=ref.dtype)
        _copy_params(m, new, keep)
        return new


class LayerNormHandler(Handler):
    """LayerNorm over the last axis only: weight/bias follow the channels of that axis."""

    @property
    def types(self):
        from torch import nn

        return (nn.LayerNorm,)

    def propagate(self, ctx, name, m, node):
        x = node.args[0]
        shp = ctx.shape(x)
        if len(m.normalized_shape) != 1:
            return OpaqueHandler().propagate(ctx, name, m, node)
        atoms = ctx.channel_atoms(ctx.lab(x), shp, len(shp) - 1)
        _record_affine(ctx, name, m, atoms)
        return ctx.lab(x)

    def rebuild(self, m, keep):
        n = len(_idx(keep, "weight", 0, m.normalized_shape[0]))
        kw = {"bias": m.bias is not None} if m.elementwise_affine else {}
        ref = m.weight if m.weight is not None else None
        new = type(m)(n, m.eps, m.elementwise_affine, **kw,
                      **_like(ref))
        _copy_params(m, new, keep)
        return new


class GroupNormHandler(Handler):
    """GroupNorm: position c of every group is one unit (as in a grouped convolution), so every group keeps
    the same width and num_groups stays; weight and bias follow the channels."""

    @property
    def types(self):
        from torch import nn

        return (nn.GroupNorm,)

    def propagate(self, ctx, name, m, node):
        x = node.args[0]
        atoms = ctx.channel_atoms(ctx.lab(x), ctx.shape(x), 1)
        cpg = m.num_channels // m.num_groups
        for c in range(cpg):
            ctx.uf.union_all(atoms[c::cpg])
        _record_affine(ctx, name, m, atoms)
        return ctx.lab(x)

    def rebuild(self, m, keep):
        n = len(_idx(keep, "weight", 0, m.num_channels)) if m.affine else m.num_channels
        ref = m.weight if m.affine else None
        new = type(m)(m.num_groups, n, m.eps, m.affine,
                      **_like(ref))
        _copy_params(m, new, keep)
        return new


class PReLUHandler(Handler):
    """PReLU: one slope per channel (axis 1) follows the channels; a single shared slope stays."""

    @property
    def types(self):
        from torch import nn

        return (nn.PReLU,)

    def propagate(self, ctx, name, m, node):
        x = node.args[0]
        if m.num_parameters > 1:
            ctx.record(name, "weight", 0, ctx.channel_atoms(ctx.lab(x), ctx.shape(x), 1), out_dim=True)
        return ctx.lab(x)

    def rebuild(self, m, keep):
        if m.num_parameters == 1:
            return m
        n = len(_idx(keep, "weight", 0, m.num_parameters))
        new = type(m)(n, device=m.weight.device, dtype=m.weight.dtype)
        _copy_params(m, new, keep)
        return new


@functools.lru_cache(maxsize=1)
def _elementwise_modules() -> tuple:
    """Every parameter-free torch.nn activation, dropout, pooling, upsampling and padding module: outputs keep
    channel axis 1."""
    from torch import nn

    kinds = []
    for mod in (nn.modules.activation, nn.modules.dropout, nn.modules.pooling, nn.modules.upsampling,
                nn.modules.padding):
        for attr in getattr(mod, "__all__", []):
            cls = getattr(mod, attr, None)
            if isinstance(cls, type) and issubclass(cls, nn.Module):
                kinds.append(cls)
    skip = (nn.MultiheadAttention, nn.PReLU, nn.GLU, nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)
    return tuple(k for k in kinds if not issubclass(k, skip)) + (nn.Identity,)


class PerChannelHandler(Handler):
    """Activations, dropout, identity, pooling and upsampling (1-, 2- and 3-D): channel axis 1 (or all axes when
    the shape is kept)."""

    @property
    def types(self):
        return _elementwise_modules()

    def propagate(self, ctx, name, m, node):
        if getattr(m, "return_indices", False):  # (values, indices): not a plain per-channel map
            return OpaqueHandler().propagate(ctx, name, m, node)
        x = node.args[0]
        return ctx.per_channel(ctx.lab(x), ctx.shape(x), ctx.shape(node), axis=1)

    def rebuild(self, m, keep):
        return m


class GLUHandler(Handler):
    """nn.GLU: channel i of both halves of its dim is one unit (ops.glu_halves)."""

    @property
    def types(self):
        from torch import nn

        return (nn.GLU,)

    def propagate(self, ctx, name, m, node):
        from edgekit.prune.ops import glu_halves

        x = node.args[0]
        return glu_halves(ctx, ctx.lab(x), ctx.shape(x), m.dim)

    def rebuild(self, m, keep):
        return m


class RNNHandler(Handler):
    """nn.LSTM / GRU / RNN (tensor input, no initial state, no LSTM projection): hidden unit j is one unit across
    every layer and direction (they share hidden_size): row j of each gate in weight_ih/weight_hh/biases, column j
    of weight_hh, and output channel j of each direction, which the next layer's weight_ih reads. The input's last
    axis follows the producer. Outputs: (output, h_n[, c_n]) labels, hidden units on the last axis."""

    produces = True

    @property
    def types(self):
        from torch import nn

        return (nn.LSTM, nn.GRU, nn.RNN)

    def propagate(self, ctx, name, m, node):
        from torch import nn

        x = node.args[0]
        if (len(node.args) > 1 or node.kwargs or not ctx.is_tensor(x) or len(ctx.shape(x)) != 3
                or getattr(m, "proj_size", 0)):  # an initial state, a PackedSequence, unbatched, projections
            return OpaqueHandler().propagate(ctx, name, m, node)
        gates = m.weight_ih_l0.shape[0] // m.hidden_size
        dirs = 2 if m.bidirectional else 1
        hid = ctx.uf.new(m.hidden_size)
        rows = np.tile(hid, gates)
        layer_in = ctx.channel_atoms(ctx.lab(x), ctx.shape(x), len(ctx.shape(x)) - 1)
        for layer in range(m.num_layers):
            for sfx in ("", "_reverse")[:dirs]:
                ctx.record(name, f"weight_ih_l{layer}{sfx}", 1, layer_in)
                for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if getattr(m, f"{p}_l{layer}{sfx}", None) is not None:
                        ctx.record(name, f"{p}_l{layer}{sfx}", 0, rows, out_dim=True)
                ctx.record(name, f"weight_hh_l{layer}{sfx}", 1, hid)
            layer_in = np.tile(hid, dirs)
        out, state = ctx.channel_labels(layer_in, 3, 2), ctx.channel_labels(hid, 3, 2)
        return (out, (state, state.clone())) if isinstance(m, nn.LSTM) else (out, state)

    def rebuild(self, m, keep):
        from torch import nn

        w = m.weight_hh_l0
        extra = {"nonlinearity": m.nonlinearity} if isinstance(m, nn.RNN) else {}
        new = type(m)(len(_idx(keep, "weight_ih_l0", 1, m.input_size)), len(_idx(keep, "weight_hh_l0", 1, w.shape[1])),
                      num_layers=m.num_layers, bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
                      bidirectional=m.bidirectional, device=w.device, dtype=w.dtype, **extra)
        _copy_params(m, new, keep)
        return new


class FlattenHandler(Handler):
    @property
    def types(self):
        from torch import nn

        return (nn.Flatten, nn.Unflatten)

    def propagate(self, ctx, name, m, node):
        import torch

        x = node.args[0]
        lab = ctx.lab(x)
        full = lab.expand(*ctx.shape(x)) if lab.dim() == len(ctx.shape(x)) else lab
        if isinstance(m, torch.nn.Flatten):
            out = full.flatten(m.start_dim, m.end_dim)
        else:
            out = full.unflatten(m.dim, m.unflattened_size)
        from edgekit.prune.labels import compress

        return compress(out)

    def rebuild(self, m, keep):
        return m


class PixelShuffleHandler(Handler):
    """PixelShuffle / PixelUnshuffle move channels to space and back: the module runs on the labels, so a
    shuffled channel's r*r source channels become one unit (whole groups pruned) and an unshuffled
    channel's r*r outputs follow it."""

    @property
    def types(self):
        from torch import nn

        return (nn.PixelShuffle, nn.PixelUnshuffle)

    def propagate(self, ctx, name, m, node):
        from edgekit.prune.labels import align
        from edgekit.prune.ops import rectangular

        x = node.args[0]
        shp = ctx.shape(x)
        lab = ctx.lab(x)
        return rectangular(ctx, m(align(lab, len(shp)).expand(*shp).contiguous()), [lab])

    def rebuild(self, m, keep):
        return m


class TorchTransformerHandler(Handler):
    """torch.nn's own Transformer / TransformerEncoder(Layer) / TransformerDecoder(Layer): a leaf whose forward
    cannot be traced (fused fast paths, nested-tensor checks). Internal to each layer and pruned: the FFN
    intermediate channels (linear1 out, linear2 in) and the heads of its attention modules (self_attn, a
    decoder's multihead_attn; rebuilt as mha.PrunedMultiheadAttention, which also keeps torch's fused
    encoder path off), the latter only when the call is batched and every mask it gets is at most 2-D (a 3-D
    mask is per head). The model width, which its inputs and outputs carry, stays."""

    @property
    def types(self):
        from torch import nn

        return (nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder, nn.TransformerEncoderLayer,
                nn.TransformerDecoderLayer)

    def propagate(self, ctx, name, m, node):
        from torch import nn

        out = OpaqueHandler().propagate(ctx, name, m, node)
        for sub_name, sub in m.named_modules():
            if isinstance(sub, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
                prefix = ".".join(p for p in (name, sub_name) if p)
                ffn = ctx.uf.new(sub.linear1.out_features)
                ctx.record(f"{prefix}.linear1", "weight", 0, ffn, out_dim=True)
                if sub.linear1.bias is not None:
                    ctx.record(f"{prefix}.linear1", "bias", 0, ffn, out_dim=True)
                ctx.record(f"{prefix}.linear2", "weight", 1, ffn)
                if self._heads_prunable(m, node, ctx):
                    for attn in ("self_attn", "multihead_attn"):
                        if isinstance(getattr(sub, attn, None), MultiheadAttentionHandler().types):
                            MultiheadAttentionHandler.record_heads(ctx, f"{prefix}.{attn}", getattr(sub, attn))
        return out

    @staticmethod
    def _heads_prunable(m, node, ctx) -> bool:
        import inspect

        try:
            call = inspect.signature(m.forward).bind(*node.args, **node.kwargs).arguments
        except TypeError:
            return False
        for arg, value in call.items():
            if not ctx.is_tensor(value):
                if value is not None and not isinstance(value, bool):
                    return False
                continue
            rank = len(ctx.shape(value))
            if ("mask" in arg and rank > 2) or ("mask" not in arg and rank != 3):
                return False
        return True

    def rebuild(self, m, keep):
        return m  # its linear1 / linear2 are rebuilt by name


class MultiheadAttentionHandler(Handler):
    """nn.MultiheadAttention (a leaf): the model width it reads and writes stays; its heads are units, each one
    head_dim rows in each of the q, k and v parts of the input projection (packed in_proj_weight or separate
    q/k/v_proj_weight, and in_proj_bias) and head_dim columns of out_proj. Rebuilt as mha.PrunedMultiheadAttention.
    Heads stay whole when the call is one it cannot reproduce: unbatched inputs, a per-head (3-D) attn_mask,
    bias_k/bias_v/add_zero_attn, or attention weights used by the model (an average over the heads)."""

    @property
    def types(self):
        from torch import nn

        from edgekit.prune.mha import PrunedMultiheadAttention

        return (nn.MultiheadAttention, PrunedMultiheadAttention)

    def propagate(self, ctx, name, m, node):
        out = OpaqueHandler().propagate(ctx, name, m, node)
        if not self._heads_prunable(ctx, m, node):
            return out
        self.record_heads(ctx, name, m)
        return out

    @staticmethod
    def record_heads(ctx, name: str, m) -> None:
        """Each head of `m` one unit: its q, k, v rows of the input projection and its out_proj columns."""
        if getattr(m, "bias_k", None) is not None or getattr(m, "add_zero_attn", False):
            return
        rows = np.repeat(ctx.uf.new(m.num_heads), m.head_dim)
        thirds = np.concatenate([rows] * 3)
        if m.in_proj_weight is not None:
            ctx.record(name, "in_proj_weight", 0, thirds, out_dim=True)
        else:
            for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                ctx.record(name, p, 0, rows, out_dim=True)
        if m.in_proj_bias is not None:
            ctx.record(name, "in_proj_bias", 0, thirds, out_dim=True)
        ctx.record(name, "out_proj.weight", 1, rows)

    @staticmethod
    def _heads_prunable(ctx, m, node) -> bool:
        import operator

        args = {**dict(zip(("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask"), node.args)),
                **node.kwargs}
        if any(not ctx.is_tensor(args.get(k)) or len(ctx.shape(args[k])) != 3 for k in ("query", "key", "value")):
            return False
        mask = args.get("attn_mask")
        if mask is not None and (not ctx.is_tensor(mask) or len(ctx.shape(mask)) != 2):
            return False
        return all(u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0 for u in node.users)

    def rebuild(self, m, keep):
        from edgekit.prune.mha import rebuild

        return rebuild(m, keep)


class OpaqueHandler(Handler):
    """A layer the analysis does not understand: its inputs' channels are blocked, outputs are fixed."""

    types = ()

    def propagate(self, ctx, name, m, node):
        for a in node.args:
            if ctx.is_tensor(a):
                ctx.block(ctx.lab(a))
        shp = ctx.shape(node)
        if isinstance(shp, list):
            return tuple(block_const(len(s)) for s in shp)
        return None if shp is None else block_const(len(shp))

    def rebuild(self, m, keep):
        return m


HANDLERS: list[Handler] = [ConvHandler(), ConvTransposeHandler(), LinearHandler(), EmbeddingHandler(), BatchNormHandler(),
                           LayerNormHandler(), GroupNormHandler(), PReLUHandler(), PerChannelHandler(),
                           FlattenHandler(), GLUHandler(), RNNHandler(), PixelShuffleHandler(), TorchTransformerHandler(), MultiheadAttentionHandler()]


def handler_for(module) -> Handler:
    for h in HANDLERS:
        if isinstance(module, h.types):
            return h
    return OpaqueHandler()
