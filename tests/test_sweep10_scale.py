"""Sweep 10, edgekit's own cost on bigger models: work done once that was done per target or per role.

Shapes of the models users ship (ResNet-50-like bottlenecks, EfficientNet-like MBConv + SE, a BERT-width
encoder, a wide UNet: fixtures/sweep10_scale_models.py) at toy sizes; each test checks that a repeated step
is now done once AND that the result is byte-identical to doing it again. No timings here (benchmarks are
in the commit messages)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def _npz(tmp_path: Path, n: int = 16, size: int = 32) -> str:
    path = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((n, 3, size, size)).astype(np.float32))
    return str(path)


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _spy_references(monkeypatch) -> list[tuple[int, bytes]]:
    """Every (model, sample) the source model is run on for reference outputs."""
    import edgekit.verify as verify

    runs: list[tuple[int, bytes]] = []
    original = verify.reference_outputs

    def spy(model, samples):
        feeds = list(samples)
        runs.extend((id(model.module), hashlib.sha256(f["x"].tobytes()).digest()) for f in feeds)
        return original(model, feeds)

    monkeypatch.setattr(verify, "reference_outputs", spy)
    return runs


def test_each_sample_runs_through_the_source_model_once(monkeypatch, tmp_path):
    from edgekit.api import convert

    runs = _spy_references(monkeypatch)
    res = convert("sweep10_scale_models:tiny_resnet", ["onnxruntime", "arm"], tmp_path / "out",
                  calibration=_npz(tmp_path), input_shapes={"x": (1, 3, 32, 32)})
    assert [a["precision"] for a in res["artifacts"]] == ["fp32", "int8"]
    assert all(a["verification"]["passed"] for a in res["artifacts"])
    assert res["artifacts"][0]["verification"]["samples"] == 16  # fp32: every sample; int8: the held-out 4
    assert res["artifacts"][1]["verification"]["samples"] == 4
    assert len(runs) == len(set(runs)) == 16  # task check (8), fp32 set (16), held-out (4): 16 distinct samples


def test_int8_only_does_not_run_the_fp32_verification_set(monkeypatch, tmp_path):
    from edgekit.api import convert

    runs = _spy_references(monkeypatch)
    res = convert("sweep10_scale_models:tiny_resnet", ["arm"], tmp_path / "out", calibration=_npz(tmp_path),
                  input_shapes={"x": (1, 3, 32, 32)})
    assert res["artifacts"][0]["verification"]["passed"]
    assert len(runs) == len(set(runs)) <= 8 + 4  # the task check's 8 and the 4 held out; not the 16 of fp32


def test_pruned_model_and_its_original_are_each_run_once_per_sample(monkeypatch, tmp_path):
    from edgekit.api import convert

    runs = _spy_references(monkeypatch)
    res = convert("sweep10_scale_models:tiny_resnet", ["onnxruntime"], tmp_path / "out", calibration=_npz(tmp_path),
                  input_shapes={"x": (1, 3, 32, 32)}, prune=0.3)
    fig = res["artifacts"][0]["verification"]
    assert fig["passed"] and fig["vs_unpruned"]["samples"] == 16
    assert len(runs) == len(set(runs)) == 32  # 16 samples x (original, pruned): the task check reused
    assert len({m for m, _ in runs}) == 2


def _onnx(tmp_path: Path, factory, shape=(1, 3, 32, 32)) -> Path:
    import torch

    path = tmp_path / f"{factory.__name__}.onnx"
    torch.onnx.export(factory(), (torch.randn(*shape),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"])
    return path


def _calib(n: int = 12, size: int = 32):
    from edgekit.data import SampleSet

    rng = np.random.default_rng(1)
    data = rng.standard_normal((n, 1, 3, size, size)).astype(np.float32)
    return SampleSet("random", n, lambda i: {"x": data[i]})


def test_the_all_int8_graph_is_written_once_and_shipped_byte_identical(monkeypatch, tmp_path):
    """Without --max-drop the analysed graph is the shipped one: ORT's quantizer ran twice for it."""
    import sweep10_scale_models as scale

    from edgekit.quantize import qdq, static
    from edgekit.targets import get_target

    model, calib = _onnx(tmp_path, scale.tiny_resnet), _calib()
    calls = []
    original = qdq.write_qdq
    monkeypatch.setattr(qdq, "write_qdq", lambda *a, **k: calls.append(1) or original(*a, **k))
    report = static.quantize_model(model, tmp_path / "memo.onnx", get_target("onnxruntime"), calib)
    assert len(calls) == 1 and report["quantized_nodes"] > 0
    monkeypatch.setattr(static.Calibrated, "_copy_written", lambda *a: False)  # every write from scratch
    again = static.quantize_model(model, tmp_path / "fresh.onnx", get_target("onnxruntime"), calib)
    assert len(calls) == 3
    assert _sha(tmp_path / "memo.onnx") == _sha(tmp_path / "fresh.onnx")
    assert again["bias_corrected_layers"] == report["bias_corrected_layers"] > 0


