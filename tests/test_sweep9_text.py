"""Sweep 9, text: transformer text models (tests/fixtures/sweep9_text_models.py) through convert with a text file
and a tokenizer.json built here with the tokenizers library, int8, --max-drop and pruning.

Each test is a construct that once ended in an internal error, a refused model or a wrong result; models are tiny.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit import api

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import sweep9_text_models as tm  # noqa: E402

SENTENCES = [
    "The train to the city leaves from platform four at half past nine.",
    "My grandmother kept a jar of buttons on the kitchen windowsill.",
    "Please remember to water the tomatoes before you leave.",
    "The committee postponed its decision until the figures are final.",
    "A sudden gust of wind scattered the papers across the courtyard.",
    "He read the letter twice and then put it in the drawer.",
    "The museum opens late on Thursdays during the summer.",
    "We watched the boats come into the harbour at dusk.",
]


def _wordpiece(path: Path, vocab: int = tm.VOCAB) -> Path:
    """A BERT-style WordPiece tokenizer.json ([CLS] text [SEP]) trained on SENTENCES, at most `vocab` tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(SENTENCES * 4, trainers.WordPieceTrainer(
        vocab_size=vocab, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    assert tok.get_vocab_size() <= vocab
    tok.save(str(path))
    return path


def _text(folder: Path, lines: list[str], **toml: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.txt").write_text("\n".join(lines) + "\n")
    if toml:
        (folder / "text.toml").write_text("".join(f"{k} = {v!r}\n" for k, v in toml.items()).replace("'", '"'))
    if not (folder / "tokenizer.json").exists():
        _wordpiece(folder / "tokenizer.json")
    return folder / "text.txt"


def _export(model, names: list[str], path: Path, mask_dtype=torch.int64) -> Path:
    """torch.onnx.export with dynamic batch and sequence axes, as users export their text models."""
    feeds = {"input_ids": torch.randint(1, 100, (2, 7)), "token_type_ids": torch.zeros(2, 7, dtype=torch.int64),
             "attention_mask": torch.ones(2, 7, dtype=mask_dtype)}
    torch.onnx.export(model, tuple(feeds[n] for n in names), str(path), input_names=names, output_names=["out"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in names}, dynamo=False, opset_version=17)
    return path


def _passed(result: dict, targets: list[str]) -> list[dict]:
    assert [a["target"] for a in result["artifacts"]] == targets
    for a in result["artifacts"]:
        assert a["verification"]["passed"], a
        assert not a["verification"]["synthetic"]
    return [a["verification"] for a in result["artifacts"]]


def test_clip_eos_pooling_argmax_over_int64_ids_lowers_to_tflite(tmp_path: Path) -> None:
    """CLIP's text tower pools at input_ids.argmax(-1): the TFLite ARG_MAX read the int64 ids directly, which LiteRT
    refuses ('Unknown input type: 4 ... ARG_MAX failed to prepare', exit 2 for the user's model). int64 is cast to
    int32 first."""
    model = _export(tm.clip_text(), ["input_ids"], tmp_path / "clip.onnx")
    text = _text(tmp_path / "data", SENTENCES)
    shapes = {"input_ids": (1, 16)}
    result = api.convert(str(model), ["tflite"], tmp_path / "out", calibration=str(text), input_shapes=shapes,
                         task="embedding")
    (fig,) = _passed(result, ["tflite"])
    assert fig["cosine"] > 0.9999
