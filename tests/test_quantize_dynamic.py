"""Dynamic int8 for transformer graphs (quantize/dynamic.py): ONNX Runtime's scheme quantizes a transformer's
activations at run time; OpenVINO's stays static QDQ."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.data import SampleSet
from edgekit.quantize import quantize_model
from edgekit.targets import get_target

torch = pytest.importorskip("torch")
T, D = 8, 32


class Block(torch.nn.Module):
    """A transformer block's shape (LayerNorm, softmax attention, Erf-GELU FFN): what ops.is_transformer sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv = torch.nn.Linear(D, 3 * D)
        self.proj = torch.nn.Linear(D, D)
        self.up = torch.nn.Linear(D, 4 * D)
        self.down = torch.nn.Linear(4 * D, D)
        self.norm = torch.nn.LayerNorm(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5, dim=-1) @ v
        h = x + self.proj(a)
        return self.down(torch.nn.functional.gelu(self.up(self.norm(h)))) + h


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSet, SampleSet]:
    path = tmp_path_factory.mktemp("dyn") / "block.onnx"
    torch.onnx.export(Block().eval(), (torch.randn(1, T, D),), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False, opset_version=17)
    rng = np.random.default_rng(0)
    # inputs whose scale varies 300x from sample to sample: one static range cannot serve them all
    x = [(rng.standard_normal((1, T, D)) * 10 ** rng.uniform(-1.5, 1)).astype(np.float32) for _ in range(64)]
    calib = SampleSet("48 scaled vectors", 48, lambda i: {"x": x[i]})
    held = SampleSet("16 scaled vectors", 16, lambda i: {"x": x[48 + i]})
    return path, calib, held


def _worst_cosine(fp32: Path, int8: Path, held: SampleSet) -> float:
    import onnxruntime as ort

    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8))
    cos = []
    for feed in held:
        u, w = a.run(None, feed)[0].ravel(), b.run(None, feed)[0].ravel()
        cos.append(float(u @ w / (np.linalg.norm(u) * np.linalg.norm(w))))
    return min(cos)


def test_transformer_activations_are_quantized_per_run_on_onnx_runtime(block, tmp_path: Path) -> None:
    fp32, calib, held = block
    target = get_target("onnxruntime")
    static = dataclasses.replace(target, quantization={**target.quantization, "transformer_activations": "static"})
    rep = quantize_model(fp32, tmp_path / "dyn.onnx", target, calib, held_out=held, task="embedding")
    rep_static = quantize_model(fp32, tmp_path / "static.onnx", static, calib, held_out=held, task="embedding")
    assert rep["scheme"]["activation_quantization"] == "dynamic" and rep["scheme"]["op_policy"] == "transformer"
    assert rep_static["scheme"]["activation_quantization"] == "static"
    ops = [n.op_type for n in onnx.load(str(tmp_path / "dyn.onnx")).graph.node]
    assert ops.count("MatMulInteger") == 4 and "DynamicQuantizeLinear" in ops and "QuantizeLinear" not in ops
    assert ops.count("MatMul") == 2  # attention scores and weighted values: activation x activation stays float
    assert rep["quantized_nodes"] == 4 and {r["op"] for r in rep["per_layer"]} <= {"MatMul", "Gemm"}
    assert len(rep["per_layer"]) == 4 and all(r["sqnr_db"] is not None for r in rep["per_layer"])
    dyn, stat = _worst_cosine(fp32, tmp_path / "dyn.onnx", held), _worst_cosine(fp32, tmp_path / "static.onnx", held)
    assert dyn > 0.999 and stat < 0.99, (dyn, stat)  # the quiet samples drown in one static range


def test_max_drop_keeps_dynamic_layers_float(block, tmp_path: Path) -> None:
    fp32, calib, held = block
    rep = quantize_model(fp32, tmp_path / "b.onnx", get_target("onnxruntime"), calib, held_out=held,
                         task="embedding", max_drop=1e-6)
    assert rep["float_layers"] and rep["within_budget"] and rep["fallback_order"] == "layer"
    names = {n.name: n.op_type for n in onnx.load(str(tmp_path / "b.onnx")).graph.node}
    assert all(names.get(n) in ("MatMul", "Gemm") for n in rep["float_layers"])  # still the float op, same name


