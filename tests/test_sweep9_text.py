"""Sweep 9, text: transformer text models (tests/fixtures/sweep9_text_models.py) through convert with a text file
and a tokenizer.json built here with the tokenizers library, int8, --max-drop and pruning.

Each test is a construct that once ended in an internal error, a refused model or a wrong result; models are tiny.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit import api
from edgekit.errors import DataError

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


def test_text_feeds_a_bool_attention_mask_and_a_padding_mask(tmp_path: Path) -> None:
    """A model whose attention_mask is bool (True = token, BERT with masked_fill(~mask)) was refused with a text file
    ("model input 'attention_mask' is bool, not token ids"). Bool masks are fed; a mask named as torch's
    key_padding_mask marks the padding instead (True = padding), else every token was masked out."""
    from edgekit.data import InputSpec
    from edgekit.data.text import read

    text = _text(tmp_path / "data", SENTENCES[:2] + [""] * 2)  # empty lines are skipped
    specs = [InputSpec("input_ids", (1, 64), "int64"), InputSpec("attention_mask", (1, 64), "bool"),
             InputSpec("padding_mask", (1, 64), "bool")]
    first = next(iter(read(str(text), specs)))
    n = int(first["attention_mask"].sum())
    assert first["attention_mask"].dtype == np.bool_ and 4 < n < 64 and first["attention_mask"][0, :n].all()
    np.testing.assert_array_equal(first["padding_mask"], ~first["attention_mask"])

    model = _export(tm.bert_classifier(), ["input_ids", "token_type_ids", "attention_mask"], tmp_path / "bert.onnx",
                    mask_dtype=torch.bool)
    result = api.convert(str(model), ["onnxruntime", "openvino"], tmp_path / "out", calibration=str(text),
                         precision="int8")
    for fig in _passed(result, ["onnxruntime", "openvino"]):
        assert fig["top1_agreement"] == 1.0


@pytest.mark.parametrize(("value", "match"), [(0, "positive whole number"), ("abc", "positive whole number"),
                                               (2, "adds 2 special tokens")])
def test_a_max_length_that_cannot_cut_sentences_is_refused(tmp_path: Path, value, match: str) -> None:
    """max_length = 0 meant 'not given' (128), "abc" was an internal error (int()), and a max_length no larger than
    the tokenizer's special tokens made the tokenizers library skip truncation: sentences came out whole."""
    from edgekit.data import InputSpec
    from edgekit.data.text import read

    text = _text(tmp_path, SENTENCES, max_length=value)
    with pytest.raises(DataError, match=match):
        list(read(str(text), [InputSpec("input_ids", ("batch", "seq"), "int64")]))


def test_the_tokenizers_own_truncation_is_the_default_length(tmp_path: Path) -> None:
    """A tokenizer.json saved with truncation (max_length 12) was cut at 128 tokens anyway."""
    from tokenizers import Tokenizer

    from edgekit.data import InputSpec
    from edgekit.data.text import read

    tok = Tokenizer.from_file(str(_wordpiece(tmp_path / "tokenizer.json")))
    tok.enable_truncation(max_length=12)
    tok.save(str(tmp_path / "tokenizer.json"))
    text = _text(tmp_path, [" ".join(SENTENCES)])
    (feed,) = list(read(str(text), [InputSpec("input_ids", ("batch", "seq"), "int64")]))
    assert feed["input_ids"].shape == (1, 12)


