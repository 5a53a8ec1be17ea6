"""Outputs ranked by an in-graph TopK are compared as ranked sets: int8 may swap near-tied scores, which moves
whole rows (score, box, index); position by position a correct artifact failed verification."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.verify import compare
from edgekit.verify_ranked import align_ranked, ranked_groups


def _rows(rng, k=6):
    idx = rng.permutation(50)[:k][None].astype(np.int64)
    scores = np.sort(rng.uniform(0.3, 0.9, k))[::-1][None].astype(np.float32)
    boxes = rng.uniform(0, 64, (1, k, 4)).astype(np.float32)
    return [scores, boxes, idx]


def test_swapped_rows_are_aligned_by_their_indices_and_missing_rows_stay_mismatches():
    rng = np.random.default_rng(0)
    ref = _rows(rng)
    swapped = [np.array(a) for a in ref]
    for a in swapped:  # rows 2 and 3 trade places (near-tied scores in int8)
        a[:, [2, 3]] = a[:, [3, 2]]
    groups = [{"k": 6, "outputs": [0, 1, 2]}]
    plain = compare([ref], [swapped], "generic")
    aligned = compare([ref], align_ranked([ref], [swapped], groups), "generic")
    assert plain["integer_agreement"] < 1 and aligned["integer_agreement"] == 1.0
    assert aligned["max_abs_error"] == 0.0 and plain["max_abs_error"] > 1
    other = [np.array(a) for a in swapped]
    other[2][0, 5] = 99  # an anchor the reference does not have: a real difference
    assert compare([ref], align_ranked([ref], [other], groups), "generic")["integer_agreement"] == pytest.approx(5 / 6)


def test_without_indices_rows_are_matched_to_the_nearest():
    rng = np.random.default_rng(1)
    scores, boxes, _ = _rows(rng)
    ref = [scores, boxes]
    cand = [scores[:, [1, 0, 2, 3, 5, 4]] + 1e-3, boxes[:, [1, 0, 2, 3, 5, 4]] + 0.01]
    out = align_ranked([ref], [cand], [{"k": 6, "outputs": [0, 1]}])
    assert np.allclose(out[0][1], boxes + 0.01) and np.allclose(out[0][0], scores + 1e-3)


def test_the_groups_are_found_in_the_graph(tmp_path):
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from topk_detector import detector

    path = tmp_path / "det.onnx"
    torch.onnx.export(detector(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                      input_names=["image"], output_names=["scores", "boxes", "idx"])
    assert ranked_groups(onnx.load(str(path))) == [{"k": 10, "outputs": [0, 1, 2]}]


def test_int8_detector_with_topk_verifies(invoke, tmp_path):
    """End to end: the int8 artifact of a TopK detector passes on every runtime that swaps near-tied rows; its
    integer outputs (anchor indices) agree as sets."""
    pytest.importorskip("torch")
    res = invoke("convert", "topk_detector:detector", "--input-shape", "image=1x3x32x32", "-t", "ort", "-t", "arm",
                 "--precision", "int8", "--calibration", "natural_images", "--calibration-size", "48",
                 "--task", "generic", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    for art in res.json()["artifacts"]:
        ver = art["verification"]
        assert ver["passed"] and ver["integer_agreement"] >= 0.8, (art["target"], ver)


def test_max_drop_judges_a_topk_detector_as_ranked_sets(tmp_path):
    """--max-drop's judge measures the drop the way verification does: a candidate whose TopK rows come in another
    order (the same detector, its ranked outputs permuted) has no drop; position by position it had a large one."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    from topk_detector import detector

    from edgekit.data import InputSpec, load_samples
    from edgekit.quantize.control import Judge

    ref_path, cand_path = tmp_path / "det.onnx", tmp_path / "swapped.onnx"
    torch.onnx.export(detector(), (torch.zeros(1, 3, 32, 32),), str(ref_path), dynamo=False,
                      input_names=["image"], output_names=["scores", "boxes", "idx"])
    m = onnx.load(str(ref_path))
    perm = numpy_helper.from_array(np.array([3, 1, 2, 0, 4, 5, 6, 7, 9, 8], np.int64), "perm")
    m.graph.initializer.append(perm)
    for out in m.graph.output:  # rename each output's producer, then gather its rows in the swapped order
        for n in m.graph.node:
            n.output[:] = [f"{o}_raw" if o == out.name else o for o in n.output]
            n.input[:] = [f"{i}_raw" if i == out.name else i for i in n.input]
        m.graph.node.append(helper.make_node("Gather", [f"{out.name}_raw", "perm"], [out.name], axis=1))
    onnx.save(m, str(cand_path))
    held = load_samples("natural_images", [InputSpec("image", (1, 3, 32, 32))]).select(8, seed=3)
    judge = Judge(ref_path, "generic", held, None)
    assert judge.ranked == [{"k": 10, "outputs": [0, 1, 2]}]
    assert judge.figures(cand_path)["drop"] < 1e-6
    judge.ranked = None  # position by position
    assert judge.figures(cand_path)["drop"] > 0.1
