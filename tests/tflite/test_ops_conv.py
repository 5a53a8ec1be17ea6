"""Conv / ConvTranspose lowering against ONNX Runtime on one-node graphs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check, one_node

CONV_CASES = [
    # (C, M, group, kernel, stride, dilation, pads or auto_pad, H, W)
    (3, 8, 1, 3, 1, 1, [1, 1, 1, 1], 8, 8),
    (3, 8, 1, 3, 2, 1, [1, 1, 1, 1], 9, 9),
    (3, 8, 1, 3, 2, 1, [0, 0, 1, 1], 8, 8),  # TF-style SAME written as asymmetric pads
    (3, 8, 1, 3, 2, 1, [1, 0, 0, 1], 8, 7),  # arbitrary asymmetric
    (4, 4, 1, 1, 1, 1, [0, 0, 0, 0], 5, 5),
    (4, 6, 1, 5, 1, 1, [2, 2, 2, 2], 7, 6),
    (4, 6, 1, 5, 3, 1, [0, 0, 0, 0], 11, 11),
    (4, 6, 1, 3, 1, 2, [2, 2, 2, 2], 9, 9),  # dilated
    (4, 6, 1, 3, 2, 2, [1, 1, 1, 1], 10, 9),
    (4, 4, 4, 3, 1, 1, [1, 1, 1, 1], 8, 8),  # depthwise
    (4, 4, 4, 3, 2, 1, [1, 1, 1, 1], 8, 8),
    (4, 8, 4, 3, 1, 1, [1, 1, 1, 1], 6, 6),  # depthwise, multiplier 2
    (4, 4, 4, 5, 2, 1, [2, 2, 2, 2], 9, 9),
    (4, 4, 4, 3, 1, 2, [2, 2, 2, 2], 9, 9),  # dilated depthwise
    (4, 8, 2, 3, 1, 1, [1, 1, 1, 1], 6, 6),  # grouped
    (6, 6, 3, 1, 1, 1, [0, 0, 0, 0], 4, 4),
    (8, 4, 4, 3, 2, 1, [0, 1, 0, 1], 7, 7),
    (3, 8, 1, 3, 1, 1, "SAME_UPPER", 7, 7),
    (3, 8, 1, 3, 2, 1, "SAME_UPPER", 8, 8),
    (3, 8, 1, 4, 2, 1, "SAME_LOWER", 8, 8),
    (3, 8, 1, 3, 2, 1, "VALID", 8, 8),
    (3, 5, 1, (3, 1), (2, 1), 1, [1, 0, 1, 0], 8, 6),  # non-square kernel/stride
    (2, 3, 1, (1, 5), 1, (1, 2), [0, 4, 0, 4], 3, 12),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(tmp_path, rng, case, bias):
    c, m, group, k, s, d, pads, h, w = case
    k = (k, k) if isinstance(k, int) else k
    s = (s, s) if isinstance(s, int) else s
    d = (d, d) if isinstance(d, int) else d
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    inits = {"w": rng.standard_normal((m, c // group, *k)).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(m).astype(np.float32)
    attrs = dict(group=group, strides=list(s), dilations=list(d), kernel_shape=list(k))
    attrs.update({"auto_pad": pads} if isinstance(pads, str) else {"pads": pads})
    check(one_node("Conv", {"x": x}, inits, **attrs), {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,s,p,group", [(3, 1, 1, 1), (5, 2, 2, 1), (3, 2, 0, 1), (1, 1, 0, 1), (3, 1, 1, 4)])
def test_conv1d(tmp_path, rng, k, s, p, group):
    x = rng.standard_normal((1, 4, 20)).astype(np.float32)
    inits = {"w": rng.standard_normal((8, 4 // group, k)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)}
    m = one_node("Conv", {"x": x}, inits, strides=[s], pads=[p, p], group=group)
    check(m, {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,s,pads,out_pad,bias", [
    (3, 1, [0, 0, 0, 0], [0, 0], True),
    (3, 2, [0, 0, 0, 0], [0, 0], True),
    (3, 2, [1, 1, 1, 1], [1, 1], True),
    (4, 2, [1, 1, 1, 1], [0, 0], False),
    (2, 2, [0, 0, 0, 0], [0, 0], True),
    (5, 3, [2, 1, 2, 1], [0, 0], True),
])
def test_conv_transpose(tmp_path, rng, k, s, pads, out_pad, bias):
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    inits = {"w": rng.standard_normal((4, 3, k, k)).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(3).astype(np.float32)
    m = one_node("ConvTranspose", {"x": x}, inits, strides=[s, s], pads=pads, output_padding=out_pad)
    check(m, {"x": x}, tmp_path, rtol=1e-4, atol=1e-4)
