"""Helpers for the TFLite backend tests: tiny ONNX graphs run in ONNX Runtime and in LiteRT."""

from __future__ import annotations

import os
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

    if os.environ.get("EDGEKIT_TFLITE_KERNELS") == "builtin":  # run on TFLite's own kernels instead of XNNPACK
        extra.setdefault("xnnpack", False)
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


def quantize_qdq(model: onnx.ModelProto, tmp: Path, samples: list[dict[str, np.ndarray]], activation: str = "uint8",
                 op_types: list[str] | None = None) -> Path:
    """A QDQ model as the quantization stage makes it: per-channel int8 symmetric weights, uint8/int8 activations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp / "float.onnx", tmp / "qdq.onnx"
    onnx.save(model, str(src))
    act = QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True},
                    op_types_to_quantize=op_types)
    return dst


def output_steps(qdq_path: Path) -> list[float]:
    """The quantization step (scale) of each graph output of a QDQ model (0 when the output is float)."""
    m = onnx.load(str(qdq_path))
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    prod = {o: n for n in m.graph.node for o in n.output}
    steps = []
    for o in m.graph.output:
        n = prod.get(o.name)
        steps.append(float(np.max(consts[n.input[1]])) if n is not None and n.op_type == "DequantizeLinear" else 0.0)
    return steps


def check_int8(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp: Path, steps: float = 1.0, activation: str = "uint8",
               calib: int = 8, **options) -> Path:
    """Lower the QDQ version of `model` to full-int8 TFLite; outputs within `steps` quantization steps of ORT's QDQ run."""
    from edgekit.backends import tflite

    rng = np.random.default_rng(1)
    samples = [feeds] + [{k: (rng.standard_normal(v.shape) * np.std(v) + np.mean(v)).astype(v.dtype) if v.dtype.kind == "f" else v
                          for k, v in feeds.items()} for _ in range(calib - 1)]
    qdq = quantize_qdq(model, tmp, samples, activation)
    ref = ort_run(qdq, feeds)
    path = tflite.lower(qdq, None, tmp / "int8", {"precision": "int8", **options})[0]
    got = tflite_run(path, feeds)
    for r, g, step in zip(ref, got, output_steps(qdq)):
        assert g.shape == r.shape
        tol = steps * step + 1e-6 if step else 0.02 * float(np.abs(r).max()) + 1e-4
        err = float(np.abs(g - r).max())
        assert err <= tol, f"max error {err} > {tol} (step {step})"
    return path
