"""Non-classifier vision models found by the sweep-9 'tasks' sweep (detection heads, segmentation logits and argmax
maps, depth, super-resolution, keypoints, siamese, uint8 NHWC inputs): what verification and --max-drop judge them by.
Models: tests/fixtures/sweep9_tasks.py."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.build.budgets import accuracy_drop
from edgekit.quantize.control import held_out_figures
from edgekit.verify import check, compare, summary

FP32 = {"max_abs_error": 1e-3, "cosine": 0.99999}
INT8 = {"cosine_mean": 0.9, "top1_agreement": 0.7, "max_loss_vs_quantized_graph": 0.01}


def _label_maps(n: int = 4, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 5, (1, 32, 32)).astype(np.int64)] for _ in range(n)]


def test_an_argmax_map_is_judged_by_its_share_of_equal_pixels():
    """A segmentation net's argmax map (int64, the only output): one near-tie pixel flipped in fp32 failed
    verification ('max abs error 4 > 0.004; cosine 0.999189 < 0.99999', exit 3 on a correct ORT artifact), and
    in int8 the map was judged by the cosine of its label values. Labels are judged by the share of equal
    elements: 0.999 in fp32, the top-1 floor in int8; the label values are no float figures."""
    refs = _label_maps()
    one_pixel = [[r[0].copy()] for r in refs]
    one_pixel[0][0][0, 3, 7] = (one_pixel[0][0][0, 3, 7] + 4) % 5
    fig = compare(refs, one_pixel, "generic")
    assert fig["integer_agreement"] == pytest.approx(1 - 1 / (4 * 32 * 32))
    assert fig["integer_outputs_exact"] == 0.75
    assert fig["cosine"] is None and fig["max_abs_error"] is None
    assert check(fig, FP32) == (True, [])
    assert "of elements equal" in summary(fig)
    rng = np.random.default_rng(1)
    noisy = [[np.where(rng.random(r[0].shape) < 0.2, (r[0] + 1) % 5, r[0])] for r in refs]  # 20% of pixels off
    ok, why = check(compare(refs, noisy, "generic"), FP32)
    assert not ok and why[0].startswith("integer outputs agree on 0.7") and why[0].endswith("< 0.999")
    assert check(compare(refs, noisy, "generic"), INT8)[0]  # int8: above the 0.7 floor
    broken = [[np.zeros_like(r[0])] for r in refs]  # an int8 lowering that lost the logits
    assert not check(compare(refs, broken, "generic"), INT8)[0]
    entry = {"artifact": {"verification": compare(refs, noisy, "generic")}}  # a build's max_accuracy_drop
    assert accuracy_drop(entry)[0] == pytest.approx(0.2, abs=0.01)


def test_a_label_flip_next_to_boxes_is_not_a_pixel_error():
    """A post-processed detector (boxes in pixels, best score, class id): a flipped class id of one anchor
    entered the max abs error (2 > 1e-3 x 32 px) and failed fp32; it is counted among the labels instead."""
    rng = np.random.default_rng(0)
    refs = [[rng.uniform(0, 32, (1, 160, 4)).astype(np.float32), rng.random((1, 160)).astype(np.float32),
             rng.integers(0, 3, (1, 160)).astype(np.int64)] for _ in range(8)]
    cands = [[b, s, lab.copy()] for b, s, lab in refs]
    cands[2][2][0, 5] = (cands[2][2][0, 5] + 2) % 3
    fig = compare(refs, cands, "generic")
    assert fig["max_abs_error"] == 0 and fig["integer_agreement"] == pytest.approx(1 - 1 / (8 * 160))
    assert check(fig, FP32)[0]


def test_max_drop_judges_every_output_of_a_generic_model():
    """--max-drop's held-out drop of a generic model took the first output alone: a detector whose scores int8
    broke (boxes first) measured a drop of 0 and met any budget; an argmax map was scored by its labels'
    cosine. Every output counts (the worst per sample), an integer one by its share of equal elements."""
    rng = np.random.default_rng(0)
    ref = [[rng.uniform(0, 32, (1, 160, 4)), rng.random((1, 160, 3))] for _ in range(4)]
    cand = [[b, np.zeros_like(s)] for b, s in ref]
    assert held_out_figures(ref, cand, "generic")["drop"] == pytest.approx(1.0, abs=0.01)
    assert held_out_figures(ref, cand, "embedding")["drop"] == 0.0  # an embedding model: its first output
    maps = _label_maps()
    flipped = [[np.where(np.arange(m[0].size).reshape(m[0].shape) % 10 == 0, (m[0] + 1) % 5, m[0])] for m in maps]
    assert held_out_figures(maps, flipped, "generic")["drop"] == pytest.approx(0.1, abs=0.001)


def _depth_maps(n: int = 8, seed: int = 0) -> list[list[np.ndarray]]:
    """Depth in metres: a scene at 20-40 m with +-5 m of structure."""
    rng = np.random.default_rng(seed)
    return [[(rng.uniform(20, 40) + 5 * rng.standard_normal((1, 1, 16, 16))).astype(np.float32)] for _ in range(n)]


def test_a_generic_output_far_from_zero_is_compared_about_its_mean():
    """A plain cosine of outputs far from zero (depth in metres, boxes in pixels, sigmoid scores near 0.5)
    called a depth net stuck at its mean depth 0.98 and a scores output stuck at 0.5 0.999: both passed the
    int8 floor (0.9) and met any --max-drop. A generic model's outputs are compared about the reference's mean."""
    refs = _depth_maps()
    mean = float(np.mean([r[0].mean() for r in refs]))
    stuck = [[np.full_like(r[0], mean)] for r in refs]
    fig = compare(refs, stuck, "generic")
    assert fig["cosine_mean"] < 0.5 and not check(fig, INT8)[0]
    assert held_out_figures(refs, stuck, "generic")["drop"] > 0.5
    assert held_out_figures(refs, refs, "generic")["drop"] == 0.0
    rng = np.random.default_rng(1)
    noisy = [[r[0] + 0.5 * rng.standard_normal(r[0].shape).astype(np.float32)] for r in refs]  # int8-like noise
    assert 0.99 < compare(refs, noisy, "generic")["cosine_mean"] < 0.999 and check(compare(refs, noisy, "generic"),
                                                                                   INT8)[0]
    offset = [[r[0] + 6.0] for r in refs]  # every depth 6 m too far: seen too (not only the shape of the map)
    assert compare(refs, offset, "generic")["cosine_mean"] < 0.9
    # classifier logits and embeddings keep the plain cosine
    assert compare(refs, stuck, "embedding")["cosine_mean"] > 0.9


def test_one_value_per_sample_is_judged_over_the_samples():
    """A siamese net's similarity (one value per sample): per sample, a 1-element cosine is only its sign (1.0
    for 0.9 vs 0.1). It is judged over the samples together; an output that does not vary (priors) stays plain."""
    rng = np.random.default_rng(0)
    sim = [[np.array([v], np.float32), np.ones((4, 4), np.float32)] for v in rng.uniform(0.2, 0.9, 16)]
    swapped = [[np.array([1.1 - s[0][0]], np.float32), s[1]] for s in sim]  # similar pairs called dissimilar
    fig = compare(sim, swapped, "generic")
    assert fig["cosine"] < 0 and not check(fig, INT8)[0]
    close = [[s[0] + np.float32(1e-3), s[1] + np.float32(1e-7)] for s in sim]
    assert compare(sim, close, "generic")["cosine"] > 0.9999


def test_a_regression_output_of_shape_n_c_is_not_judged_by_top1(invoke, tmp_path):
    """Face landmarks (N, 10) in pixels, from a factory and from an ONNX file: one (N, C) output was taken for
    a classifier, so verification and --max-drop judged the argmax of the coordinates ('top-1 agreement').
    The guess is checked on real samples: non-negative rows not summing to 1 are no class scores."""
    import torch
    from sweep9_tasks import landmarks

    path = tmp_path / "lm.onnx"
    torch.onnx.export(landmarks(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, input_names=["image"],
                      output_names=["points"], dynamic_axes={"image": {0: "n"}, "points": {0: "n"}})
    for source in ("sweep9_tasks:landmarks", str(path)):
        res = invoke("convert", source, "--input-shape", "image=1x3x32x32", "-t", "ort", "-o", str(tmp_path / "o"),
                     "--calibration", "natural_images", "--calibration-size", "16", "--json")
        assert res.returncode == 0, res.stderr
        out = res.json()
        assert out["model"]["task"] == "generic" and "not class scores" in res.stderr
        assert out["artifacts"][0]["verification"]["top1_agreement"] is None
    res = invoke("convert", "sweep9_tasks:landmarks", "--input-shape", "image=1x3x32x32", "-t", "ort",
                 "--task", "classification", "-o", str(tmp_path / "o"), "--json")  # as the user says
    assert res.json()["model"]["task"] == "classification" and "not class scores" not in res.stderr


def test_dense_prediction_ops_have_differentiable_kernels():
    """Resize (a segmentation/depth decoder, FPN), ConvTranspose (keypoint heads), DepthToSpace (PixelShuffle),
    SpaceToDepth, LogSoftmax and ArgMax had no kernel in the torch evaluator of QDQ graphs: --max-drop fell back
    to the per-layer order ('no differentiable kernel for Resize') and --int8-finetune was skipped on every
    segmentation, depth, super-resolution and pose model. Each kernel matches ONNX Runtime."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.quantize.torch_graph import TorchGraph

    rng = np.random.default_rng(0)

    def init(name, v):
        return numpy_helper.from_array(np.asarray(v), name)

    empty = init("none", np.zeros(0, np.float32))
    cases = {
        "bilinear": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")],
                     [init("sc", np.array([1, 1, 2, 2], np.float32))]),
        "bilinear_corners": ([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                                               coordinate_transformation_mode="align_corners")],
                             [init("sz", np.array([2, 8, 13, 7], np.int64))]),
        "nearest": ([helper.make_node("Resize", ["x", "none", "sc"], ["y"], mode="nearest",
                                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
                    [empty, init("sc", np.array([1, 1, 3, 2], np.float32))]),
        "bicubic": ([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")],
                    [init("sc", np.array([1, 1, 2, 2], np.float32))]),
        "deconv": ([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                                     output_padding=[1, 1], kernel_shape=[4, 4])],
                   [init("w", rng.normal(size=(8, 3, 4, 4)).astype(np.float32)), init("b", np.ones(3, np.float32))]),
        "d2s_dcr": ([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2)], []),
        "d2s_crd": ([helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")], []),
        "s2d": ([helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)], []),
        "log_softmax": ([helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)], []),
        "argmax": ([helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)], []),
    }
    x = rng.normal(size=(2, 8, 6, 4)).astype(np.float32)
    for name, (nodes, inits) in cases.items():
        out_type = TensorProto.INT64 if name == "argmax" else TensorProto.FLOAT
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", out_type, None)], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        out = TorchGraph(model, [])({"x": torch.as_tensor(x)})[0].numpy()
        assert out.shape == ref[0].shape, name
        np.testing.assert_allclose(out, ref[0], rtol=1e-4, atol=1e-4, err_msg=name)
    half = helper.make_graph([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")], "h",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                             [init("sc", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(NotImplementedError, match="round_prefer_floor"):  # a variant torch lacks: named, not wrong
        TorchGraph(helper.make_model(half, opset_imports=[helper.make_opsetid("", 17)]), [])({"x": torch.as_tensor(x)})


def test_max_drop_on_a_segmentation_net_uses_the_end_to_end_order(invoke, tmp_path):
    """A segmentation net (bilinear upsample to the input size) with --max-drop: the end-to-end order ran
    (no 'falls back to the per-layer order' warning) and fine-tuning ran through Resize."""
    res = invoke("convert", "sweep9_tasks:segnet", "--input-shape", "image=1x3x32x32", "-t", "ort", "--precision",
                 "int8", "--calibration", "natural_images", "--calibration-size", "32", "--max-drop", "0.001",
                 "--int8-finetune", "1", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    assert "per-layer order" not in res.stderr and "fine-tuning skipped" not in res.stderr
    q = res.json()["artifacts"][0]["quantization"]
    assert q["fallback_order"] == "e2e" and q["accuracy"]["held_out"]["metric"] == "cosine"


def test_inf_on_one_side_only_fails_int8_verification_and_counts_in_the_drop():
    """log(clamp(softmax, 1e-6)) quantized to int8: the clamp's floor rounds to 0 and the artifact writes -inf
    where the source has -13.8. The non-finite value was masked out of the cosine (1.000000) and int8 has no
    max-abs gate, so the artifact passed and --max-drop measured a drop of 0. It fails, and scores 0."""
    rng = np.random.default_rng(0)
    refs = [[np.log(np.clip(rng.dirichlet(np.ones(4), size=(1, 8, 8)), 1e-6, None)).astype(np.float32)]
            for _ in range(4)]
    cands = [[r[0].copy()] for r in refs]
    cands[1][0][0, 2, 3, 1] = -np.inf
    fig = compare(refs, cands, "generic")
    ok, why = check(fig, INT8)
    assert fig["non_finite_mismatches"] == 1 and not ok and "inf or NaN" in why[0]
    assert held_out_figures(refs, cands, "generic")["drop"] == pytest.approx(0.25)
    same_inf = [[np.where(np.arange(32).reshape(1, 8, 4) == 5, -np.inf, 0).astype(np.float32)]]
    assert check(compare(same_inf, same_inf, "generic"), FP32)[0]  # the same -inf on both sides is a match


def test_the_chain_into_a_log_stays_float_in_int8(invoke, tmp_path):
    """log(clamp(softmax(x), 1e-6)) on TFLite int8: the clamp's output was quantized (its 1e-6 floor rounds to 0:
    -inf, passed as 'cosine 1.000000'), and with the clamp float the softmax's fixed 1/256 grid still gave errors
    of 7.6 (log of 0.004 vs of 0.0001). The element-wise chain into a Log is kept float."""
    res = invoke("convert", "sweep9_tasks:log_probs", "--input-shape", "image=1x3x32x32", "-t", "arm",
                 "--calibration", "natural_images", "--calibration-size", "32", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    v = res.json()["artifacts"][0]["verification"]
    assert v["non_finite_mismatches"] == 0 and v["max_abs_error"] < 1.0 and v["cosine"] > 0.99


def test_max_drop_keeping_every_layer_float_still_lowers_to_tflite(invoke, tmp_path):
    """--max-drop 0 on a segmentation net with an argmax map (every int8 pixel flip is a drop) keeps every layer
    float; the TFLite int8 lowering then found no Q/DQ and stopped with exit 2, a temp path and 'quantize first'.
    It lowers the float graph, with a warning saying so."""
    res = invoke("convert", "sweep9_tasks:segnet_argmax", "--input-shape", "image=1x3x32x32", "-t", "arm",
                 "--precision", "int8", "--calibration", "natural_images", "--calibration-size", "32",
                 "--max-drop", "0", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    art = res.json()["artifacts"][0]
    assert art["quantization"]["quantized_nodes"] == 0 and "kept every layer float" in res.stderr
    assert art["verification"]["integer_agreement"] == 1.0 and (tmp_path / "o" / "segnet_argmax.arm.int8.tflite").is_file()


def test_a_batch_free_input_keeps_its_leading_axis(invoke, tmp_path):
    """A model taking one (C, H, W) image (forward() adds the batch axis): the leading axis of every torch input
    was made a dynamic batch axis run at 1, so --input-shape image=3x32x32 failed with 'does not run on inputs
    image=1x32x32 ... check --input-shape' (a .pt2 exported at (3, 32, 32) too), and a .npz of such samples,
    (N, 3, 32, 32), was refused ('expects rank 3 ... store samples as (N, ...)'). The axis stays static when the
    model runs only at the stated size; .npz samples are read one per leading index."""
    import torch
    from sweep9_tasks import batch_free

    rng = np.random.default_rng(0)
    data = tmp_path / "frames.npz"
    np.savez(data, image=rng.normal(size=(12, 3, 32, 32)).astype(np.float32))
    pt2 = tmp_path / "bf.pt2"
    torch.export.save(torch.export.export(batch_free(), (torch.zeros(3, 32, 32),)), str(pt2))
    for source, shape in (("sweep9_tasks:batch_free", ["--input-shape", "image=3x32x32"]), (str(pt2), [])):
        res = invoke("convert", source, *shape, "-t", "ort", "--calibration", str(data), "-o", str(tmp_path / "o"),
                     "--json")
        assert res.returncode == 0, res.stderr
        out = res.json()
        assert out["model"]["inputs"][0]["shape"] == [3, 32, 32]
        assert "no batch axis" in res.stderr or source.endswith(".pt2")  # a static program's shapes are its own
        assert out["artifacts"][0]["verification"]["samples"] == 12
    res = invoke("convert", "tinymodels:tiny_cnn", "--input-shape", "image=4x3x16x16", "-t", "ort",
                 "-o", str(tmp_path / "c"), "--json")  # a real batch axis stays dynamic
    assert res.returncode == 0 and res.json()["model"]["inputs"][0]["shape"][0] == "batch"


def test_io_layout_nhwc_leaves_an_input_that_is_already_nhwc(invoke, tmp_path):
    """A model taking uint8 (N, H, W, 3) pixels (it permutes to channels-first itself): --io-layout nhwc
    transposed every rank-4 input, giving the app a (1, 32, 3, 32) input (verification, transposing the same
    way, passed). An input the model transposes with perm (0, 3, 1, 2) (an output it transposed with (0, 2, 3, 1))
    is already NHWC and kept; a channels-first input still becomes NHWC."""
    from ai_edge_litert.interpreter import Interpreter

    shapes = {}
    for fn, shape in (("uint8_nhwc", "pixels=1x32x32x3:uint8"), ("segnet", "image=1x3x32x32")):
        res = invoke("convert", f"sweep9_tasks:{fn}", "--input-shape", shape, "-t", "tflite", "--io-layout", "nhwc",
                     "-o", str(tmp_path / fn), "--json")
        assert res.returncode == 0, res.stderr
        it = Interpreter(res.json()["artifacts"][0]["path"])
        shapes[fn] = (list(it.get_input_details()[0]["shape"]), list(it.get_output_details()[0]["shape"]))
    assert shapes["uint8_nhwc"] == ([1, 32, 32, 3], [1, 4])
    assert shapes["segnet"] == ([1, 32, 32, 3], [1, 32, 32, 5])


def test_top1_agreement_takes_the_class_axis(invoke, tmp_path):
    """--task classification on a conv head's (N, C, 1, 1) output: the argmax over the trailing axis of 1 always
    agreed (top-1 agreement 1.0 with every class changed), while --max-drop flattened the output; token logits
    (N, T, C) needed every token to agree in verification. The class axis is the last axis longer than 1; the
    agreement is the share of rows. A segmentation map under --task classification is refused (it failed int8
    verification with 'top-1 agreement 0.062' on an artifact computing in float)."""
    rng = np.random.default_rng(0)
    logits = [[rng.normal(size=(1, 6, 1, 1)).astype(np.float32)] for _ in range(8)]
    rolled = [[np.roll(r[0], 1, axis=1)] for r in logits]
    assert compare(logits, rolled, "classification")["top1_agreement"] == 0.0
    assert held_out_figures(logits, rolled, "classification")["top1_agreement"] == 0.0
    tokens = [[rng.normal(size=(1, 10, 5)).astype(np.float32)] for _ in range(4)]
    one_token = [[t[0].copy()] for t in tokens]
    for t in one_token:
        t[0][0, 3] = np.roll(t[0][0, 3], 1)
    assert compare(tokens, one_token, "classification")["top1_agreement"] == pytest.approx(0.9)
    assert held_out_figures(tokens, one_token, "classification")["top1_agreement"] == pytest.approx(0.9)
    res = invoke("convert", "sweep9_tasks:segnet", "--input-shape", "image=1x3x32x32", "-t", "ort", "--task",
                 "classification", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 2 and "dense map" in res.json()["error"]["message"]


def test_eval_labels_per_pixel_give_pixel_accuracy(tmp_path):
    """--eval with a segmentation net's per-pixel labels ((N, H, W)) was an internal error ('operands could not
    be broadcast together with shapes (48,) (49152,)'): the labelled metric flattened the whole map into one
    argmax per sample. The argmax runs over the one output axis the labels lack (pixel accuracy), labels outside
    [0, C) (255: ignore) are not judged, and labels that fit nothing are a DataError."""
    from edgekit.errors import DataError
    from edgekit.quantize.control import labelled_figures

    rng = np.random.default_rng(0)
    maps = [[rng.normal(size=(1, 5, 8, 8)).astype(np.float32)] for _ in range(6)]
    labels = np.stack([m[0][0].argmax(0) for m in maps])
    labels[0, :2] = 255  # ignored
    noisy = [[m[0] + 0.8 * rng.normal(size=m[0].shape).astype(np.float32)] for m in maps]
    fig = labelled_figures(maps, noisy, labels)
    assert fig["fp32_accuracy"] == 1.0 and 0.3 < fig["int8_accuracy"] < 0.99
    logits = [[rng.normal(size=(1, 4)).astype(np.float32)] for _ in range(6)]  # a classifier: one label a sample
    assert labelled_figures(logits, logits, np.array([r[0].argmax() for r in logits]))["fp32_accuracy"] == 1.0
    argmax_maps = [[m[0].argmax(1)] for m in maps]  # a model with its own argmax output
    labels[0, :2] = -100  # ignored: C is unknown here, negative labels are not judged
    assert labelled_figures(argmax_maps, argmax_maps, labels)["fp32_accuracy"] == 1.0
    with pytest.raises(DataError, match="do not fit"):
        labelled_figures(maps, maps, np.zeros((6, 7, 7), np.int64))


def test_an_output_that_barely_varies_keeps_the_plain_cosine_in_fp32():
    """An output of 100 +- 3e-4 (a normalizer's scale) about its mean is all float32 rounding: a correct fp32
    artifact (a few ulps off) must not fail the 0.99999 cosine gate."""
    rng = np.random.default_rng(0)
    refs = [[(100 + 3e-4 * rng.normal(size=(1, 64))).astype(np.float32)] for _ in range(8)]
    ulps = [[r[0] + np.float32(3 * 7.6e-6) * rng.choice([-1, 1], size=r[0].shape).astype(np.float32)] for r in refs]
    assert check(compare(refs, ulps, "generic"), FP32)[0]


def test_one_tensor_of_boxes_and_scores_is_judged_per_feature():
    """A YOLO-style head writes one (1, M, 4 + K) tensor (or its (1, 4 + K, M) transpose): box corners in
    pixels next to class scores in 0..1. All-zero scores scored 0.9999995 (the boxes dominate the vector) and
    passed every floor. Each feature (the short axis) is standardized by its own spread first."""
    rng = np.random.default_rng(0)
    refs = [[np.concatenate([rng.uniform(0, 640, (1, 100, 4)), rng.random((1, 100, 3)) ** 4], -1).astype(np.float32)]
            for _ in range(16)]
    zeroed = [[np.concatenate([r[0][..., :4], np.zeros_like(r[0][..., 4:])], -1)] for r in refs]
    for layout in ((0, 1, 2), (0, 2, 1)):
        ref = [[np.ascontiguousarray(r[0].transpose(layout))] for r in refs]
        bad = [[np.ascontiguousarray(z[0].transpose(layout))] for z in zeroed]
        assert compare(ref, bad, "generic")["cosine_mean"] < 0.8 and not check(compare(ref, bad, "generic"), INT8)[0]
        assert held_out_figures(ref, bad, "generic")["drop"] > 0.2
        close = [[r[0] * np.float32(1 + 1e-7)] for r in ref]
        assert check(compare(ref, close, "generic"), FP32)[0]
