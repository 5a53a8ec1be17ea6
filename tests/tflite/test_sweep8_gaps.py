"""TFLite lowerings of ONNX ops real mobile models use that the sweep found refused (exit 4): bicubic Resize,
ReduceL1/LogSum/LogSumExp, int8 HardSigmoid, Trilu of a run-time tensor, LpNormalization,
MeanVarianceNormalization, Atan; fp32 and int8 against ONNX Runtime on the same graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import check, check_int8, make_model, one_node, ort_run, tflite_convert, tflite_run
from onnx import helper

from edgekit.backends.tflite.inspect import describe
from edgekit.errors import UnsupportedModelError


def _resize(x: np.ndarray, opset: int = 17, size: tuple[int, ...] | None = None, scales: list[float] | None = None,
            **attrs):
    inits = {"roi": np.zeros(0, np.float32)}
    if size is not None:
        inits["scales"], inits["sizes"] = np.zeros(0, np.float32), np.asarray([*x.shape[:2], *size], np.int64)
    else:
        inits["scales"] = np.asarray([1, 1, *scales], np.float32)
    return one_node("Resize", {"x": x}, inits, opset=opset, mode="cubic", **attrs)


@pytest.mark.parametrize("size", [(9, 13), (3, 4), (1, 7), (5, 6)])
@pytest.mark.parametrize("coord,a", [("half_pixel", -0.75), ("align_corners", -0.75), ("pytorch_half_pixel", -0.5),
                                     ("asymmetric", -0.75)])
def test_resize_cubic_sizes(tmp_path, rng, size, coord, a):
    """Bicubic up/down-scaling (F.interpolate(mode="bicubic"): half_pixel or align_corners, a = -0.75) was
    'mode cubic' refused; it is one constant matrix product per resized axis."""
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    model = _resize(x, size=size, coordinate_transformation_mode=coord, cubic_coeff_a=a)
    path = check(model, {"x": x}, tmp_path, atol=1e-5)
    assert "RESIZE_BILINEAR" not in describe(path)["ops"]


@pytest.mark.parametrize("scales,attrs", [([2.0, 2.0], {"exclude_outside": 1}), ([1.5, 0.5], {}),
                                          ([2.0, 3.0], {"coordinate_transformation_mode": "asymmetric"}),
                                          ([1.7, 1.0], {"exclude_outside": 1, "cubic_coeff_a": -0.5})])
def test_resize_cubic_scales(tmp_path, rng, scales, attrs):
    """Scale factors (ONNX maps coordinates with the factor itself, not out/in) and exclude_outside."""
    x = rng.standard_normal((1, 2, 6, 5)).astype(np.float32)
    check(_resize(x, scales=scales, **attrs), {"x": x}, tmp_path, atol=1e-5)


def _conv_resize_conv(rng, scales: list[float], **attrs):
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "roi", "scales"], ["r"], mode="cubic", **attrs),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    return make_model(nodes, {"x": x}, ["y"], {"w": w, "w2": w2, "roi": np.zeros(0, np.float32),
                                               "scales": np.asarray([1, 1, *scales], np.float32)}), x


def test_resize_cubic_after_conv_needs_no_transpose(tmp_path, rng):
    """Between convolutions (channels-last tensors) the products work on the stored layout: no TRANSPOSE."""
    model, x = _conv_resize_conv(rng, [2.0, 2.0], cubic_coeff_a=-0.75)
    path = check(model, {"x": x}, tmp_path, atol=1e-4, io_layout="nhwc")
    assert describe(path)["transposes"] == 0


@pytest.mark.parametrize("scales", [[2.0, 2.0], [0.5, 1.5]])
def test_resize_cubic_int8(tmp_path, rng, scales):
    """Between int8 tensors the products stay int8 (within 2 output steps of ONNX Runtime's QDQ graph)."""
    model, x = _conv_resize_conv(rng, scales, coordinate_transformation_mode="half_pixel")
    path = check_int8(model, {"x": x}, tmp_path, steps=2.0)
    assert describe(path)["float_ops"] == 0


@pytest.mark.parametrize("attrs,what", [({"coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
                                        ({"antialias": 1}, "antialiased cubic downscaling")])
def test_resize_cubic_refusals_name_the_node(tmp_path, rng, attrs, what):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    with pytest.raises(UnsupportedModelError, match=f"Resize \\(node 'resize_0'\\).*{what}") as e:
        tflite_convert(_resize(x, opset=18, size=(3, 3), **attrs), tmp_path)
    assert e.value.exit_code == 4


@pytest.mark.parametrize("op", ["ReduceL1", "ReduceLogSum", "ReduceLogSumExp"])
@pytest.mark.parametrize("axes,keep,opset", [([1], 1, 17), ([-1], 0, 17), ([0, 2], 0, 18), (None, 1, 18)])
def test_reduce_l1_logsum_logsumexp(tmp_path, rng, op, axes, keep, opset):
    """torch.logsumexp and 1-norms (x.abs().sum / torch.norm(p=1)) exported as ReduceLogSumExp / ReduceL1 were
    'has no TFLite lowering'. LogSumExp is max-shifted: inputs near 100 do not overflow exp."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    if op == "ReduceLogSum":
        x = np.abs(x) + 0.1
    if op == "ReduceLogSumExp":
        x = x * 30 + 60  # exp(90) overflows float32 unshifted
    inits = {}
    attrs = {"keepdims": keep}
    if axes is not None and opset >= 18:
        inits["axes"] = np.asarray(axes, np.int64)
    elif axes is not None:
        attrs["axes"] = axes
    check(one_node(op, {"x": x}, inits, opset=opset, **attrs), {"x": x}, tmp_path, rtol=1e-5, atol=1e-5)


def test_reduce_l1_between_int8_tensors(tmp_path, rng):
    x = rng.standard_normal((1, 4, 6)).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("ReduceL1", ["s"], ["r"], axes=[2]),
             helper.make_node("Mul", ["r", "k"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"b": np.float32(0.1).reshape(1), "k": np.float32(0.5).reshape(1)})
    check_int8(model, {"x": x}, tmp_path, steps=1.0)


@pytest.mark.parametrize("p,axis", [(2, 1), (1, -1), (2, -1)])
def test_lp_normalization(tmp_path, rng, p, axis):
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    check(one_node("LpNormalization", {"x": x}, p=p, axis=axis), {"x": x}, tmp_path, atol=1e-6)


@pytest.mark.parametrize("axes", [None, [2, 3], [1]])
def test_mean_variance_normalization(tmp_path, rng, axes):
    x = (rng.standard_normal((2, 3, 4, 5)) * 3 + 1).astype(np.float32)
    attrs = {} if axes is None else {"axes": axes}
    check(one_node("MeanVarianceNormalization", {"x": x}, **attrs), {"x": x}, tmp_path, atol=1e-5)


def test_lp_normalization_p3_is_refused_naming_the_node(tmp_path, rng):
    x = rng.standard_normal((1, 4)).astype(np.float32)
    with pytest.raises(UnsupportedModelError, match="LpNormalization \\(node 'lpnormalization_0'\\): p=3") as e:
        tflite_convert(one_node("LpNormalization", {"x": x}, p=3), tmp_path)
    assert e.value.exit_code == 4


@pytest.mark.parametrize("alpha,beta", [(1 / 6, 0.5), (0.2, 0.5)])
def test_hard_sigmoid_gate_stays_int8(tmp_path, rng, alpha, beta):
    """A squeeze-excitation gate (MobileNetV3: x * hardsigmoid(conv(pool(x)))) between int8 tensors ran as four
    float ops with a DEQUANTIZE/QUANTIZE around them; it is int8 now, within 1 output step of the QDQ graph."""
    x = rng.standard_normal((1, 8, 4, 4)).astype(np.float32)
    w = (rng.standard_normal((8, 8, 1, 1)) * 0.8).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Conv", ["p", "w", "b"], ["c"]),
             helper.make_node("HardSigmoid", ["c"], ["g"], alpha=alpha, beta=beta),
             helper.make_node("Mul", ["x", "g"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"w": w, "b": rng.standard_normal(8).astype(np.float32)})
    check(model, {"x": x}, tmp_path, atol=1e-5)
    path = check_int8(model, {"x": x}, tmp_path, steps=1.0)
    d = describe(path)
    assert d["float_ops"] == 0 and d["ops"]["DEQUANTIZE"] == 1, d  # the output's only


def test_hard_sigmoid_int8_clamps_when_the_range_goes_past_the_gate(tmp_path, rng):
    """Output params reaching below 0 and above 1 (a symmetric int8 range): MAXIMUM/MINIMUM keep the [0, 1] clip."""
    x = (rng.standard_normal((1, 2, 3, 3)) * 6).astype(np.float32)
    q = {"s": np.float32(0.02), "z": np.int8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "z"], ["xd"]),
             helper.make_node("HardSigmoid", ["xd"], ["h"]),
             helper.make_node("QuantizeLinear", ["h", "s", "z"], ["hq"]),
             helper.make_node("DequantizeLinear", ["hq", "s", "z"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"xs": np.float32(0.1), **q})
    from edgekit.backends import tflite

    src = tmp_path / "q.onnx"
    onnx.save(model, str(src))
    path = tflite.lower(src, None, tmp_path / "m", {"precision": "int8"})[0]
    assert {"MAXIMUM", "MINIMUM"} <= set(describe(path)["ops"]) and describe(path)["float_ops"] == 0
    np.testing.assert_allclose(tflite_run(path, {"x": x})[0], ort_run(model, {"x": x})[0], atol=0.02 + 1e-6)


@pytest.mark.parametrize("upper,k", [(1, None), (0, None), (1, 1), (0, -1), (1, 5)])
def test_trilu_of_a_runtime_tensor(tmp_path, rng, upper, k):
    """torch.tril/triu of an activation (a causal mask built at run time: triu(full(-inf), 1)) was refused; -inf
    entries outside the kept triangle must not become NaN (a mask product would give -inf * 0)."""
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    x[0, 0, 3] = -np.inf
    inits = {} if k is None else {"k": np.asarray(k, np.int64)}
    model = one_node("Trilu", {"x": x}, inits, upper=upper)
    check(model, {"x": x}, tmp_path)


def test_trilu_with_a_runtime_offset_is_refused_naming_the_node(tmp_path, rng):
    x = rng.standard_normal((3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Trilu", ["x", "k"], ["y"], name="mask")], {"x": x, "k": np.asarray(1, np.int64)},
                       ["y"])
    with pytest.raises(UnsupportedModelError, match="Trilu \\(node 'mask'\\): a diagonal offset k computed at run time"):
        tflite_convert(model, tmp_path)


def test_atan(tmp_path, rng):
    x = (rng.standard_normal((2, 3, 4)) * 5).astype(np.float32)
    check(one_node("Atan", {"x": x}), {"x": x}, tmp_path, atol=2e-6)


def test_refusal_of_an_op_without_lowering_is_short(tmp_path, rng):
    """The hint listed every supported op (a ~1,500-character line); it now gives their count and where they are."""
    from edgekit.backends.tflite import supported_ops

    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(UnsupportedModelError, match="op Bernoulli \\(node 'bernoulli_0'\\) has no TFLite lowering") as e:
        tflite_convert(one_node("Bernoulli", {"x": np.abs(x) / 4}), tmp_path)
    assert e.value.exit_code == 4
    hint = str(e.value.hint)
    assert len(hint) < 300 and f"{len(supported_ops())} ONNX ops" in hint and "supported_ops()" in hint
