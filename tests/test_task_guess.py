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
