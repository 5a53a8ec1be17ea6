"""GRU and LSTM (as torch exports them) against ONNX Runtime: unrolled over the sequence, every direction."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from conftest import check, make_model
from onnx import helper

torch = pytest.importorskip("torch")


class Rnn(torch.nn.Module):
    def __init__(self, kind: str, layers: int, bidirectional: bool, with_h0: bool) -> None:
        super().__init__()
        cls = torch.nn.GRU if kind == "gru" else torch.nn.LSTM
        self.rnn = cls(6, 5, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.kind, self.with_h0, self.dirs, self.layers = kind, with_h0, 2 if bidirectional else 1, layers

    def forward(self, x):
        if self.with_h0:
            h0 = torch.ones(self.layers * self.dirs, x.shape[0], 5) * 0.3
            state = h0 if self.kind == "gru" else (h0, -h0)
            y, h = self.rnn(x, state)
        else:
            y, h = self.rnn(x)
        h = h if self.kind == "gru" else h[0] + h[1]
        return y.sum(-1) + h.sum(0).sum(-1, keepdim=True)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("layers,bidirectional,with_h0", [(1, False, False), (2, True, False), (1, False, True)])
def test_rnn(tmp_path, rng, kind, layers, bidirectional, with_h0):
    torch.manual_seed(0)
    m = Rnn(kind, layers, bidirectional, with_h0).eval()
    x = rng.standard_normal((2, 7, 6)).astype(np.float32)
    buf = io.BytesIO()
    torch.onnx.export(m, (torch.from_numpy(x),), buf, input_names=["x"], dynamo=False, opset_version=17)
    model = onnx.load_from_string(buf.getvalue())
    assert any(n.op_type == kind.upper() for n in model.graph.node)
    check(model, {"x": x}, tmp_path, rtol=1e-4, atol=1e-5)


def test_rnn_outputs_of_the_node_itself(tmp_path, rng):
    """Y, Y_h and Y_c of one reverse LSTM node, straight from ONNX (not through torch's export)."""
    hid, inp, seq, batch = 4, 3, 5, 2
    w = rng.standard_normal((1, 4 * hid, inp)).astype(np.float32) * 0.5
    r = rng.standard_normal((1, 4 * hid, hid)).astype(np.float32) * 0.5
    b = rng.standard_normal((1, 8 * hid)).astype(np.float32) * 0.1
    x = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "w", "r", "b"], ["y", "yh", "yc"], hidden_size=hid, direction="reverse")
    check(make_model([node], {"x": x}, ["y", "yh", "yc"], {"w": w, "r": r, "b": b}), {"x": x}, tmp_path,
          rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_node_linear_before_reset_and_state_input(tmp_path, rng, lbr):
    """A bidirectional GRU node with both reset placements and the initial state as a graph input."""
    hid, inp, seq, batch = 4, 3, 6, 2
    w = rng.standard_normal((2, 3 * hid, inp)).astype(np.float32) * 0.5
    r = rng.standard_normal((2, 3 * hid, hid)).astype(np.float32) * 0.5
    b = rng.standard_normal((2, 6 * hid)).astype(np.float32) * 0.3
    x = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    h0 = rng.standard_normal((2, batch, hid)).astype(np.float32)
    node = helper.make_node("GRU", ["x", "w", "r", "b", "", "h0"], ["y", "yh"], hidden_size=hid,
                            direction="bidirectional", linear_before_reset=lbr)
    feeds = {"x": x, "h0": h0}
    check(make_model([node], feeds, ["y", "yh"], {"w": w, "r": r, "b": b}), feeds, tmp_path, rtol=1e-4, atol=1e-5)
