"""TFLite lowerings of constructs found by the ONNX robustness sweep (graphs as other exporters write them)."""

from __future__ import annotations

import numpy as np
from conftest import check, make_model
from onnx import TensorProto, helper


def test_float64_arithmetic_runs_in_float32(tmp_path, rng):
    """Cast to double, arithmetic in double, Cast back (numpy-minded exporters): TFLite has no float64 kernels;
    it was 'failed to lower: TypeError: TFLite has no tensor type for float64'."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
             helper.make_node("Mul", ["d", "k"], ["m"]),
             helper.make_node("Cast", ["m"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["f"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    check(make_model(nodes, {"x": x}, ["y"], {"k": np.array(1.5, np.float64)}), {"x": x}, tmp_path, atol=2e-3, rtol=1e-3)