def test_a_written_graph_changed_on_disk_is_written_again(tmp_path):
    import onnx
    import sweep10_scale_models as scale

    from edgekit.quantize import qdq, static
    from edgekit.quantize.scheme import scheme_for
    from edgekit.targets import get_target

    model = qdq.prepare(onnx.load(str(_onnx(tmp_path, scale.tiny_resnet))))
    cal = static.calibrate(model, scheme_for(get_target("arm"), None, None), _calib(), tmp_path)
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    cal.write(first)
    digest = _sha(first)
    first.write_bytes(b"overwritten")  # someone else's file now: not a copy source
    cal.write(second)
    assert _sha(second) == digest
    layer = next(iter(cal.groups))
    cal.write(first, [layer])  # another float set: its own graph
    assert _sha(first) != digest


def test_targets_with_equal_statistics_calibrate_once(monkeypatch, tmp_path):
    """onnxruntime and arm differ in what they write (float outputs, extra op types), not in what they measure."""
    import sweep10_scale_models as scale

    from edgekit.quantize import static
    from edgekit.targets import get_target

    model, calib = _onnx(tmp_path, scale.tiny_resnet), _calib()
    collected = []
    original = static.collect
    monkeypatch.setattr(static, "collect", lambda *a, **k: collected.append(1) or original(*a, **k))
    shared: dict = {}
    for name in ("onnxruntime", "arm"):
        static.quantize_model(model, tmp_path / f"{name}.shared.onnx", get_target(name), calib, shared=shared)
    assert len(collected) == 1
    for name in ("onnxruntime", "arm"):
        static.quantize_model(model, tmp_path / f"{name}.alone.onnx", get_target(name), calib)
        assert _sha(tmp_path / f"{name}.shared.onnx") == _sha(tmp_path / f"{name}.alone.onnx")
    assert _sha(tmp_path / "onnxruntime.alone.onnx") != _sha(tmp_path / "arm.alone.onnx")
    other = _calib(n=10)  # other samples: measured anew
    static.quantize_model(model, tmp_path / "other.onnx", get_target("arm"), other, shared=shared)
    assert len(collected) == 4


