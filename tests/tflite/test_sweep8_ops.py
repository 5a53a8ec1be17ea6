"""TFLite lowerings of constructs found by the mobile building-block sweep (attention masks, audio and vision
blocks exported by torch, fp32 and full int8, against ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import check, make_model, ort_run, tflite_run
from onnx import TensorProto, helper


@pytest.mark.parametrize("op,attrs", [("IsNaN", {}), ("IsInf", {}), ("IsInf", {"detect_negative": 0}),
                                      ("IsInf", {"detect_positive": 0}),
                                      ("IsInf", {"detect_negative": 0, "detect_positive": 0})])
def test_isnan_isinf(tmp_path, rng, op, attrs):
    """torch's scaled_dot_product_attention with a boolean mask exports Where(IsNaN(softmax), 0, softmax): it was
    'op IsNaN has no TFLite lowering'."""
    x = rng.standard_normal((1, 3, 8)).astype(np.float32)
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    nodes = [helper.make_node("Mul", ["x", "k"], ["s"]), helper.make_node(op, ["s"], ["y"], **attrs)]
    model = make_model(nodes, {"x": x}, ["y"], {"k": np.array(2.0, np.float32)}, out_dtype=TensorProto.BOOL)
    check(model, {"x": x}, tmp_path)


def _qdq(name: str, scale: float, zp: int = 0) -> tuple[list, dict]:
    inits = {f"{name}_s": np.array(scale, np.float32), f"{name}_z": np.array(zp, np.uint8)}
    nodes = [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"])]
    return nodes, inits


def test_an_infinite_activation_scale_stays_float(tmp_path, rng):
    """A -inf attention mask (masked_fill(-inf), key_padding_mask) added to the scores: calibration gives that sum
    an infinite range, so ONNX Runtime's quantizer writes scale inf. Lowered as an int8 tensor with scale inf, LiteRT
    aborted the whole process at load time; the tensor now stays float and the output matches the float graph."""
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    mask = np.where(np.arange(6) < 4, 0.0, -np.inf).astype(np.float32).reshape(1, 1, 1, 6)
    qx, ix = _qdq("x", 0.02, 128)
    qs, is_ = _qdq("s", float("inf"), 0)
    nodes = qx + [helper.make_node("Add", ["x_dq", "mask"], ["s"])] + qs + [
        helper.make_node("Softmax", ["s_dq"], ["y"], axis=-1)]
    model = make_model(nodes, {"x": x}, ["y"], {**ix, **is_, "mask": mask})
    plain = make_model([helper.make_node("Add", ["x", "mask"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
                       {"x": x}, ["y"], {"mask": mask})
    from edgekit.backends import tflite
    from edgekit.backends.tflite.writer import read_model

    src = tmp_path / "qdq.onnx"
    onnx.save(model, str(src))
    path = tflite.lower(src, None, tmp_path / "m", {"precision": "int8"})[0]
    sg = read_model(path.read_bytes()).subgraphs[0]
    scales = [float(s) for t in sg.tensors if t.quantization is not None and t.quantization.scale is not None
              for s in t.quantization.scale]
    assert all(np.isfinite(scales)), "a tensor with a non-finite scale (LiteRT aborts on it)"
    got = tflite_run(path, {"x": x})[0]
    np.testing.assert_allclose(got, ort_run(plain, {"x": x})[0], atol=0.02)