def test_a_sentence_longer_than_the_models_positions_is_a_data_error(tmp_path: Path) -> None:
    """A text file with a sentence longer than the model's position table (64), cut at the default 128 tokens:
    ONNX Runtime's 'indices element out of data bounds' in the reference run was an internal error (exit 1). It
    is a DataError naming the sentence's length, the lengths that ran and where to set max_length; with max_length
    = 64 in text.toml the same data converts."""
    model = _export(tm.distilbert(), ["input_ids", "attention_mask"], tmp_path / "distilbert.onnx")
    lines = SENTENCES + [" ".join(SENTENCES * 2)]  # ~ 200 tokens
    text = _text(tmp_path / "data", lines)
    with pytest.raises(DataError, match=r"fails on a sentence of 128 tokens.*up to \d+ tokens ran") as err:
        api.convert(str(model), ["onnxruntime"], tmp_path / "out", calibration=str(text))
    assert "max_length = N in text.toml" in err.value.hint and "128 tokens, the default" in err.value.hint
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    (tmp_path / "data" / "text.toml").write_text("max_length = 64\n")
    result = api.convert(str(model), ["onnxruntime"], tmp_path / "out", calibration=str(text), task="embedding")
    _passed(result, ["onnxruntime"])


def test_openvino_keeps_a_constant_attention_bias_beside_an_hf_padding_mask(tmp_path: Path) -> None:
    """A T5 encoder at a fixed length: its relative position bias is a constant, plus (1 - mask) * finfo.min.
    OpenVINO's CPU plugin folded the two constants together and the bias vanished (fp32: cosine 0.995, exit 3; int8:
    cosine 0.996 against the int8 graph's 0.99998, shipped). The mask subtraction is done in integers first
    (backends/openvino_mask.py)."""
    import onnx

    from edgekit.backends.openvino_mask import int_mask_sub
    from edgekit.sources import parse_input_shapes

    text = _text(tmp_path / "data", SENTENCES)
    shapes = parse_input_shapes(["input_ids=1x20:int64", "attention_mask=1x20:int64"])
    result = api.convert("sweep9_text_models:t5", ["openvino"], tmp_path / "out", calibration=str(text),
                         input_shapes=shapes)
    (fig,) = _passed(result, ["openvino"])
    assert fig["max_abs_error"] < 1e-4
    model = onnx.load(str(_export(tm.t5(), ["input_ids", "attention_mask"], tmp_path / "t5.onnx")))
    assert int_mask_sub(model) == 1  # one mask, shared by both layers
    assert int_mask_sub(model) == 0


def test_distilling_a_pruned_transformer_matches_its_blocks_hidden_states() -> None:
    """Pruning heads rewrites the graph (torch.fx GraphModule: `view(b, t, heads, hd)` gets the new head count),
    where a transformer block is inlined: block_layers found no repeated blocks and a hook on 'blocks.0' would never
    fire, so distilling a pruned text model (zoo:minilm too) silently matched no hidden states (feature_layers []).
    The blocks come from the trace's module stacks and are hooked at their output node (distill_taps.py)."""
    from edgekit.distill import _Features, distill, resolve_feature_layers
    from edgekit.prune import prune_model

    teacher = tm.gpt()
    feeds = {"input_ids": torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(0))}
    student, rep = prune_model(teacher, feeds, ratio=0.5, round_to=8, keep_first_last=False)
    assert rep["graph_rewritten"]
    assert resolve_feature_layers(student, None, "generic") == ["blocks.0", "blocks.1"]
    feats = _Features(teacher, student, ["blocks.0", "blocks.1"])
    with torch.no_grad():
        before = student(**feeds)
        teacher(**feeds)
    assert {k: tuple(v.shape[:2]) for k, v in feats.s.items()} == {"blocks.0": (2, 9), "blocks.1": (2, 9)}
    assert float(feats.loss()) > 0
    feats.remove()
    assert not [n for n, _ in student.named_modules() if "tap" in n]
    with torch.no_grad():
        torch.testing.assert_close(student(**feeds), before, rtol=0, atol=0)
    rng = np.random.default_rng(0)
    samples = [{"input_ids": rng.integers(1, 100, (1, 9))} for _ in range(8)]
    report = distill(teacher, student, samples, steps=2, task="generic", batch_size=4)
    assert report["feature_layers"] == ["blocks.0", "blocks.1"]


