"""Helpers for the TFLite backend tests: tiny ONNX graphs run in ONNX Runtime and in LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
_NP = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int64"): TensorProto.INT64, np.dtype("bool"): TensorProto.BOOL,
       np.dtype("int32"): TensorProto.INT32}


def make_model(nodes, inputs: dict[str, np.ndarray], outputs: list[str], inits: dict[str, np.ndarray] | None = None,
               opset: int = OPSET, out_dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(k, _NP[v.dtype], v.shape) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(o, out_dtype, None) for o in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "t", ins, outs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model


def ort_run(model_or_path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def tflite_convert(model: onnx.ModelProto, tmp: Path, **options) -> Path:
    from edgekit.backends import tflite

    src = tmp / "m.onnx"
    onnx.save(model, str(src))
    return tflite.lower(src, None, tmp / "m", options)[0]


def tflite_run(path: Path, feeds: dict[str, np.ndarray], **extra) -> list[np.ndarray]:
    from edgekit.backends import tflite
    from edgekit.backends.base import LoadOptions

    sess = tflite.load(path, LoadOptions(threads=1, extra=extra))
    return sess.run(feeds)


def check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp: Path, rtol: float = 1e-5, atol: float = 1e-5,
          **options) -> Path:
    ref = ort_run(model, feeds)
    path = tflite_convert(model, tmp, **options)
    got = tflite_run(path, feeds)
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert g.shape == r.shape, (g.shape, r.shape)
        if r.dtype == np.bool_ or np.issubdtype(r.dtype, np.integer):
            np.testing.assert_array_equal(g, r)
        else:
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
    return path


def one_node(op: str, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray] | None = None, n_out: int = 1,
             opset: int = OPSET, out_dtype: int = TensorProto.FLOAT, **attrs) -> onnx.ModelProto:
    names = list(inputs) + list(inits or {})
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"{op.lower()}_0", **attrs)
    return make_model([node], inputs, outs, inits, opset, out_dtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
