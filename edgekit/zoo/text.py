"""Tokenize text for the zoo's text models with a `tokenizers` tokenizer.json (no `transformers`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.errors import DataError


@lru_cache(maxsize=8)
def _load(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def tokenize_with(tokenizer_json: str | Path, texts: list[str], max_length: int = 128,
                  pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Encode `texts` -> {'input_ids', 'attention_mask'} int64 arrays of shape (len(texts), L).

    Sequences are truncated to `max_length` tokens (special tokens included) and padded with the
    tokenizer's pad id to the longest in the batch, or to exactly `pad_to` tokens when given.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise DataError("tokenize expects a list of strings")
    if not texts:
        raise DataError("tokenize got an empty list of texts")
    if max_length < 2 or (pad_to is not None and pad_to < 2):
        raise DataError(f"max_length / pad_to must be >= 2 (room for [CLS] and [SEP]), got {max_length} / {pad_to}")
    tok = _load(str(tokenizer_json))
    tok.enable_truncation(max_length=min(max_length, pad_to) if pad_to else max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]", length=pad_to)
    enc = tok.encode_batch(list(texts))
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