def test_a_text_model_without_input_shapes_is_shown_token_shapes(tmp_path: Path) -> None:
    """A torch text model given without --input-shape was told to pass input_ids=1x3x224x224 (an image shape, float:
    the embedding then fails on it); token inputs are shown as integer sequences."""
    from edgekit.errors import UsageError
    from edgekit.sources import parse_input_shapes

    with pytest.raises(UsageError) as err:
        api.convert("sweep9_text_models:distilbert", ["onnxruntime"], tmp_path / "out")
    assert err.value.hint == "give --input-shape input_ids=1x128:int64 --input-shape attention_mask=1x128:int64"
    with pytest.raises(UsageError) as err:
        api.convert("sweep9_text_models:distilbert", ["onnxruntime"], tmp_path / "out",
                    input_shapes=parse_input_shapes(["input_ids=1x8:int64"]))
    assert err.value.hint == "give --input-shape attention_mask=1x128:int64"


def test_gather_nd_lowers_to_tflite(tmp_path: Path) -> None:
    """torch.export writes advanced indexing as GatherND: a CLIP text tower saved as .pt2 (EOS pooling
    x[arange(B), ids.argmax(-1)]) was refused for TFLite ('op GatherND has no TFLite lowering', exit 4). It lowers
    to GATHER_ND; run-time indices, negative ones included, are wrapped and cast to int32."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.sources import parse_input_shapes

    nodes = [helper.make_node("GatherND", ["x", "i"], ["y"])]
    graph = helper.make_graph(nodes, "gnd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 4, 3]),
                                             helper.make_tensor_value_info("i", TensorProto.INT64, [1, 6, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "gnd.onnx"))
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(-1, 1, (8, 6)), rng.integers(-5, 5, (8, 6)), rng.integers(-4, 4, (8, 6))], -1)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 5, 4, 3)).astype(np.float32), i=idx)
    result = api.convert(str(tmp_path / "gnd.onnx"), ["tflite"], tmp_path / "out", calibration=str(tmp_path / "d.npz"))
    (fig,) = _passed(result, ["tflite"])
    assert fig["max_abs_error"] == 0.0

    ids = torch.randint(1, 100, (2, 9))
    program = torch.export.export(tm.clip_text(), (ids,))
    torch.export.save(program, str(tmp_path / "clip.pt2"))
    text = _text(tmp_path / "data", SENTENCES)
    result = api.convert(str(tmp_path / "clip.pt2"), ["tflite", "arm"], tmp_path / "out2", calibration=str(text),
                         input_shapes=parse_input_shapes(["input_ids=1x9"]), task="embedding")
    for fig in _passed(result, ["tflite", "arm"]):
        assert fig["cosine"] > 0.999


def test_nanogpt_interface_converts_from_text_and_distills(tmp_path: Path) -> None:
    """nanoGPT: forward(idx, targets=None) -> (logits, None). The None counted as an output: the export failed
    ('number of output names provided (2) exceeded number of outputs (1)', exit 2 blaming --input-shape) and
    distillation crashed on it (internal error); and a text file was refused ('text feeds inputs named input_ids
    ...; the model has idx'). None is no output, and a model's one integer input takes the token ids."""
    import copy

    from edgekit.distill import distill
    from edgekit.sources import parse_input_shapes

    text = _text(tmp_path / "data", SENTENCES)
    result = api.convert("sweep9_text_models:nanogpt", ["onnxruntime"], tmp_path / "out", calibration=str(text),
                         input_shapes=parse_input_shapes(["idx=1x16:int64"]))
    _passed(result, ["onnxruntime"])
    assert result["model"]["outputs"] == ["output"]
    teacher = tm.nanogpt()
    rng = np.random.default_rng(0)
    samples = [{"idx": rng.integers(1, 100, (1, 9))} for _ in range(6)]
    report = distill(teacher, copy.deepcopy(teacher), samples, steps=2, task="generic", batch_size=3)
    assert report["steps"] == 2


def test_pruning_keeps_tied_embeddings_one_matrix() -> None:
    """GPT's lm_head.weight is wte.weight. Pruning the hidden width rebuilt both layers with copies (an untied
    second vocab matrix: GPT-2 would gain 38.6M parameters while losing MACs), and with the width kept, the
    least-squares refit moved lm_head's weight in place, changing the shared token embedding under the model
    (max 0.26 here). Tied parameters are tied again after pruning (prune/tie.py) and the refit skips them."""
    from edgekit.prune import prune_model

    teacher = tm.gpt()
    gen = torch.Generator().manual_seed(0)
    feeds = {"input_ids": torch.randint(1, 100, (2, 12), generator=gen)}
    calib = [{"input_ids": torch.randint(1, 100, (1, 12), generator=gen).numpy()} for _ in range(8)]
    pruned, rep = prune_model(teacher, feeds, ratio=0.5, calib=calib, reconstruct=True, task="generic",
                              exclude=("wte", "wpe"))
    assert rep["reconstruction"]["layers"] > 0
    wte, head = pruned.get_submodule("wte"), pruned.get_submodule("lm_head")
    assert head.weight is wte.weight and head.bias is None
    torch.testing.assert_close(wte.weight, teacher.wte.weight, rtol=0, atol=0)

    narrow, _ = prune_model(teacher, feeds, ratio=0.5, round_to=8, keep_first_last=False)
    wte, head = narrow.get_submodule("wte"), narrow.get_submodule("lm_head")
    assert wte.weight.shape[1] < 32 and head.weight is wte.weight


def test_sentences_opening_with_a_hashtag_are_text(tmp_path: Path) -> None:
    """Every line starting with '#' was dropped as a comment: tweets opening with a hashtag and titles like '#1 hit'
    vanished from the calibration set (a file of them read as 'no sentences (empty file)'). Comments are '# ...'."""
    from edgekit.data.text import text_lines

    path = tmp_path / "t.txt"
    path.write_text("#tbt the best summer ever\n# a note\n\n#1 hit single of the year\n#\n")
    assert text_lines(path) == ["#tbt the best summer ever", "#1 hit single of the year"]
    path.write_text("# one\n\n# two\n")
    with pytest.raises(DataError, match=r"no sentences \(all 3 lines are empty or '# ' comments\)"):
        text_lines(path)


def test_fixed_length_text_is_padded_with_the_tokenizers_pad_id(tmp_path: Path) -> None:
    """Fixed-length inputs were padded with id 0 whatever the tokenizer: for RoBERTa (<s> = 0, <pad> = 1) every
    sentence ended in a run of <s> tokens, and its position ids (counted over tokens != <pad>) ran on through them.
    The pad id is the tokenizer.json's padding, else its pad token, else 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    from edgekit.data import InputSpec
    from edgekit.data.text import read

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=200, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(tmp_path / "tokenizer.json"))
    text = _text(tmp_path, SENTENCES[:1])
    specs = [InputSpec("input_ids", (1, 40), "int64"), InputSpec("attention_mask", (1, 40), "int64")]
    (feed,) = list(read(str(text), specs))
    n = int(feed["attention_mask"].sum())
    assert feed["input_ids"][0, 0] == 0 and feed["input_ids"][0, n - 1] == 2 and n < 40
    assert (feed["input_ids"][0, n:] == 1).all() and (feed["attention_mask"][0, n:] == 0).all()
    tok.enable_padding(pad_id=3, pad_token="<unk>")
    tok.save(str(tmp_path / "tokenizer.json"))
    (feed,) = list(read(str(text), specs))
    assert (feed["input_ids"][0, n:] == 3).all()


