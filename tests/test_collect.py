"""Calibration statistics stream one sample at a time: the statistics are those of a plain serial pass, in
order (the histogram's range grows with the samples), and a sample the model rejects stops the pass with a
DataError naming it."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _model():
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [numpy_helper.from_array(w, "w")])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def _samples(count: int, bad: int | None = None):
    from edgekit.data import SampleSet

    def make(i: int) -> dict[str, np.ndarray]:
        shape = (1, 3, 6, 6) if i == bad else (1, 2, 6, 6)  # sample `bad` has the wrong channel count
        return {"x": np.random.default_rng(i).normal(scale=1 + i, size=shape).astype(np.float32)}

    return SampleSet(f"{count} test samples", count, make)


def test_streamed_statistics_equal_a_serial_pass_in_order() -> None:
    from edgekit.quantize.collect import TensorStats, collect, exposed_model, float_activations, session

    model = _model()
    stats = collect(model, _samples(9), histogram=True, channel_axes={"c": 1})
    names = float_activations(model)
    sess = session(exposed_model(model, names))
    want = {n: TensorStats() for n in names}
    for feed in _samples(9):
        for n, arr in zip(names, sess.run(names, feed)):
            want[n].update(arr, True)
            if n == "c":
                want[n].update_channels(arr, 1)
    for n in names:  # the histogram's range doubles as larger samples arrive: order matters, and is kept
        assert stats[n].count == want[n].count == 9 * (72 if n == "x" else 144)
        assert (stats[n].lo, stats[n].hi, stats[n].limit) == (want[n].lo, want[n].hi, want[n].limit)
        assert np.array_equal(stats[n].hist, want[n].hist)
    assert np.array_equal(stats["c"].channel_mean(), want["c"].channel_mean())


def test_a_rejected_sample_stops_the_stream_with_a_data_error() -> None:
    from edgekit.errors import DataError
    from edgekit.quantize.collect import collect

    with pytest.raises(DataError, match="rejects a sample"):
        collect(_model(), _samples(6, bad=3), histogram=True)
