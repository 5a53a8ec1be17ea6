"""Dynamic int8 for transformer graphs (quantize/dynamic.py): ONNX Runtime's scheme quantizes a transformer's
activations at run time; OpenVINO's stays static QDQ."""

from __future__ import annotations

import dataclasses
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


def test_openvino_keeps_the_static_scheme_for_transformers(block, tmp_path: Path) -> None:
    fp32, calib, held = block
    rep = quantize_model(fp32, tmp_path / "ov.onnx", get_target("openvino"), calib, held_out=held, task="embedding")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "ov.onnx")).graph.node]
    assert rep["scheme"]["activation_quantization"] == "static" and "QuantizeLinear" in ops and "MatMulInteger" not in ops