@pytest.mark.parametrize("name", ["t5_sdpa", "distilbert"])
def test_sdpa_attn_mask_follows_the_pruned_heads(name: str) -> None:
    """F.scaled_dot_product_attention's attn_mask was ignored by pruning: a T5 encoder passing its relative position
    bias (one row per head) as attn_mask lost a head but kept its bias ('the pruned model does not run', exit 4).
    A per-head mask is coupled with the heads (the bias table's column goes with its head); a padding mask
    broadcast over the heads (DistilBERT's (B, 1, 1, T)) leaves them prunable."""
    import copy

    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    model = getattr(tm, name)()
    for layer in model.layers:
        layer.attn.sdpa = True
    feeds = {"input_ids": torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(0)),
             "attention_mask": torch.tensor([[1] * 9, [1] * 6 + [0] * 3])}
    an = analyze(model, feeds)
    heads = next(g for g in an.groups() if "layers.0.attn.q" in g.modules())
    assert len(heads.units) == 4 and ("rel" in heads.modules()) == (name == "t5_sdpa")
    pruned, _ = build_pruned(an, {heads.units[1].root}, feeds, original=model)
    q = pruned.get_submodule("layers.0.attn.q")
    gone = (set(range(4)) - {next(i for i in range(32) if torch.equal(model.layers[0].attn.q.weight[i], r)) // 8
                             for r in q.weight}).pop()
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for layer in zeroed.layers if name == "t5_sdpa" else zeroed.layers[:1]:
            layer.attn.o.weight[:, gone * 8:(gone + 1) * 8] = 0.0
        torch.testing.assert_close(pruned(**feeds), zeroed(**feeds), rtol=1e-5, atol=1e-5)


