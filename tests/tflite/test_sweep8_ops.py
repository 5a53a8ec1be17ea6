"""TFLite lowerings of constructs found by the mobile building-block sweep (attention masks, audio and vision
blocks exported by torch, fp32 and full int8, against ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import check, check_int8, make_model, ort_run, tflite_run
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


def _per_tensor_qdq(op: str, x: np.ndarray, w: np.ndarray, b: np.ndarray, **attrs) -> tuple[onnx.ModelProto, float]:
    """x -> QDQ -> op(x, DQ(int8 w, one scale), b) -> QDQ -> y: weights quantized per tensor, as ONNX Runtime's
    quantize_static does by default. Returns the model and the output step."""
    float_model = make_model([helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)], {"x": x}, ["y"], {"w": w, "b": b})
    y = ort_run(float_model, {"x": x})[0]
    lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    ys, yz = (hi - lo) / 255.0, int(round(-lo / ((hi - lo) / 255.0)))
    ws = float(np.abs(w).max()) / 127.0
    qx, ix = _qdq("x", float(np.abs(x).max()) / 127.0, 128)
    qy, iy = _qdq("y", ys, yz)
    inits = {**ix, **iy, "wq": np.round(w / ws).astype(np.int8), "ws": np.array(ws, np.float32), "b": b}
    nodes = qx + [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
                  helper.make_node(op, ["x_dq", "w", "b"], ["y"], **attrs)] + qy
    model = make_model(nodes, {"x": x}, ["y_dq"], inits)
    return model, ys


@pytest.mark.parametrize("op,w_shape,attrs", [
    ("Conv", (8, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("Conv", (8, 1, 3, 3), {"pads": [1, 1, 1, 1], "group": 4}),
    ("ConvTranspose", (4, 8, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("ConvTranspose", (4, 4, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1], "group": 2}),
])
def test_per_tensor_weights_load_in_xnnpack(tmp_path, rng, op, w_shape, attrs):
    """Per-tensor int8 weights (ONNX Runtime's default; edgekit's quantizer for a grouped ConvTranspose) got a bias
    with one scale per channel: XNNPACK refused every such conv at load ('failed to delegate CONV_2D node',
    convert exit 2)."""
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    w = (rng.standard_normal(w_shape) * 0.3).astype(np.float32)
    m = w_shape[1] * attrs.get("group", 1) if op == "ConvTranspose" else w_shape[0]
    b = rng.standard_normal(m).astype(np.float32)
    model, step = _per_tensor_qdq(op, x, w, b, **attrs)
    from edgekit.backends import tflite

    src = tmp_path / "qdq.onnx"
    onnx.save(model, str(src))
    path = tflite.lower(src, None, tmp_path / "m", {"precision": "int8"})[0]
    got = tflite_run(path, {"x": x})[0]  # XNNPACK, as the arm target runs it
    assert np.abs(got - ort_run(model, {"x": x})[0]).max() <= step * 1.01


@pytest.mark.parametrize("shape,w_shape,attrs", [
    ((1, 4, 10), (4, 8, 4), {"strides": [2], "pads": [1, 1]}),  # 1-D upsampling (vocoders, audio decoders)
    ((1, 4, 9), (4, 3, 5), {"strides": [3], "pads": [1, 1], "output_padding": [1]}),
    ((1, 4, 5, 6), (4, 4, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1], "group": 2}),
    ((1, 4, 5, 6), (4, 1, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "group": 4}),
])
def test_conv_transpose_1d_and_grouped(tmp_path, rng, shape, w_shape, attrs):
    """ConvTranspose1d and grouped / depthwise ConvTranspose2d were refused ('only 2-D transposed convolution',
    'grouped transposed convolution')."""
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(np.float32)
    model = make_model([helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)], {"x": x}, ["y"],
                       {"w": w, "b": b})
    check(model, {"x": x}, tmp_path, atol=1e-4)
    check(model, {"x": x}, tmp_path, atol=1e-4, io_layout="nhwc")


@pytest.mark.parametrize("axis,const", [(0, False), (1, False), (-1, False), (2, True)])
def test_gather_elements(tmp_path, rng, axis, const):
    """torch.gather (GatherElements: top-k pooling, point / box selection heads) was 'op GatherElements has no TFLite
    lowering'. Negative indices count from the end."""
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    dim = x.shape[axis]
    idx = rng.integers(-dim, dim, size=(2, 3, 4) if axis in (-1, 2) else (2, 2, 5) if axis == 1 else (1, 3, 5))
    feeds = {"x": x} if const else {"x": x, "i": idx.astype(np.int64)}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("GatherElements", ["r", "i"], ["y"], axis=axis)]
    model = make_model(nodes, feeds, ["y"], {"i": idx.astype(np.int64)} if const else None)
    check(model, feeds, tmp_path)


