"""ONNX files as other exporters and model zoos write them, converted end to end (edgekit.api.convert).

Each case is a construct that once ended in an internal error or a wrong result; the models are tiny so a
case runs in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit import api

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _save(tmp: Path, name: str, nodes, inputs, outputs, inits: dict, opset: int, ir: int = 8,
          samples: dict[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model)
    path = tmp / f"{name}.onnx"
    onnx.save(model, str(path))
    if samples is None:
        samples = {}
        for vi in inputs:
            shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            samples[vi.name] = RNG.standard_normal([12] + shape[1:]).astype(np.float32)
    npz = tmp / f"{name}.npz"
    np.savez(str(npz), **samples)
    return path, npz


def _passed(result: dict, targets: list[str]) -> None:
    assert [a["target"] for a in result["artifacts"]] == targets
    for a in result["artifacts"]:
        assert a["verification"]["passed"], a


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])


@pytest.mark.parametrize("opset", [9, 10])
def test_int8_of_a_legacy_opset_model_with_attribute_operands(tmp_path: Path, opset: int) -> None:
    """Pad/Clip/Slice/Dropout with their operands as attributes: the version converter to opset 13 turns them
    into Constant nodes, which ONNX Runtime's quantizer took for unquantized activations ('Quantization
    parameters are not specified for param ...', an internal error on every int8 target)."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c"], ["cl"], min=0.0, max=6.0),
             helper.make_node("Pad", ["cl"], ["pd"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0),
             helper.make_node("Slice", ["pd"], ["sl"], starts=[1, 1], ends=[9, 9], axes=[2, 3])
             if opset < 10 else helper.make_node("Slice", ["pd", "st", "en", "ax"], ["sl"]),
             helper.make_node("Dropout", ["sl"], ["y"], ratio=0.3)]
    inits = {"w": _w(4, 3, 3, 3), "b": _w(4)}
    if opset >= 10:
        inits.update(st=np.array([1, 1], np.int64), en=np.array([9, 9], np.int64), ax=np.array([2, 3], np.int64))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    model, npz = _save(tmp_path, f"legacy{opset}", nodes, [X], [y], inits, opset, ir=4 if opset < 10 else 5)
    result = api.convert(str(model), ["onnxruntime", "tflite"], tmp_path / "out", precision="int8",
                         calibration=str(npz))
    _passed(result, ["onnxruntime", "tflite"])