def test_input_shape_sizes_a_shared_sequence_axis_once(tmp_path: Path) -> None:
    """An ONNX export whose input_ids and attention_mask share the axis 'seq': --input-shape input_ids=1x24 left the
    mask dynamic (a static target then refused it), and input_ids=1x24 with attention_mask=1x20 was taken (the JSON
    stated a model that cannot run). One size per named axis: given once, every input sharing it takes it; two
    sizes are a UsageError."""
    from edgekit.errors import UsageError

    model = _export(tm.distilbert(), ["input_ids", "attention_mask"], tmp_path / "db.onnx")
    text = _text(tmp_path / "data", SENTENCES)
    result = api.convert(str(model), ["tflite"], tmp_path / "out", calibration=str(text),
                         input_shapes={"input_ids": (1, 24)})
    _passed(result, ["tflite"])
    assert [i["shape"] for i in result["model"]["inputs"]] == [["batch", 24], ["batch", 24]]
    with pytest.raises(UsageError, match="axis 'seq' two sizes: 24 for 'input_ids', 20 for 'attention_mask'"):
        api.convert(str(model), ["onnxruntime"], tmp_path / "out2", calibration=str(text),
                    input_shapes={"input_ids": (1, 24), "attention_mask": (1, 20)})


def test_text_feeds_position_ids_and_a_float_mask(tmp_path: Path) -> None:
    """Decoder exports (Hugging Face GPT-2, Llama) take position_ids and often a float attention_mask: text data was
    refused for them ('text feeds inputs named input_ids / attention_mask / token_type_ids'; 'is float32, not token
    ids'). position_ids are 0, 1, 2 ... and a float mask is 1.0 / 0.0."""
    names = ["input_ids", "attention_mask", "position_ids"]
    feeds = (torch.randint(1, 100, (2, 7)), torch.ones(2, 7), torch.arange(7).expand(2, 7))
    path = tmp_path / "gpt2.onnx"
    torch.onnx.export(tm.gpt2_export(), feeds, str(path), input_names=names, output_names=["logits"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in names}, dynamo=False, opset_version=17)
    text = _text(tmp_path / "data", SENTENCES, max_length=64)
    result = api.convert(str(path), ["onnxruntime", "openvino"], tmp_path / "out", calibration=str(text))
    for fig in _passed(result, ["onnxruntime", "openvino"]):
        assert fig["max_abs_error"] < 1e-4
    from edgekit.data import InputSpec
    from edgekit.data.text import read

    specs = [InputSpec("input_ids", (1, 48), "int64"), InputSpec("attention_mask", (1, 48), "float32"),
             InputSpec("position_ids", (1, 48), "int64")]
    feed = next(iter(read(str(text), specs)))
    n = int(feed["attention_mask"].sum())
    assert feed["attention_mask"].dtype == np.float32 and (feed["position_ids"][0, :n] == np.arange(n)).all()


