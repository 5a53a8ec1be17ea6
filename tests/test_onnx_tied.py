"""A tied embedding (head.weight = embed.weight) is stored once in the ONNX Runtime artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

LM = '''
import torch
from torch import nn


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.mix = nn.Embedding(1000, 64), nn.Linear(64, 64)
        self.head = nn.Linear(64, 1000, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, input_ids):
        return self.head(torch.tanh(self.mix(self.emb(input_ids))))


def build():
    torch.manual_seed(0)
    return LM().eval()
'''


def test_a_tied_embedding_is_stored_once_and_computes_the_same(invoke, tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort
    import torch

    (tmp_path / "tiedlm.py").write_text(LM)
    monkeypatch.syspath_prepend(str(tmp_path))
    res = invoke("convert", "tiedlm:build", "--input-shape", "input_ids=2x16:int64", "-t", "onnxruntime",
                 "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 0, res.stderr
    art = json.loads(res.stdout)["artifacts"][0]
    assert art["verification"]["passed"]
    path = tmp_path / "o" / "build.onnxruntime.onnx"
    tables = [list(t.dims) for t in onnx.load(str(path)).graph.initializer if np.prod(t.dims) >= 64000]
    assert tables == [[64, 1000]]  # the (1000, 64) table and its transpose were both stored
    assert path.stat().st_size < 300_000  # 256 kB of table once, plus the 64 x 64 layer
    ids = np.random.default_rng(0).integers(0, 1000, (2, 16))
    import tiedlm

    with torch.no_grad():
        want = tiedlm.build()(torch.as_tensor(ids)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _graph(uses_table_as: str):
    from onnx import TensorProto, helper, numpy_helper

    a = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(a, "A"), numpy_helper.from_array(np.ascontiguousarray(a.T), "B")]
    nodes = [helper.make_node("Gather", ["A", "ids"], ["e"]), helper.make_node("MatMul", ["e", "B"], ["y"])]
    if uses_table_as == "matmul":  # A also read by a MatMul: the rewrite cannot serve it
        nodes.append(helper.make_node("MatMul", ["x", "A"], ["z"]))
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 500])]
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])]
    if uses_table_as == "matmul":
        ins.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 500]))
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 16]))
    return helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits),
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("use,dropped", [("gather", 1), ("matmul", 0)])
def test_only_tables_read_by_gathers_alone_are_rewritten(use, dropped):
    import onnxruntime as ort

    from edgekit.backends.onnx_tied import share_tied_tables

    model = _graph(use)
    feeds = {"ids": np.array([[0, 7, 499, 3]]), **({"x": np.ones((2, 500), np.float32)} if use == "matmul" else {})}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)

    want = run(model)
    assert share_tied_tables(model) == dropped
    assert len(model.graph.initializer) == 2 - dropped
    for g, w in zip(run(model), want):
        np.testing.assert_array_equal(g, w)
