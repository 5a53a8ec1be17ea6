"""A small BERT encoder in plain torch (no `transformers`), written to export cleanly to ONNX.

Module names follow the Hugging Face BertModel layout (embeddings.*, encoder.layer.N.*) so a BERT
safetensors checkpoint loads with strict=True (after dropping the unused pooler and position_ids).
Export-friendly: no data-dependent Python control flow; the attention mask enters as an additive
mask; shapes are read from tensors so batch and sequence axes stay dynamic; attention is written
with MatMul/Softmax (no fused SDPA) so every backend sees plain ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MASK_VALUE = -10000.0  # added to attention scores of padding tokens (exp underflows to 0 in fp32)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, d: dict) -> BertConfig:
        if d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {d['hidden_act']!r} (only exact 'gelu')")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        pos = self.position_embeddings.weight[:seq]  # positions 0..seq-1, (seq, hidden)
        # single-segment input: every token has token_type 0
        # index_select -> one ONNX Gather with either exporter (aten.embedding's value name 'embedding'
        # collides with our output name in the dynamo exporter; weight[ids] becomes GatherND there)
        words = self.word_embeddings.weight.index_select(0, input_ids.reshape(-1))
        words = words.reshape(input_ids.shape[0], seq, words.shape[-1])
        x = words + pos + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (b, s, h*d) -> (b, h, s, d)
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim ** -0.5) + additive_mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)  # (b, h, s, d)
        ctx = ctx.transpose(1, 2)
        return ctx.reshape(ctx.shape[0], ctx.shape[1], self.heads * self.head_dim)


class AttentionOutput(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AttentionOutput(cfg)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = nn.GELU()  # exact (erf) GELU, as BERT's "gelu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class Output(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class BertEncoder(nn.Module):
    """input_ids, attention_mask (batch, seq) int64 -> last hidden states (batch, seq, hidden)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - attention_mask.to(torch.float32)[:, None, None, :]) * MASK_VALUE
        return self.encoder(self.embeddings(input_ids), additive)


class SentenceEmbedder(nn.Module):
    """BERT + masked mean pooling + L2 normalization (the sentence-transformers recipe): -> (batch, hidden)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.bert = BertEncoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.bert(input_ids, attention_mask)
        m = attention_mask.to(h.dtype).unsqueeze(-1)  # (b, s, 1)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1, eps=1e-12)


# keys in a Hugging Face BertModel checkpoint that this encoder does not use
UNUSED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def load_bert_state(model: BertEncoder, state: dict[str, torch.Tensor]) -> None:
    """Load a BertModel state dict strictly (besides UNUSED_KEYS and an optional 'bert.'/'model.' prefix)."""
    for prefix in ("bert.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    model.load_state_dict({k: v for k, v in state.items() if k not in UNUSED_KEYS}, strict=True)