class _EinsumAttention(torch.nn.Module):
    """Attention written with torch.einsum, heads kept on axis 2 ('bqhd,bkhd->bhqk')."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.inp, self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(5))

    def forward(self, x):
        x = self.inp(x)
        b, t, c = x.shape
        q, k, v = (f(x).view(b, t, self.heads, c // self.heads) for f in (self.q, self.k, self.v))
        a = torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1)
        y = torch.einsum("bhqk,bkhd->bhqd", a, v)
        return x + self.o(torch.einsum("bhqd->bqhd", y).reshape(b, t, c))


def test_einsum_attention_prunes_whole_heads() -> None:
    """torch.einsum was unknown to pruning, so attention written with it (and a 'bhtd->bthd' permute) kept every
    head. One operand: its labels are permuted; two: the output letters both share are batch axes (one unit per
    head), as matmul. Pruned = the original with the removed head's output columns zeroed."""
    import copy

    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    torch.manual_seed(0)
    model = _EinsumAttention().eval()
    feeds = {"x": torch.randn(2, 5, 32)}
    an = analyze(model, feeds)
    heads = next(g for g in an.groups() if "q" in g.modules())
    assert heads.modules() == ["k", "o", "q", "v"] and len(heads.units) == 4
    pruned, _ = build_pruned(an, {heads.units[2].root}, feeds, original=model)
    gone = (set(range(4)) - {next(i for i in range(32) if torch.equal(model.q.weight[i], r)) // 8
                             for r in pruned.get_submodule("q").weight}).pop()
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.o.weight[:, gone * 8:(gone + 1) * 8] = 0.0
        torch.testing.assert_close(pruned(**feeds), zeroed(**feeds), rtol=1e-5, atol=1e-5)


def test_distill_help_names_the_sources_it_takes() -> None:
    """`edgekit distill --help` offered '.pt2' as a MODEL, which the command then refuses (a torch.export program has
    no torch.nn layers to prune)."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    out = CliRunner().invoke(cli, ["distill", "--help"]).output
    assert "a .pt2 or TorchScript file has none" in " ".join(out.split()) and "torch model: .pt2" not in out


def test_top1_agreement_on_one_reference_class_says_it_shows_nothing() -> None:
    """A text classifier that puts every calibration sentence in one class (a skewed set, or the random BERT heads
    here: all 85 sentences class 0) verified with 'top-1 agreement 1.000' as if that meant something: any artifact
    agrees on a constant answer. The figures count the source's classes and the log line says so."""
    from edgekit.verify import compare, summary

    rng = np.random.default_rng(0)
    refs = [[np.array([[3.0, 0.1, -1.0]]) + rng.normal(0, 0.01, (1, 3))] for _ in range(6)]
    figures = compare(refs, [[r[0] + 0.001] for r in refs], "classification")
    assert figures["reference_classes"] == 1 and figures["top1_agreement"] == 1.0
    assert "every sample one class" in summary(figures)
    refs[0] = [np.array([[0.0, 2.0, 0.0]])]
    figures = compare(refs, [[r[0] + 0.001] for r in refs], "classification")
    assert figures["reference_classes"] == 2 and "every sample" not in summary(figures)


