"""`--task auto`: one (N, D) output whose rows are unit vectors (an embedding model ending in an L2
normalization) is an embedding, judged by cosine, not by the argmax of its coordinates."""

from __future__ import annotations

import numpy as np
import pytest


def test_unit_norm_rows_are_an_embedding_not_class_scores() -> None:
    from edgekit.verify import looks_like_unit_embeddings

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(8, 16))
    assert looks_like_unit_embeddings([rows / np.linalg.norm(rows, axis=1, keepdims=True)])
    assert not looks_like_unit_embeddings([rows])  # logits
    probs = np.exp(rows) / np.exp(rows).sum(1, keepdims=True)
    assert not looks_like_unit_embeddings([probs])
    assert not looks_like_unit_embeddings([np.ones((4, 1))])  # one column: a score, not a direction


def test_a_normalized_embedder_is_guessed_as_an_embedding(invoke, tmp_path) -> None:
    pytest.importorskip("torch")
    res = invoke("convert", "embedders:embedder", "--input-shape", "image=1x3x32x32", "-t", "ort",
                 "--calibration", "natural_images", "--calibration-size", "16", "-o", str(tmp_path / "e"), "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    assert out["model"]["task"] == "embedding" and "unit-norm rows" in res.stderr
    ver = out["artifacts"][0]["verification"]
    assert ver["top1_agreement"] is None and ver["cosine"] > 0.9999
    res = invoke("convert", "embedders:embedder", "--input-shape", "image=1x3x32x32", "-t", "ort",
                 "--task", "classification", "-o", str(tmp_path / "c"), "--json")  # as the user says
    assert res.returncode == 0 and res.json()["model"]["task"] == "classification"


def test_a_top1_failure_on_a_guessed_classifier_names_the_task_option(cnn, invoke, tmp_path, monkeypatch):
    from edgekit.targets import Target

    monkeypatch.setattr(Target, "tolerances", lambda self, precision: {"top1_agreement": 1.01})  # fails on top-1
    res = invoke("convert", str(cnn), "-t", "onnxruntime", "-o", str(tmp_path / "a"))
    assert res.returncode == 3
    assert "judged as class scores, a guess from its shape" in res.stderr and "--task embedding" in res.stderr
    res = invoke("convert", str(cnn), "-t", "onnxruntime", "-o", str(tmp_path / "b"), "--task", "classification")
    assert res.returncode == 3 and "a guess from its shape" not in res.stderr  # the user said so: no guess to doubt
