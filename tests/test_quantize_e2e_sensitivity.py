"""End-to-end fallback order for --max-drop (e2e_sensitivity.py): faithful to the shipped graphs, finds a broken
layer, drives the budget search, and falls back to the per-layer order when the evaluator cannot run the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.data import InputSpec, SampleSet, load_samples
from edgekit.quantize import control, e2e_sensitivity, qdq, quantize_model
from edgekit.quantize.scheme import scheme_for
from edgekit.quantize.static import calibrate
from edgekit.targets import get_target

INPUTS = [InputSpec("input", ("batch", 3, 32, 32))]


@pytest.fixture(scope="module")
def crops() -> SampleSet:
    return load_samples("natural_images", INPUTS)


def _nmse(ref: np.ndarray, out: np.ndarray) -> float:
    """The evaluator's loss for a non-classifier: MSE / variance of the fp32 output, per chunk of samples."""
    n, step = len(ref), e2e_sensitivity.CHUNK
    loss = sum(np.mean((out[j:j + step] - ref[j:j + step]) ** 2) / np.var(ref[j:j + step], ddof=1)
               * len(ref[j:j + step]) for j in range(0, n, step)) / n
    return float(loss)


def _calibrated(cnn: Path, crops: SampleSet, tmp_path: Path):
    calib = crops.select(48, seed=0)
    model = qdq.prepare(onnx.load(str(cnn)))
    cal = calibrate(model, scheme_for(get_target("onnxruntime"), "minmax"), calib, tmp_path)
    rows, order = cal.analyse(tmp_path / "analysis.onnx", calib.select(16, seed=0))
    return cal, calib.select(16, seed=0), set(order), rows


def test_gains_match_the_written_graphs_and_a_broken_layer_ranks_first(cnn: Path, crops: SampleSet,
                                                                       tmp_path: Path) -> None:
    cal, samples, quantized, rows = _calibrated(cnn, crops, tmp_path)
    m = e2e_sensitivity.measure(cal, tmp_path / "base.onnx", tmp_path, samples, quantized, "embedding")
    assert m is not None and m.samples == 16 and set(m.gain) == quantized and m.base_loss > 0
    # the evaluator's loss of each variant is the loss of the graph --max-drop would ship (run in ONNX Runtime)
    ref = np.concatenate([o[0] for o in control.run_outputs(cal.prepared, samples)])

    def ort_loss(layers: list[str]) -> float:
        cal.write(tmp_path / "v.onnx", layers)
        return _nmse(ref, np.concatenate([o[0] for o in control.run_outputs(tmp_path / "v.onnx", samples)]))

    base = ort_loss([])
    assert m.base_loss == pytest.approx(base, rel=0.05)
    for layer in quantized:
        assert base - m.gain[layer] == pytest.approx(ort_loss([layer]), rel=0.1, abs=0.02 * base), layer
    weighted = [n.name for n in cal.model.graph.node if n.op_type in ("Conv", "Gemm") and n.name in quantized]
    assert weighted and all(m.macs[n] > 0 for n in weighted)  # a weighted layer's group runs float MACs

    # corrupt the activation range of one conv's (Relu-folded) output: only floating that conv removes it
    graph = cal.model.graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    victim = convs[-1]
    relu = [n for n in graph.node if n.input and n.input[0] == victim.output[0] and n.op_type in ("Relu", "Clip")]
    for t in [victim.output[0], *(r.output[0] for r in relu)]:
        lo, hi = cal.ranges[t]
        cal.ranges[t] = (lo * 0.02, hi * 0.02)
    broken = e2e_sensitivity.measure(cal, tmp_path / "base.onnx", tmp_path, samples, quantized, "embedding")
    assert broken.base_loss > 10 * m.base_loss
    order = broken.order(quantized, "e2e")
    assert order[0] == victim.name and sorted(order) == sorted(quantized)
    assert broken.gain[victim.name] > 0.8 * broken.base_loss  # floating it removes most of the output error
    # per float MAC: a cheaper group that also drops the broken quantizer (the one reading it) may come first
    cheap = broken.order(quantized, "e2e-cost")[0]
    assert broken.gain[cheap] > 0.8 * broken.base_loss and broken.cost(cheap) <= broken.cost(victim.name)


@pytest.mark.parametrize("fallback", ["e2e", "e2e-greedy"])
def test_max_drop_with_the_e2e_order_meets_its_budget(cnn: Path, crops: SampleSet, tmp_path: Path,
                                                      fallback: str) -> None:
    calib, held = crops.select(64, seed=0).split(held_out=0.25, seed=0)
    report = quantize_model(cnn, tmp_path / "e2e.onnx", get_target("onnxruntime"), calib, held_out=held,
                            task="embedding", method="minmax", max_drop=3e-6, fallback=fallback)
    assert report["fallback_order"] == fallback and report["within_budget"]
    assert report["search"][0]["kept_float"] == 0 and report["search"][0]["drop"] > 3e-6  # the budget bites
    assert report["float_layers"] and report["accuracy"]["drop"] <= 3e-6
    gains = {r["node"]: r["e2e_gain"] for r in report["per_layer"] if "e2e_gain" in r}
    assert gains and report["float_layers"][0] == max(gains, key=gains.get)  # the largest output gain goes first
    assert all(r["float"] == (r["node"] in report["float_layers"]) for r in report["per_layer"])


def test_unsupported_graph_falls_back_to_the_per_layer_order(cnn: Path, crops: SampleSet, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    from edgekit.quantize import torch_graph

    monkeypatch.delitem(torch_graph.OPS, "Add")  # an op the evaluator has no kernel for
    calib, held = crops.select(64, seed=0).split(held_out=0.25, seed=0)
    report = quantize_model(cnn, tmp_path / "layer.onnx", get_target("onnxruntime"), calib, held_out=held,
                            task="embedding", method="minmax", max_drop=3e-6)
    assert report["fallback_order"] == "layer" and report["within_budget"] and report["float_layers"]
    assert "per-layer order" in capsys.readouterr().err
    assert not any("e2e_gain" in r for r in report["per_layer"])


def test_convert_fallback_order_option(invoke, tmp_path: Path) -> None:
    """`convert --max-drop X --fallback-order layer` reaches the quantizer (the JSON names the order used);
    an unknown order is a usage error (exit 2) with nothing written."""
    pytest.importorskip("safetensors")
    res = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "--precision", "int8", "--max-drop", "0.5",
                 "--fallback-order", "layer", "--calibration-size", "64", "-o", str(tmp_path / "out"), "--json")
    assert res.returncode == 0, res.stderr
    q = res.json()["artifacts"][0]["quantization"]
    assert q["fallback_order"] == "layer" and q["max_drop"] == 0.5
    bad = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "--precision", "int8", "--max-drop", "0.5",
                 "--fallback-order", "random", "-o", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--fallback-order" in bad.stderr and not (tmp_path / "bad").exists()