def test_openvino_gets_int8_weights_alone_and_runs_int8_kernels(block, tmp_path: Path) -> None:
    """OpenVINO's scheme ("weights"): DequantizeLinear on the constant weights only; its CPU plugin runs the
    FullyConnected layers as i8 kernels, quantizing their inputs per run."""
    import openvino as ov

    fp32, calib, held = block
    rep = quantize_model(fp32, tmp_path / "ov.onnx", get_target("openvino"), calib, held_out=held, task="embedding")
    model = onnx.load(str(tmp_path / "ov.onnx"))
    inits = {t.name for t in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert rep["scheme"]["activation_quantization"] == "weights" and rep["quantized_nodes"] == 4
    assert len(dq) == 4 and all(n.input[0] in inits for n in dq)  # weights only
    assert not {"QuantizeLinear", "MatMulInteger", "DynamicQuantizeLinear"} & {n.op_type for n in model.graph.node}
    compiled = ov.Core().compile_model(str(tmp_path / "ov.onnx"), "CPU")
    precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"]
    assert len(precisions) == 4 and set(precisions) == {"i8"}, precisions
    assert _worst_cosine(fp32, tmp_path / "ov.onnx", held) > 0.999


def test_weights_only_quantizes_each_weight_on_its_output_channel_axis(tmp_path: Path) -> None:
    """Gather rows (axis 0), Gemm with transB (axis 0) and without (axis 1); a weight shared by two nodes is
    converted once; the result stays within int8 rounding of the fp32 graph."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.quantize import weights_only

    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 16)).astype(np.float32) * np.linspace(0.1, 10, 50, dtype=np.float32)[:, None]
    w_t = rng.standard_normal((8, 16)).astype(np.float32)  # (N, K), transB = 1
    w = rng.standard_normal((16, 8)).astype(np.float32)  # (K, N)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="emb"),
             helper.make_node("Gemm", ["e", "w_t"], ["a"], name="g1", transB=1),
             helper.make_node("Gemm", ["e", "w"], ["b"], name="g2"),
             helper.make_node("Gemm", ["e", "w"], ["c"], name="g3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 8]) for n in "abc"],
                              [numpy_helper.from_array(v, k) for k, v in {"table": table, "w_t": w_t, "w": w}.items()])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    weights_only.write(src, tmp_path / "q.onnx", exclude=["g3"])
    q = onnx.load(str(tmp_path / "q.onnx"))
    axes = {n.input[0]: n.attribute[0].i for n in q.graph.node if n.op_type == "DequantizeLinear"}
    assert axes == {"table_w8_0_q": 0, "w_t_w8_0_q": 0, "w_w8_1_q": 1}
    assert next(n for n in q.graph.node if n.name == "g3").input[1] == "w"  # excluded: float weight
    ids = {"ids": np.array([0, 7, 25, 49])}
    ref = ort.InferenceSession(str(src)).run(None, ids)
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, ids)
    for r, g in zip(ref, got):  # all three read the int8 table: close, not equal
        assert np.abs(r - g).max() <= 0.02 * np.abs(r).max() and not np.array_equal(r, g)


def test_convert_says_a_transformer_is_not_calibrated(block, tmp_path: Path) -> None:
    """The progress line names what the scheme does: a transformer's activations are quantized per run (ONNX
    Runtime) or by the runtime (OpenVINO), with no calibrated ranges; a CNN's are calibrated. The line said
    'uint8 activations, mse calibration, N samples' for both."""
    import sys

    fp32, _, _ = block
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(size=(16, 1, T, D)).astype(np.float32))
    res = subprocess.run([sys.executable, "-m", "edgekit", "convert", str(fp32), "-t", "ort", "-t", "openvino",
                          "--precision", "int8", "--calibration", str(tmp_path / "x.npz"), "--task", "embedding",
                          "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert ("quantizing to int8 (transformer graph: int8 weights, activations quantized per run by ONNX Runtime; "
            "no ranges to calibrate)") in res.stderr
    assert "activations float, quantized by the runtime per run; no ranges to calibrate" in res.stderr
    assert "calibration," not in res.stderr
