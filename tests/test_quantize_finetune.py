"""End-to-end int8 fine-tuning: the torch evaluator matches ONNX Runtime's QDQ semantics, fine-tuning lowers
the held-out error of the int8 graph, stays on the int8 grid next to the fp32 weights, and is applied to
graphs with layers kept float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.data import InputSpec, SampleSet, load_samples
from edgekit.quantize import control, qdq
from edgekit.quantize.scheme import scheme_for
from edgekit.quantize.static import calibrate
from edgekit.targets import get_target

INPUTS = [InputSpec("input", ("batch", 3, 32, 32))]


@pytest.fixture(scope="module")
def data() -> tuple[SampleSet, SampleSet]:
    return load_samples("natural_images", INPUTS).select(160, seed=0).split(held_out=0.25, seed=0)


def _outputs(path: Path, samples: SampleSet) -> np.ndarray:
    return np.concatenate([o[0] for o in control.run_outputs(path, samples)])


def _err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((out - ref) ** 2) / np.sum(ref ** 2))


def test_torch_graph_follows_the_qdq_semantics(cnn: Path, data: tuple[SampleSet, SampleSet], tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from edgekit.quantize.finetune import find_layers
    from edgekit.quantize.torch_graph import TorchGraph

    calib, held = data
    model = qdq.prepare(onnx.load(str(cnn)))
    cal = calibrate(model, scheme_for(get_target("onnxruntime")), calib, tmp_path)
    cal.write(tmp_path / "q.onnx")
    q = onnx.load(str(tmp_path / "q.onnx"))
    graph = TorchGraph(q, find_layers(q, cal.model))  # the equalized fp32 graph the QDQ one was written from
    assert len(graph.layers) == 5 and graph.fused  # 4 convolutions + the linear layer; activation Q/DQ pairs fused
    x = np.concatenate([s["input"] for s in list(held)[:8]])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(tmp_path / "q.onnx"), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        out = graph({"input": torch.as_tensor(x)})[0].numpy()
    fp32 = ort.InferenceSession(str(cnn), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert _err(out, ref) < 0.05 * _err(fp32, ref)  # the same int8 function, up to rare rounding ties


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSet, SampleSet]:
    """zoo:mnist_cnn (trained here, real weights) with its calibration digits and held-out digits."""
    pytest.importorskip("safetensors")
    from edgekit.export import export_onnx
    from edgekit.zoo import get_entry

    entry = get_entry("mnist_cnn")
    path = export_onnx(entry.build(), list(entry.inputs), list(entry.output_names),
                       tmp_path_factory.mktemp("mnist") / "mnist.onnx")
    calib = load_samples("mnist", list(entry.inputs)).select(128, seed=0)
    held = load_samples("mnist:eval", list(entry.inputs)).select(200, seed=0)
    return path, calib, held


def test_finetune_lowers_held_out_error_and_stays_on_the_grid(mnist: tuple[Path, SampleSet, SampleSet],
                                                             tmp_path: Path) -> None:
    from dataclasses import replace

    fp32, calib, held = mnist
    model = qdq.prepare(onnx.load(str(fp32)))
    ref = _outputs(fp32, held)
    base = scheme_for(get_target("onnxruntime"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cal0 = calibrate(model, base, calib, tmp_path / "a")
    cal0.write(tmp_path / "nearest.onnx")
    cal = calibrate(model, replace(base, finetune_steps=80), calib, tmp_path / "b")
    assert cal.finetuned is not None and cal.finetuned.loss_after < cal.finetuned.loss_before
    cal.write(tmp_path / "tuned.onnx")
    e0, e1 = _err(_outputs(tmp_path / "nearest.onnx", held), ref), _err(_outputs(tmp_path / "tuned.onnx", held), ref)
    assert e1 < 0.8 * e0, (e0, e1)  # digits never seen while tuning
    # the same graph; int8 weights within one level of the fp32 weight; ORT still fuses it into int8 kernels
    a, b = onnx.load(str(tmp_path / "nearest.onnx")), onnx.load(str(tmp_path / "tuned.onnx"))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    for la, q, _ in cal.finetuned.layers.values():
        assert q.min() >= la.qmin and q.max() <= la.qmax
        assert np.abs(q - la.base).max() <= 1.5 + 1e-6
    # a layer kept in float keeps its fp32 weights; the others get the learned values
    first = next(n.name for n in model.graph.node if n.op_type == "Conv")
    cal.write(tmp_path / "f.onnx", [first])
    f = onnx.load(str(tmp_path / "f.onnx"))
    conv = next(n for n in f.graph.node if n.name == first)
    assert conv.input[1] in {t.name for t in f.graph.initializer}  # plain fp32 initializer, no DequantizeLinear
    assert _err(_outputs(tmp_path / "f.onnx", held), ref) < 1.5 * e1


def test_unsupported_op_skips_finetuning(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from edgekit.quantize.finetune import finetune

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Einsum", ["input", "input"], ["y"], equation="ij,ij->ij")], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    samples = SampleSet("two", 2, lambda i: {"input": np.ones((1, 4), np.float32)})
    before = path.read_bytes()
    assert finetune(path, onnx.load(str(path)), path, samples, steps=2, task="classification") is None
    assert path.read_bytes() == before


def test_convert_with_int8_finetune(invoke, tmp_path: Path) -> None:
    """`--int8-finetune N` through the CLI: a verified int8 artifact per target from one fine-tuned graph,
    the fine-tuning figures in the JSON, byte-identical on a rerun, and a negative step count refused with a
    usage error."""
    pytest.importorskip("safetensors")
    res = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "-t", "tflite", "--precision", "int8",
                 "--int8-finetune", "10", "--calibration-size", "64", "-o", str(tmp_path / "out"), "--json")
    assert res.returncode == 0, res.stderr
    arts = res.json()["artifacts"]
    assert len(arts) == 2
    again = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "-t", "tflite", "--precision", "int8",
                   "--int8-finetune", "10", "--calibration-size", "64", "-o", str(tmp_path / "again"), "--json")
    assert [a["sha256"] for a in again.json()["artifacts"]] == [a["sha256"] for a in arts]  # seeded: same bytes
    for art in arts:
        ft = art["quantization"]["finetune"]
        assert ft["steps"] == 10 and ft["layers"] >= 5 and ft["loss_after"] <= ft["loss_before"] * 1.5
        assert art["verification"]["passed"]
    bad = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "--precision", "int8", "--int8-finetune", "-3",
                 "-o", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--int8-finetune" in bad.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_torch_kernels_match_onnxruntime() -> None:
    """The evaluator's ops on a graph of shape/indexing/normalisation ops a transformer exports."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.quantize.torch_graph import TorchGraph

    def const(name: str, v) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(v), name)

    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "one"], ["seq"], axis=0),  # scalar index
        helper.make_node("Unsqueeze", ["seq", "zero1"], ["seq1"]),
        helper.make_node("Concat", ["two1", "seq1", "eight1"], ["shape3"], axis=0),
        helper.make_node("Expand", ["bias", "shape3"], ["bias3"]),
        helper.make_node("Add", ["x", "bias3"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("Erf", ["ln"], ["e"]),
        helper.make_node("Slice", ["e", "s0", "s1", "s2"], ["sl"]),
        helper.make_node("Softmax", ["sl"], ["sm"], axis=-1),
        helper.make_node("ReduceL2", ["sm", "ax"], ["l2"], keepdims=1),
        helper.make_node("Div", ["sm", "l2"], ["nrm"]),
        helper.make_node("Transpose", ["nrm"], ["t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["nrm", "t"], ["y"]),
    ]
    inits = [const("one", np.int64(1)), const("zero1", np.array([0], np.int64)),
             const("two1", np.array([2], np.int64)), const("eight1", np.array([8], np.int64)),
             const("bias", np.linspace(-1, 1, 8, dtype=np.float32)), const("gamma", np.full(8, 1.5, np.float32)),
             const("beta", np.full(8, 0.1, np.float32)), const("s0", np.array([1], np.int64)),
             const("s1", np.array([-1], np.int64)), const("s2", np.array([2], np.int64)),
             const("ax", np.array([-1], np.int64))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])  # ReduceL2 axes as an input
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = TorchGraph(model, [])({"x": torch.as_tensor(x)})[0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_finetune_with_max_drop_never_keeps_more_layers_float(mnist: tuple[Path, SampleSet, SampleSet],
                                                             tmp_path: Path) -> None:
    """--int8-finetune with --max-drop picks the float layers on the plain graph, fine-tunes around them and then
    gives some back: never more float layers than without fine-tuning, within the budget on the held-out digits.
    (Fine-tuning the all-int8 graph first, then searching, kept 11 layers float here against 8 without.)"""
    import dataclasses

    from edgekit.quantize import quantize_model
    from edgekit.zoo import get_entry

    fp32, calib, _ = mnist
    held = load_samples("mnist:eval", list(get_entry("mnist_cnn").inputs)).select(300, seed=0)
    kw = {"held_out": held, "task": "classification", "max_drop": 0.0}
    # requantized logits (float_outputs off): 8 layers must stay float, so fine-tuning has layers to give back
    # (with float logits only 4 must, and fine-tuning around them costs one digit: the outcome is "dropped")
    target = get_target("onnxruntime")
    target = dataclasses.replace(target, quantization={**target.quantization, "float_outputs": False})
    plain = quantize_model(fp32, tmp_path / "plain.onnx", target, calib, **kw)
    tuned = quantize_model(fp32, tmp_path / "tuned.onnx", target, calib, finetune_steps=40, **kw)
    assert plain["search"][0]["drop"] > 0 and plain["float_layers"]  # the budget bites
    assert len(tuned["float_layers"]) <= len(plain["float_layers"])
    ft = tuned["finetune"]
    assert ft["fallback_first"] and ft["float_before"] == len(plain["float_layers"])
    assert ft["float_after"] == len(tuned["float_layers"]) <= len(plain["float_layers"])
    assert tuned["float_layers"] == plain["float_layers"][:ft["float_after"]]  # a prefix of the same order
    first = ft["rounds"][0]
    assert first["tuned_with_float"] == ft["float_before"] and first["tries"][0]["kept_float"] == ft["float_before"]
    assert ft["outcome"] == "fine-tuned" and [r["float"] for r in ft["rounds"] if r["kept"]][-1] == ft["float_after"]
    assert ft["steps"] == 40 and ft["layers"] >= 1
    assert tuned["within_budget"] and tuned["accuracy"]["drop"] <= 0.0
    # the shipped file itself agrees with fp32 on every held-out digit
    ref, out = _outputs(fp32, held), _outputs(tmp_path / "tuned.onnx", held)
    assert np.array_equal(ref.argmax(-1), out.argmax(-1))


def test_finetuning_is_kept_only_when_the_held_out_samples_agree(mnist: tuple[Path, SampleSet, SampleSet],
                                                                 tmp_path: Path) -> None:
    """Fine-tuning fits the calibration samples; the shipped graph is the better of plain and fine-tuned on the
    held-out samples, and the report says which and why."""
    from edgekit.quantize import quantize_model

    fp32, calib, held = mnist
    for steps in (5, 40):
        out = tmp_path / f"ft{steps}.onnx"
        rep = quantize_model(fp32, out, get_target("onnxruntime"), calib, held_out=held, task="embedding",
                             finetune_steps=steps)
        ft = rep["finetune"]
        plain, tuned = ft["held_out_drop_plain"], ft["held_out_drop_tuned"]
        assert plain != tuned  # (a cosine drop: the two graphs differ, so the choice between them is seen)
        assert rep["accuracy"]["drop"] == pytest.approx(min(plain, tuned), rel=1e-3)
        if tuned <= plain:
            assert ft["outcome"] == "fine-tuned" and ft["steps"] == steps
        else:
            assert ft["outcome"].startswith("reverted") and "steps" not in ft
