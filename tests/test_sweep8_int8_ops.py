"""Sweep 8 findings on int8 op coverage and synthetic integer inputs.

1. CNN_OPS left HardSwish, PRelu, Softmax, ReduceMean, DepthToSpace/SpaceToDepth and GatherElements float. On
   TFLite, whose backend lowers them int8, one whose consumer is float (a MobileNetV3 head: HardSwish ->
   ReduceMean -> Gemm) became DEQUANTIZE -> HARD_SWISH -> MEAN -> QUANTIZE. The tflite/arm targets now add them
   (`cnn_extra_op_types`, measured in targets/arm.toml); ONNX Runtime and OpenVINO gain nothing and keep them float.
2. Without --calibration, random ids fed to an integer input that indexes an activation (Gather/GatherElements on
   a non-constant tensor) ran out of range in the runtime: an internal error (exit 1). The ids are now drawn
   inside the indexed axis when the graph shows it (id_bounds.index_bounds), else the failure is bad input (exit 2)
   naming the input and asking for --calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgekit.quantize import ops
from edgekit.quantize.scheme import scheme_for
from edgekit.targets import get_target

INT8_KERNEL_OPS = {"HardSwish", "PRelu", "Softmax", "ReduceMean", "DepthToSpace", "SpaceToDepth", "GatherElements"}


class _HardSwishSE(nn.Module):
    """MobileNetV3 pieces: conv + HardSwish, depthwise + PRelu, squeeze-excitation (mean, HardSigmoid), a head
    HardSwish read by a global mean and a Linear (the path that stayed a float island)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.PReLU(16))
        self.se1, self.se2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Hardswish())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.stem(x))
        s = nn.functional.hardsigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        return self.fc(self.head(x * s).mean((2, 3)))


def test_cnn_int8_op_lists_per_target() -> None:
    """tflite/arm quantize the ops their backend runs int8; the other targets keep CNN_OPS; transformer graphs
    keep their own list everywhere."""
    cnn = helper.make_model(helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g", [], []))
    for name in ("arm", "tflite"):
        chosen, policy = ops.op_types_for(cnn, None, scheme_for(get_target(name)).cnn_extra_op_types)
        assert policy == "cnn" and INT8_KERNEL_OPS <= set(chosen) and "HardSigmoid" not in chosen, name
    for name in ("onnxruntime", "openvino"):
        chosen, _ = ops.op_types_for(cnn, None, scheme_for(get_target(name)).cnn_extra_op_types)
        assert chosen == list(ops.CNN_OPS), name
    transformer = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"]), helper.make_node("Softmax", ["c"], ["d"])], "t", [], []))
    assert ops.op_types_for(transformer, None, scheme_for(get_target("arm")).cnn_extra_op_types) == (
        list(ops.TRANSFORMER_OPS), "transformer")


def test_arm_int8_hardswish_se_block_has_no_float_island(tmp_path: Path, invoke) -> None:
    from edgekit.backends.tflite.inspect import describe

    torch.manual_seed(0)
    model = _HardSwishSE().eval()
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(tmp_path / "se.onnx"), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    r = invoke("convert", str(tmp_path / "se.onnx"), "-t", "arm", "--precision", "int8", "--calibration",
               "natural_images", "--calibration-size", "32", "-o", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr or r.exception
    art = r.json()["artifacts"][0]
    assert art["verification"]["passed"], art["verification"]
    assert INT8_KERNEL_OPS & {"HardSwish", "ReduceMean", "PRelu"} <= set(art["quantization"]["scheme"]["op_types"])
    info = describe(Path(art["path"]))
    assert info["ops"]["HARD_SWISH"] == 2 and info["ops"]["MEAN"] == 2 and info["ops"]["PRELU"] == 1
    # no DEQUANTIZE -> HARD_SWISH / MEAN / PRELU -> QUANTIZE: every one of them reads and writes int8, and so does
    # the SE gate's HardSigmoid (int8 MUL/ADD with clamping since 59be71e)
    assert not {"HARD_SWISH", "MEAN", "PRELU", "FULLY_CONNECTED"} & set(info["float_op_types"]), info
    assert info["ops"].get("DEQUANTIZE", 0) == 1, info["ops"]  # only the float model output


def _gather_model(path: Path, through: str) -> None:
    """y = (x @ w)[idx'] with idx' the integer input `idx` passed through `through` (Unsqueeze: a pure move of the
    ids; Add 0: arithmetic the bounds do not follow) and indexing an activation of 8 rows."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"])]
    if through == "Unsqueeze":
        nodes.append(helper.make_node("Unsqueeze", ["idx", "ax"], ["i2"]))
        extra = [numpy_helper.from_array(np.asarray([0], np.int64), "ax")]
        out_shape = [1, 3, 4]
    else:
        nodes.append(helper.make_node("Add", ["idx", "zero"], ["i2"]))
        extra = [numpy_helper.from_array(np.asarray(0, np.int64), "zero")]
        out_shape = [3, 4]
    nodes.append(helper.make_node("Gather", ["h", "i2"], ["y"], axis=0))
    graph = helper.make_graph(nodes, "take", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 4]),
                                              helper.make_tensor_value_info("idx", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], [w, *extra])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_synthetic_ids_stay_inside_an_indexed_activation(tmp_path: Path, invoke) -> None:
    from edgekit.data.id_bounds import id_bounds

    _gather_model(tmp_path / "take.onnx", "Unsqueeze")
    assert id_bounds(onnx_path=tmp_path / "take.onnx", names=["idx"]) == {"idx": 8}
    r = invoke("convert", str(tmp_path / "take.onnx"), "-t", "onnxruntime", "-o", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr or r.exception
    assert r.json()["artifacts"][0]["verification"]["passed"]


@pytest.mark.parametrize("source", ["onnx", "torchscript"])
def test_random_ids_out_of_an_indexed_axis_are_bad_input(tmp_path: Path, invoke, source: str) -> None:
    if source == "onnx":  # bounds not traceable (Add): the runtime's failure is reported as bad input
        _gather_model(tmp_path / "m.onnx", "Add")
        args = [str(tmp_path / "m.onnx")]
    else:  # torch: bounds read from the exported graph, checked before any runtime runs
        class Take(nn.Module):
            def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return (x * 2.0)[:, idx[0]]

        torch.jit.save(torch.jit.trace(Take(), (torch.randn(1, 8, 4), torch.tensor([[1, 2, 3]]))), str(tmp_path / "m.pt"))
        args = [str(tmp_path / "m.pt"), "--input-shape", "x=1x8x4", "--input-shape", "idx=1x3:int64"]
    r = invoke("convert", *args, "-t", "onnxruntime", "-o", str(tmp_path / "out"))
    assert r.returncode == 2, (r.stderr, r.exception)
    assert "'idx'" in r.stderr and "--calibration" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