def test_gather_elements_int8(tmp_path, rng):
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    idx = rng.integers(0, 8, size=(1, 3, 4, 5)).astype(np.int64)
    w = rng.standard_normal((8, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GatherElements", ["c", "i"], ["y"], axis=1)]
    path = check_int8(make_model(nodes, {"x": x}, ["y"], {"w": w, "i": idx}), {"x": x}, tmp_path)
    from edgekit.backends import tflite

    assert tflite.describe(path)["float_ops"] == 0


@pytest.mark.parametrize("mode,size", [("linear", [1, 2, 1, 3]), ("linear", [1, 2, 1, 1]), ("linear", [1, 2, 9, 1])])
def test_resize_pytorch_half_pixel_to_size_one(tmp_path, rng, mode, size):
    """pytorch_half_pixel samples coordinate 0 for a size-1 output, half_pixel the centre: lowered as half_pixel it was
    silently wrong (relative error 1.2 for F.interpolate(x, size=(1, 3), mode='bilinear'))."""
    x = rng.standard_normal((1, 2, 6, 5)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode=mode,
                            coordinate_transformation_mode="pytorch_half_pixel", nearest_mode="floor")
    model = make_model([node], {"x": x}, ["y"], {"sz": np.array(size, np.int64)}, opset=13)
    check(model, {"x": x}, tmp_path)


def test_resize_by_a_scale_that_does_not_divide_is_refused(tmp_path, rng):
    """ONNX maps output to input coordinates with the given scale (1.7), TFLite with out / in (10 / 6): the result was
    silently wrong (relative error 0.14); now a clear refusal naming the node. Exact factors still lower."""
    from edgekit.errors import UnsupportedModelError

    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)

    def model(scales):
        node = helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up", mode="linear")
        return make_model([node], {"x": x}, ["y"], {"sc": np.array(scales, np.float32)}, opset=13)

    with pytest.raises(UnsupportedModelError, match="Resize node 'up': scale 1.7 resizing 6 to 10"):
        check(model([1, 1, 1.5, 1.7]), {"x": x}, tmp_path)
    check(model([1, 1, 1.5, 0.5]), {"x": x}, tmp_path)


@pytest.mark.parametrize("lhs_vec,const", [(False, True), (True, True), (False, False)])
def test_matmul_with_a_vector_operand(tmp_path, rng, lhs_vec, const):
    """x @ w with w a 1-D parameter (attention pooling, a per-token score) exports MatMul with a 1-D operand: it was
    refused ('1-D MatMul operands')."""
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    v = rng.standard_normal(3 if lhs_vec else 6).astype(np.float32)
    feeds = {"x": x} if const else {"x": x, "v": v}
    pair = ["v", "r"] if lhs_vec else ["r", "v"]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", pair, ["y"])]
    model = make_model(nodes, feeds, ["y"], {"v": v} if const else None)
    check(model, feeds, tmp_path, atol=1e-4)
    if const and not lhs_vec:
        check_int8(model, feeds, tmp_path)


def test_pow_with_an_integer_exponent(tmp_path, rng):
    """Pow(float x, int64 3) (an exponent written as a Python int by some exporters): LiteRT refused the model at
    load ('pow.cc: input1->type != input2->type (FLOAT32 != INT64)', convert exit 2)."""
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    model = make_model([helper.make_node("Pow", ["x", "e"], ["y"])], {"x": x}, ["y"], {"e": np.array(3, np.int64)})
    check(model, {"x": x}, tmp_path, rtol=1e-4)


def test_grouped_conv_is_one_conv_on_xnnpack_targets(tmp_path, rng):
    """A grouped (not depthwise) Conv: one CONV_2D whose filter holds C/group input channels on targets that run
    XNNPACK (it runs it as one grouped convolution: 1.2x fp32, 1.8x int8 faster than a SPLIT + one CONV_2D per
    group + CONCATENATION); without a target (LiteRT's builtin kernels, slow on grouped filters) it stays split."""
    from edgekit.backends import tflite
    from edgekit.backends.tflite.inspect import describe
    from edgekit.targets import get_target

    x = rng.standard_normal((1, 16, 6, 6)).astype(np.float32)
    w = rng.standard_normal((24, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=4, pads=[1, 1, 1, 1])
    model = make_model([node], {"x": x}, ["y"], {"w": w, "b": b})
    (tmp_path / "n").mkdir()
    (tmp_path / "s").mkdir()
    native = check(model, {"x": x}, tmp_path / "n", grouped_conv="native")
    assert describe(native)["ops"]["CONV_2D"] == 1 and "SPLIT" not in describe(native)["ops"]
    split = check(model, {"x": x}, tmp_path / "s")
    assert describe(split)["ops"]["CONV_2D"] == 4 and "SPLIT" in describe(split)["ops"]
    src = tmp_path / "g.onnx"
    onnx.save(model, str(src))
    arm = tflite.lower(src, get_target("arm"), tmp_path / "arm", {"precision": "fp32"})[0]
    assert describe(arm)["ops"]["CONV_2D"] == 1 and "SPLIT" not in describe(arm)["ops"]
