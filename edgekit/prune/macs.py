"""Multiply-accumulate and parameter counts, from the traced graph (conv, linear, matmul, attention)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np


def _prod(s) -> int:
    return int(np.prod(s)) if s else 1


def torch_transformer_macs(name: str, m, inp: tuple, width_of: Callable[[str, int], int] | None = None) -> int:
    """MACs of torch.nn's Transformer leaves (untraced): per encoder/decoder layer and token, for each attention
    module the q/k/v/out projections (4 E I) and the attention products (2 L I; a decoder layer's cross-attention
    counted at the same length), I its inner width (heads x head_dim; `width_of(attn, I, ("out_proj.weight", 1))`
    kept), and the FFN (2 E F, F = `width_of(layer.linear1, F)` kept channels)."""
    from torch import nn

    tokens, total = _prod(inp[:-1]), 0
    for sub_name, sub in m.named_modules():
        if not isinstance(sub, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue
        prefix = ".".join(p for p in (name, sub_name) if p)
        e, f = sub.linear1.in_features, sub.linear1.out_features
        f = width_of(f"{prefix}.linear1", f) if width_of else f
        length = inp[1] if sub.self_attn.batch_first and len(inp) > 2 else inp[0]
        for attn in ("self_attn", "multihead_attn"):
            a = getattr(sub, attn, None)
            if a is not None:
                inner = a.out_proj.in_features
                inner = width_of(f"{prefix}.{attn}", inner, ("out_proj.weight", 1)) if width_of else inner
                total += tokens * (4 * e * inner + 2 * length * inner)
        total += tokens * 2 * e * f
    return total


def rnn_macs(m, inp: tuple, hidden: int | None = None) -> int:
    """MACs of an nn.LSTM / GRU / RNN on an input of shape `inp` (one step per token and direction): each layer's
    gates (4, 3 or 1) x hidden x (layer input + recurrent input), plus an LSTM's projection (proj_size).
    `hidden`: the kept hidden units (pruning's prediction), else the module's."""
    from torch import nn

    gates = 4 if isinstance(m, nn.LSTM) else 3 if isinstance(m, nn.GRU) else 1
    dirs, hidden = 2 if m.bidirectional else 1, hidden or m.hidden_size
    out = getattr(m, "proj_size", 0) or hidden
    per_token, width = 0, inp[-1]
    for _ in range(m.num_layers):
        per_token += dirs * (gates * hidden * (width + out) + (hidden * out if out != hidden else 0))
        width = dirs * out
    return _prod(inp[:-1]) * per_token


TORCH_TRANSFORMER_LEAVES = ("Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
                            "TransformerDecoderLayer")


def MHA_LEAVES() -> tuple:  # noqa: N802
    from torch import nn

    from edgekit.prune.mha import PrunedMultiheadAttention

    return (nn.MultiheadAttention, PrunedMultiheadAttention)


def graph_macs(gm, shape_of: Callable[[Any], tuple | None], width_of: Callable[[str, int], int] | None = None) -> int:
    """Sum over the graph's nodes; `shape_of(node)` gives a node's (possibly predicted) output shape and
    `width_of(module, full, (param, dim))` the kept channels inside an untraced leaf (torch.nn Transformer layers'
    FFN: the weight's rows; MultiheadAttention: out_proj's columns, heads x head_dim)."""
    import operator

    import torch
    import torch.nn.functional as F
    from torch import nn

    modules = dict(gm.named_modules())
    total = 0
    for node in gm.graph.nodes:
        out = shape_of(node)
        if node.op == "call_module" and isinstance(modules[node.target], (*MHA_LEAVES(), nn.RNNBase)):
            out = shape_of(node.args[0])  # its result is a tuple (output, weights or None / the last states)
        if not isinstance(out, tuple):
            continue
        if node.op == "call_module":
            m = modules[node.target]
            inp = shape_of(node.args[0])
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                per_group = 1 if m.groups == m.in_channels else inp[1] // m.groups
                total += _prod(out) * per_group * _prod(m.kernel_size)
            elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                total += _prod(inp) * (out[1] // m.groups) * _prod(m.kernel_size)
            elif isinstance(m, nn.Linear):
                total += _prod(out) * inp[-1]
            elif type(m).__name__ in TORCH_TRANSFORMER_LEAVES and type(m).__module__.startswith("torch.nn"):
                total += torch_transformer_macs(node.target, m, inp, width_of)
            elif isinstance(m, nn.RNNBase):
                hidden = width_of(node.target, m.hidden_size, ("weight_hh_l0", 1)) if width_of else None
                total += rnn_macs(m, inp, hidden)
            elif isinstance(m, MHA_LEAVES()):
                from edgekit.prune.mha import mha_macs

                inner = m.out_proj.in_features
                inner = width_of(node.target, inner, ("out_proj.weight", 1)) if width_of else inner
                total += mha_macs(m, inp, shape_of(node.args[1] if len(node.args) > 1 else node.kwargs["key"]), inner)
        elif node.target in (torch.matmul, torch.bmm, operator.matmul, "matmul", "bmm"):
            a = shape_of(node.args[0])
            if isinstance(a, tuple):
                total += _prod(out) * a[-1]
        elif node.target is F.scaled_dot_product_attention:
            q, k = shape_of(node.args[0]), shape_of(node.args[1])
            total += _prod(q[:-1]) * k[-2] * (q[-1] + out[-1])
        elif node.op == "call_function" and node.target in _functional_layers():
            total += _functional_macs(node, out, shape_of)
    return int(total)


@functools.lru_cache(maxsize=1)
def _functional_layers() -> dict:
    """F.linear / F.conv*d / F.conv_transpose*d called on a weight tensor (a decoder reusing its encoder's
    weights, a weight-standardized conv written in the parent module): kind of each."""
    import torch
    import torch.nn.functional as F

    kinds = {F.linear: "linear"}
    for f in (F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d):
        kinds[f] = "conv"
    for f in (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, torch.conv_transpose1d,
              torch.conv_transpose2d, torch.conv_transpose3d):
        kinds[f] = "transposed"
    return kinds


def _functional_macs(node, out: tuple, shape_of) -> int:
    """MACs of a functional layer from its weight's shape: linear (out, in); conv (out, in / groups, k...);
    transposed conv (in, out / groups, k...), one weight slice per input element."""
    w = shape_of(node.args[1] if len(node.args) > 1 else node.kwargs.get("weight"))
    if not isinstance(w, tuple) or len(w) < 2:
        return 0
    kind = _functional_layers()[node.target]
    if kind == "linear":
        return _prod(out) * w[1]
    if kind == "conv":
        return _prod(out) * _prod(w[1:])
    inp = shape_of(node.args[0])
    return _prod(inp) * _prod(w[1:]) if isinstance(inp, tuple) else 0


def count_macs(module, example_inputs: dict[str, Any]) -> int:
    """MACs of one forward pass on `example_inputs` (fx graph; forward hooks if the model does not trace)."""
    from edgekit.prune.graph import record_run, trace

    try:
        gm = trace(module, example_inputs)
    except Exception:  # noqa: BLE001
        return _hook_macs(module, example_inputs)
    shapes, _ = record_run(gm, example_inputs)
    return graph_macs(gm, lambda n: shapes.get(n.name) if hasattr(n, "name") else None)


def _hook_macs(module, example_inputs) -> int:
    import torch
    from torch import nn

    total = [0]

    def hook(m, inp, out):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            total[0] += out.numel() * (m.in_channels // m.groups) * _prod(m.kernel_size)
        elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            total[0] += inp[0].numel() * (m.out_channels // m.groups) * _prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total[0] += out.numel() * m.in_features
        elif isinstance(m, nn.RNNBase) and isinstance(inp[0], torch.Tensor):
            total[0] += rnn_macs(m, tuple(inp[0].shape))

    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
             nn.RNNBase)
    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            module(**example_inputs)
    finally:
        for h in hs:
            h.remove()
    return int(total[0])


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
