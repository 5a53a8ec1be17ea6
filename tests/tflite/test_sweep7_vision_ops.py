"""TFLite lowerings of constructs found by the vision-architecture sweep (EfficientNet, ShuffleNetV2, GhostNet,
YOLO, Swin, DeepLab, HRNet-style models exported by each torch exporter)."""

from __future__ import annotations

import numpy as np
from conftest import check, make_model
from onnx import helper


def test_deep_chain_of_shape_dependent_chunks(tmp_path, rng):
    """torch's opset-13 export of x.chunk(2, 1) reads the channel count with Shape; in a YOLO neck every block
    chunks the previous block's output, so each static round of shape inference + folding resolved one level only
    and the 5th level was refused as 'op Shape (node '/h4/Shape') has no TFLite lowering'."""
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    inits = {"one": np.array([1], np.int64), "two": np.array([2], np.int64), "zero": np.array([0], np.int64),
             "big": np.array([1 << 30], np.int64)}
    nodes, cur = [], "x"
    for i in range(8):
        nodes += [helper.make_node("Shape", [cur], [f"s{i}"]),
                  helper.make_node("Gather", [f"s{i}", "one"], [f"c{i}"]),
                  helper.make_node("Div", [f"c{i}", "two"], [f"h{i}"]),
                  helper.make_node("Slice", [cur, "zero", f"h{i}", "one"], [f"a{i}"]),
                  helper.make_node("Slice", [cur, f"h{i}", "big", "one"], [f"b{i}"]),
                  helper.make_node("Relu", [f"b{i}"], [f"r{i}"]),
                  helper.make_node("Concat", [f"r{i}", f"a{i}"], [f"y{i}"], axis=1)]
        cur = f"y{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    check(make_model(nodes, {"x": x}, ["y"], inits, opset=13), {"x": x}, tmp_path)