def test_rotary_frequencies_are_not_a_prunable_group() -> None:
    """Float buffers now follow channels like parameters, so a rotary embedding's inv_freq (head_dim / 2 entries)
    became a group of its own: cos/sin of it multiply q (b, heads, t, head_dim), a product that had no coupling
    for it, and pruning it broke the model ('the pruned model does not run', exit 4 at --prune 0.5 --round-to 1;
    Llama's 64 frequencies are prunable at any --round-to). Channels of an operand broadcast over the others'
    channels are blocked; the heads stay prunable."""
    from edgekit.prune import prune_model
    from edgekit.prune.graph import analyze

    model = tm.rotary()
    feeds = {"input_ids": torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(0))}
    groups = [g.modules() for g in analyze(model, feeds).groups()]
    assert not [g for g in groups if all(m.endswith("rope") for m in g)]
    assert ["layers.0.attn.k", "layers.0.attn.o", "layers.0.attn.q", "layers.0.attn.v"] in groups
    pruned, _ = prune_model(model, feeds, ratio=0.5, round_to=1)
    assert pruned(**feeds).shape == (2, 9, tm.VOCAB)


def test_an_onnx_file_without_its_external_data_says_so(tmp_path: Path) -> None:
    """torch.onnx.export (dynamo) writes the weights to <name>.onnx.data; a model copied without it was 'not a valid
    ONNX file (ValidationError: ... should be stored in ..., but it is not regular file)' with the hint 'the file
    is corrupt or truncated; re-export it': onnx reports the missing file as a ValidationError now."""
    import onnx

    from edgekit.errors import ModelLoadError

    path = _export(tm.distilbert(), ["input_ids", "attention_mask"], tmp_path / "db.onnx")
    model = onnx.load(str(path))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match=r"external data file is missing \(.*ext\.onnx\.data\)") as err:
        api.convert(str(tmp_path / "ext.onnx"), ["onnxruntime"], tmp_path / "out")
    assert err.value.hint == "keep the .onnx.data/.bin file next to the .onnx"


def test_build_cache_key_of_text_data_covers_its_tokenizer_and_max_length(tmp_path: Path) -> None:
    """edgekit build keyed text calibration by the .txt alone: a new tokenizer.json or max_length in text.toml
    changes every sample (int8 ranges, verification) but the stale artifacts were reported 'cached'. The key
    covers the sidecar and the tokenizer it names (or the tokenizer.json beside the text)."""
    from edgekit.build.cache import data_fingerprint

    text = _text(tmp_path, SENTENCES)
    first = data_fingerprint(str(text))
    assert data_fingerprint(str(text)) == first
    (tmp_path / "text.toml").write_text("max_length = 32\n")
    second = data_fingerprint(str(text))
    assert second != first
    _wordpiece(tmp_path / "tokenizer.json", vocab=90)
    third = data_fingerprint(str(text))
    assert third not in (first, second)
    (tmp_path / "sub").mkdir()
    (tmp_path / "tokenizer.json").rename(tmp_path / "sub" / "tk.json")
    (tmp_path / "text.toml").write_text('max_length = 32\ntokenizer = "sub/tk.json"\n')
    named = data_fingerprint(str(text))
    _wordpiece(tmp_path / "sub" / "tk.json", vocab=100)
    assert data_fingerprint(str(text)) != named
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros(3))
    from edgekit.build.cache import _sha_tree

    assert data_fingerprint(str(npz)) == _sha_tree(npz)  # other data keys as before


def test_eval_data_without_labels_is_refused(tmp_path: Path) -> None:
    """--eval with a text file (or an .npz without 'labels') was ignored without a word: the user asked for a
    labelled accuracy and the JSON simply had none. It is a DataError saying what --eval needs."""
    model = _export(tm.bert_classifier(), ["input_ids", "token_type_ids", "attention_mask"], tmp_path / "bert.onnx",
                    mask_dtype=torch.bool)
    text = _text(tmp_path / "data", SENTENCES, max_length=32)
    with pytest.raises(DataError, match="--eval data .*: no labels") as err:
        api.convert(str(model), ["onnxruntime"], tmp_path / "out", calibration=str(text), precision="int8",
                    eval_data=str(text))
    assert "'labels'" in err.value.hint