def test_layer_error_sums_skip_non_finite_values_and_only_them():
    """sensitivity._errors sums squares over the elements finite on both sides (a masked -inf, a NaN); the
    all-finite case now skips the mask and its copies, and must give the very same sums."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.data import SampleSet
    from edgekit.quantize.sensitivity import _errors

    def graph(scale: float):
        nodes = [helper.make_node("Log", ["x"], ["l"]), helper.make_node("Mul", ["l", "s"], ["y"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 300])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 300])],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [scale])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    rng = np.random.default_rng(3)
    xs = [np.abs(rng.standard_normal((1, 2, 300))).astype(np.float32) + 0.1 for _ in range(3)]
    xs[1][0, 0, :7] = [-1, 0, 0, -2, 5, 0, -3]  # NaN and -inf on both sides
    samples = SampleSet("s", 3, lambda i: {"x": xs[i]})
    got = _errors(graph(1.0), graph(1.01), samples, [("y", "y")])[("y", "y")]
    signal = noise = 0.0
    for x in xs:
        with np.errstate(all="ignore"):
            ref = np.log(x).astype(np.float64)
            cand = (np.log(x) * np.float32(1.01)).astype(np.float64)
        ok = np.isfinite(ref) & np.isfinite(cand)
        signal += float(np.sum(ref[ok] ** 2))
        noise += float(np.sum((ref[ok] - cand[ok]) ** 2))
    assert np.isfinite(got).all() and got[1] > 0
    np.testing.assert_allclose(got, (signal, noise), rtol=1e-6)
    assert onnx.checker.check_model(graph(1.0)) is None


def test_shape_inference_without_weights_gives_onnx_s_own_result(tmp_path):
    """onnx_shapes.infer_shapes keeps large float initializers out of onnx's C++ round trip: the inferred model
    (value_info, weights and all) is onnx's own, and the caller's model is left as it was."""
    import onnx
    import sweep10_scale_models as scale
    import torch

    from edgekit.onnx_shapes import infer_shapes

    path = tmp_path / "bert.onnx"
    ids = torch.randint(1, 100, (1, 16))
    torch.onnx.export(scale.tiny_bert(), (ids, torch.ones(1, 16, dtype=torch.long)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["y"])
    unet = tmp_path / "unet.onnx"  # Resize / ConvTranspose / Concat, float scales read by inference
    torch.onnx.export(torch.nn.Sequential(scale.tiny_unet(), torch.nn.Upsample(scale_factor=2.0)),
                      (torch.randn(1, 3, 32, 32),), str(unet), dynamo=False)
    for p in (path, unet):
        model = onnx.load(str(p))
        before = model.SerializeToString(deterministic=True)
        for kw in ({}, {"data_prop": True, "strict_mode": False}):
            ours, theirs = infer_shapes(model, **kw), onnx.shape_inference.infer_shapes(model, **kw)
            assert len(ours.graph.value_info) > 20
            assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
            light = infer_shapes(model, keep_data=False, **kw)
            assert list(light.graph.value_info) == list(theirs.graph.value_info)
        assert model.SerializeToString(deterministic=True) == before


def test_tflite_shape_pass_without_weight_bytes_derives_every_shape(tmp_path):
    from edgekit.backends.tflite import prepare

    path = tmp_path / "r.onnx"
    import sweep10_scale_models as scale
    import torch

    torch.onnx.export(scale.tiny_resnet(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False)
    g = prepare.load_graph(path)
    light = dict(g.shapes)
    import onnx

    full = onnx.shape_inference.infer_shapes(prepare.to_model(g), data_prop=True)  # with every weight's bytes
    for vi in full.graph.value_info:
        assert light[vi.name] == tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    assert len(full.graph.value_info) > 30


def test_int8_schemes_share_the_fp32_outputs_of_the_held_out_samples(monkeypatch, tmp_path):
    import sweep10_scale_models as scale

    from edgekit.quantize import control, static
    from edgekit.targets import get_target

    model, calib, held = _onnx(tmp_path, scale.tiny_resnet), _calib(), _calib(n=4)
    runs = []
    original = control.run_outputs
    monkeypatch.setattr(control, "run_outputs", lambda *a: runs.append(1) or original(*a))
    shared: dict = {}
    reports = [static.quantize_model(model, tmp_path / f"{t}.onnx", get_target(t), calib, held_out=held, shared=shared)
               for t in ("onnxruntime", "arm")]
    assert len(runs) == 1  # the fp32 graph on the held-out samples, once for both schemes
    alone = static.quantize_model(model, tmp_path / "arm.alone.onnx", get_target("arm"), calib, held_out=held)
    assert len(runs) == 2 and alone["accuracy"] == reports[1]["accuracy"] is not None


def test_clean_up_check_draws_its_inputs_from_the_model_it_is_given():
    import onnx
    from onnx import TensorProto, helper

    from edgekit.export_check import same_outputs

    def graph(k: float):
        g = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                              [helper.make_tensor("k", TensorProto.FLOAT, [], [k])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    before = graph(2.0)
    data = before.SerializeToString()
    for other, agree in ((graph(2.0), True), (graph(2.5), False)):
        assert same_outputs(data, other, before)[0] is agree
        assert same_outputs(data, other) == same_outputs(data, other, before)
    assert onnx.load_from_string(data) == before


def test_transformer_int8_weights_graph_is_analysed_once_for_openvino_and_arm(monkeypatch, tmp_path):
    """Both targets give a transformer int8 weights with activations left to the runtime: the same int8 graph,
    whose per-layer analysis (both graphs run on every tensor) was measured twice."""
    import sweep10_scale_models as scale
    import torch

    from edgekit.data import SampleSet
    from edgekit.quantize import dynamic, static
    from edgekit.targets import get_target

    path = tmp_path / "bert.onnx"
    torch.onnx.export(scale.bert(layers=2, d=64, heads=4, vocab=100, tokens=16, classes=3),
                      (torch.randint(1, 100, (1, 16)), torch.ones(1, 16, dtype=torch.long)), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["y"])
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (8, 1, 16))
    calib = SampleSet("ids", 8, lambda i: {"input_ids": ids[i], "attention_mask": np.ones((1, 16), np.int64)})
    calls = []
    original = dynamic.per_layer
    monkeypatch.setattr(dynamic, "per_layer", lambda *a: calls.append(1) or original(*a))
    shared: dict = {}
    reports = {t: static.quantize_model(path, tmp_path / f"{t}.onnx", get_target(t), calib, shared=shared)
               for t in ("openvino", "arm")}
    assert len(calls) == 1 and reports["openvino"]["per_layer"] == reports["arm"]["per_layer"]
    assert reports["arm"]["quantized_nodes"] > 0
    alone = static.quantize_model(path, tmp_path / "alone.onnx", get_target("arm"), calib)
    assert len(calls) == 2 and alone["per_layer"] == reports["arm"]["per_layer"]
    assert _sha(tmp_path / "alone.onnx") == _sha(tmp_path / "arm.onnx") == _sha(tmp_path / "openvino.onnx")


def test_identical_int8_graphs_of_two_targets_are_run_once_for_the_quantized_reference(monkeypatch, tmp_path):
    import edgekit.backends.onnxruntime as ort_backend
    from edgekit.api import convert
    from edgekit.sources import parse_input_shapes

    loads = []
    original = ort_backend.load
    monkeypatch.setattr(ort_backend, "load", lambda path, options=None: loads.append(
        (options.extra or {}).get("optimization")) or original(path, options))
    rng = np.random.default_rng(0)
    data = tmp_path / "ids.npz"
    np.savez(data, input_ids=rng.integers(1, 100, (12, 16)), attention_mask=np.ones((12, 16), np.int64))
    res = convert("sweep10_scale_models:tiny_bert", ["openvino", "arm"], tmp_path / "out", precision="int8",
                  calibration=str(data), input_shapes=parse_input_shapes(["input_ids=1x16:int64",
                                                                          "attention_mask=1x16:int64"]))
    assert all(a["verification"]["passed"] for a in res["artifacts"])
    figures = [a["verification"]["quantized_graph"] for a in res["artifacts"]]
    assert figures[0] == figures[1] and loads.count("none") == 1  # one int8 graph, run once for both
