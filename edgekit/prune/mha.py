"""torch.nn.MultiheadAttention with whole heads pruned.

nn.MultiheadAttention ties its inner width (heads x head_dim) to the model width it reads and writes
(`embed_dim`), so it cannot hold fewer heads than the width allows. A pruned one is rebuilt as
PrunedMultiheadAttention: the same parameters (in_proj_weight or q/k/v_proj_weight, in_proj_bias, out_proj)
with only the kept heads' rows, the same call signature and results, `embed_dim` still the model width and
`num_heads` the kept heads. The handler (handlers.MultiheadAttentionHandler) only prunes heads when this
module can reproduce the call: batched inputs, no 3-D (per-head) attn_mask, no bias_k/bias_v/add_zero_attn,
attention weights unused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn  # imported lazily by the pruning code only


class PrunedMultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, kdim: int | None = None,
                 vdim: int | None = None, bias: bool = True, dropout: float = 0.0, batch_first: bool = False,
                 packed: bool = True, device=None, dtype=None) -> None:
        import torch

        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first, self.packed = dropout, batch_first, packed
        # torch's fused TransformerEncoderLayer / nested-tensor paths read this and assume heads x head_dim ==
        # embed_dim: False keeps them off (the layer then calls this module)
        self._qkv_same_embed_dim = False
        inner = num_heads * head_dim
        if packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, **kw))
            for p in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(p, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(inner, embed_dim, **kw))
            self.k_proj_weight = nn.Parameter(torch.empty(inner, self.kdim, **kw))
            self.v_proj_weight = nn.Parameter(torch.empty(inner, self.vdim, **kw))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, **kw)

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True, attn_mask=None,
                average_attn_weights: bool = True, is_causal: bool = False):
        import torch
        import torch.nn.functional as F

        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        inner = self.num_heads * self.head_dim
        if self.packed:
            wq, wk, wv = self.in_proj_weight.split(inner)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = self.in_proj_bias.split(inner) if self.in_proj_bias is not None else (None, None, None)
        n, length, s = query.shape[0], query.shape[1], key.shape[1]

        def heads(t, w, b):
            return F.linear(t, w, b).reshape(n, -1, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(query, wq, bq), heads(key, wk, bk), heads(value, wv, bv)
        scores = (q @ k.transpose(-2, -1)) * float(self.head_dim) ** -0.5
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, s, dtype=torch.bool, device=query.device).triu(1)
        for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        probs = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = self.out_proj((probs @ v).transpose(1, 2).reshape(n, length, inner))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, probs.mean(1) if average_attn_weights else probs


def rebuild(m, keep: dict) -> PrunedMultiheadAttention:
    """`m` (nn.MultiheadAttention or an already pruned one) with only the rows/columns in keep[param][dim]."""
    import torch

    rows = keep.get("out_proj.weight", {}).get(1)
    inner = m.out_proj.in_features
    rows = np.arange(inner) if rows is None else rows
    ref = m.out_proj.weight
    new = PrunedMultiheadAttention(m.embed_dim, len(rows) // m.head_dim, m.head_dim, m.kdim, m.vdim,
                                   m.in_proj_bias is not None, m.dropout, m.batch_first, m.in_proj_weight is not None,
                                   device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        for pname, t in m.named_parameters():
            for dim, idx in keep.get(pname, {}).items():
                t = t.index_select(dim, torch.as_tensor(idx, dtype=torch.long))
            new.get_parameter(pname).copy_(t)
    new.train(m.training)
    return new


def mha_macs(m, q_shape: tuple, k_shape: tuple, inner: int) -> int:
    """An untraced nn.MultiheadAttention: q/k/v projections into `inner` channels, the two attention products,
    the output projection."""
    batch_first = m.batch_first or len(q_shape) == 2
    length, s = (q_shape[-2], k_shape[-2]) if batch_first else (q_shape[0], k_shape[0])
    n = int(np.prod(q_shape[:-1])) // length
    return n * inner * (length * m.embed_dim + s * (m.kdim + m.vdim) + 2 * length * s + length * m.embed_dim)
