"""The verification gate really fails on a corrupted artifact, and leaves nothing in the output folder."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgekit.backends.onnxruntime as ort_backend
import edgekit.backends.openvino as ov_backend
from edgekit.verify import check, compare, top1_probability


def _corrupting(lower):
    def wrapped(onnx_path, target, out_stem, options):
        model = onnx.load(str(onnx_path))
        init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the biggest weight
        arr = numpy_helper.to_array(init).copy()
        n = max(1, arr.size // 4)
        arr.flat[:n] = -np.clip(arr.flat[:n], -127, None) if arr.dtype == np.int8 else -3 * arr.flat[:n]
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        bad = out_stem.parent / "corrupted.onnx"
        onnx.save(model, str(bad))
        return lower(bad, target, out_stem, options)

    return wrapped


def test_corrupted_ort_artifact_fails_verification(model_files, invoke, tmp_path, monkeypatch):
    monkeypatch.setattr(ort_backend, "lower", _corrupting(ort_backend.lower))
    out = tmp_path / "o"
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-o", str(out), "--json")
    assert res.returncode == 3, res.stderr
    assert "failed verification" in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_corrupted_openvino_artifact_fails_and_no_verify_keeps_it(model_files, invoke, tmp_path, monkeypatch):
    monkeypatch.setattr(ov_backend, "lower", _corrupting(ov_backend.lower))
    out = tmp_path / "o"
    res = invoke("convert", str(model_files["onnx"]), "-t", "ort", "-t", "ov", "-o", str(out))
    assert res.returncode == 3
    assert not out.exists() or not any(out.iterdir())  # the good ORT artifact is not kept either
    res = invoke("convert", str(model_files["onnx"]), "-t", "ov", "-o", str(out), "--no-verify", "--json")
    assert res.returncode == 0
    assert res.json()["artifacts"][0]["verification"] is None
    assert (out / "tiny.openvino.xml").is_file()


def test_compare_and_check_figures():
    ref = [[np.array([[1.0, 5.0, 2.0]], np.float32)] for _ in range(4)]
    same = compare(ref, ref, "classification")
    assert same["max_abs_error"] == 0 and same["top1_agreement"] == 1.0 and same["cosine"] > 0.999999
    flipped = [[np.array([[5.0, 1.0, 2.0]], np.float32)] for _ in range(4)]
    fig = compare(ref, flipped, "classification")
    assert fig["top1_agreement"] == 0.0 and fig["max_abs_error"] == 4.0
    ok, why = check(fig, {"max_abs_error": 1e-3, "cosine": 0.999, "top1_agreement": 0.9})
    assert not ok and len(why) == 3


def test_wrongly_lowered_int8_artifact_fails(invoke, tmp_path, monkeypatch):
    from edgekit.resources import data_dir

    monkeypatch.setattr(ov_backend, "lower", _corrupting(ov_backend.lower))
    cal = str(data_dir("calibration") / "mnist" / "train_sample.npz")
    res = invoke("convert", "zoo:mnist_cnn", "-t", "ov", "--precision", "int8", "--calibration", cal,
                 "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 3, res.stderr
    assert "failed verification" in res.stderr


def test_integer_outputs_are_compared_exactly_not_in_the_cosine():
    """A classifier with logits and an argmax index: a changed index is a miss counted apart; it does not move
    the cosine (an index is a label: 500 -> 3 is no further off than 500 -> 501)."""
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((1, 1000)).astype(np.float32) for _ in range(4)]
    refs = [[lg, np.array([500], np.int64)] for lg in logits]
    near = [[lg, np.array([501 if i == 0 else 500], np.int64)] for i, lg in enumerate(logits)]
    far = [[lg, np.array([3 if i == 0 else 500], np.int64)] for i, lg in enumerate(logits)]
    a, b = compare(refs, near, "generic"), compare(refs, far, "generic")
    assert a["integer_outputs_exact"] == b["integer_outputs_exact"] == 0.75
    assert a["cosine"] == b["cosine"] == pytest.approx(1.0, abs=1e-12)  # the float output is untouched
    assert compare(refs, refs, "generic")["integer_outputs_exact"] == 1.0
    assert compare([[lg] for lg in logits], [[lg] for lg in logits], "generic")["integer_outputs_exact"] is None
    only_ids = compare([[np.array([500])]], [[np.array([3])]], "generic")  # nothing else: no float figures at all
    assert only_ids["integer_outputs_exact"] == only_ids["integer_agreement"] == 0.0 and only_ids["cosine"] is None
    assert b["max_abs_error"] == 0 and b["integer_agreement"] == 0.75  # the index is judged apart, as a label


def test_confident_agreement_counts_only_samples_the_source_is_sure_of():
    sure = np.array([[0.0, 9.0, 0.0]], np.float32)  # softmax top-1 ~ 0.9998
    tie = np.array([[3.09, 3.1, 0.0]], np.float32)  # a near-tie: top-1 ~ 0.49
    ref = [[sure], [sure], [tie], [tie]]
    cand = [[sure], [np.array([[9.0, 0.0, 0.0]], np.float32)], [np.array([[3.2, 3.1, 0.0]], np.float32)], [tie]]
    fig = compare(ref, cand, "classification")
    assert fig["top1_agreement"] == 0.5
    assert fig["confident_samples"] == 2 and fig["top1_agreement_confident"] == 0.5
    probs = np.array([[0.2, 0.7, 0.1]])  # an output that already is probabilities is not softmaxed again
    assert abs(top1_probability(probs) - 0.7) < 1e-9
    assert compare(ref, ref, "embedding")["confident_samples"] is None
