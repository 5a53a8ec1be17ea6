"""Audio and sequence models mobile apps ship (keyword spotting, CRNN, TCN, Conformer, wav2vec / Whisper-style
encoders, text CNN, GPT-2 style decoder): each case is a construct that once ended in an internal error, a model
pruning left whole, or a wrong result. The models are tiny so a case runs in a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class _CausalTCN(nn.Module):
    """Dilated causal Conv1d blocks with residuals; the causal left padding is F.pad or a padding module."""

    def __init__(self, module_pad: bool) -> None:
        super().__init__()
        self.module_pad = module_pad
        self.inp = nn.Conv1d(8, 16, 1)
        self.c1, self.c2 = nn.Conv1d(16, 16, 3, dilation=2), nn.Conv1d(16, 16, 3, dilation=2)
        self.pad = nn.ConstantPad1d((4, 0), 0.0)
        self.head = nn.Conv1d(16, 4, 1)

    def _pad(self, x):
        return self.pad(x) if self.module_pad else F.pad(x, (4, 0))

    def forward(self, x):
        x = self.inp(x)
        y = F.relu(self.c1(self._pad(x)))
        return self.head(F.relu(x + self.c2(self._pad(y))))


@pytest.mark.parametrize("module_pad", [False, True])
def test_causal_padding_keeps_channels_prunable(module_pad: bool) -> None:
    """F.pad and the nn padding modules (ZeroPad1d, ConstantPad1d, ReflectionPad ...) were unknown to pruning, so
    every channel they touched was blocked: a causal TCN lost no channel at any --prune-macs (0 MACs removed, no
    message). Padding the time axis leaves the channel axis alone; pruned = the original with the removed
    channels' weights zeroed."""
    from edgekit.prune import prune_model

    torch.manual_seed(0)
    m = _CausalTCN(module_pad).eval()
    feeds = {"x": torch.randn(2, 8, 20)}
    pruned, rep = prune_model(m, feeds, ratio=0.5, round_to=4, keep_first_last=False)
    assert pruned.c1.out_channels == 8 and pruned.c2.in_channels == 8
    assert pruned.inp.out_channels == 8 and pruned.head.in_channels == 8  # the residual couples inp/c2 outputs
    hid = [next(i for i in range(16) if m.c1.bias[i] == b) for b in pruned.c1.bias]
    res = [next(i for i in range(16) if m.inp.bias[i] == b) for b in pruned.inp.bias]
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    gone_h = [i for i in range(16) if i not in hid]
    gone_r = [i for i in range(16) if i not in res]
    sd["c2.weight"][:, gone_h] = 0.0
    sd["head.weight"][:, gone_r] = 0.0
    sd["c1.weight"][:, gone_r] = 0.0
    ref = _CausalTCN(module_pad).eval()
    ref.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(pruned(**feeds), ref(**feeds), rtol=1e-4, atol=1e-4)


class _SamePadding(nn.Module):
    """padding="same" with a dilation (WaveNet / TCN style), and reflect / replicate / circular padding modes."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 5, padding="same", dilation=2)
        self.c2 = nn.Conv2d(8, 8, (3, 2), padding="same", dilation=(1, 3))  # even kernel: SAME pads more at the end
        self.c3 = nn.Conv1d(8, 4, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y[:, :, None, :].expand(-1, -1, 3, -1))).mean(2)
        return self.c3(y)


def same_padding_model() -> nn.Module:
    torch.manual_seed(0)
    return _SamePadding().eval()


def test_same_padding_with_dilation_converts(tmp_path, monkeypatch) -> None:
    """torch exports padding="same" as Conv auto_pad=SAME_UPPER, which ONNX Runtime refuses with a dilation
    ('Dilation not supported for AutoPadType::SAME_UPPER'): even fp32 ended in an internal error (exit 1). The
    exporter writes the padding out as explicit pads."""
    import numpy as np

    from edgekit import api
    from edgekit.sources import parse_input_shapes

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((6, 4, 16)).astype(np.float32))
    result = api.convert("test_sweep8_seq:same_padding_model", ["onnxruntime", "openvino", "arm"], tmp_path / "out",
                         input_shapes=parse_input_shapes(["x=1x4x16"]), calibration=str(npz))
    assert [a["target"] for a in result["artifacts"]] == ["onnxruntime", "openvino", "arm"]
    for a in result["artifacts"]:
        assert a["verification"]["passed"], a


def test_onnx_file_with_same_padding_and_dilation_converts(tmp_path) -> None:
    """The same padding in an ONNX file (no exporter in between): the hub gets explicit pads, and since ONNX
    Runtime refuses to run the file as is, the references come from that exact rewrite (said in the log)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit import api

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", dilations=[2], kernel_shape=[3])
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], [w])
    src = tmp_path / "same.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(src))
    before = src.read_bytes()
    result = api.convert(str(src), ["onnxruntime", "openvino", "arm"], tmp_path / "out", precision="fp32")
    assert all(a["verification"]["passed"] for a in result["artifacts"]) and len(result["artifacts"]) == 3
    assert src.read_bytes() == before  # the user's file is untouched


class _Res2Net1d(nn.Module):
    """ECAPA-TDNN's Res2Net block: the channels cut into `scale` parts by torch.chunk, walked in a Python loop, each
    part after the first through its own dilated conv with the previous part's output added."""

    def __init__(self, loop: bool) -> None:
        super().__init__()
        self.loop = loop
        self.pre, self.post = nn.Conv1d(8, 16, 1), nn.Conv1d(16, 8, 1)
        self.convs = nn.ModuleList([nn.Conv1d(4, 4, 3, padding=2, dilation=2) for _ in range(3)])

    def forward(self, x):
        parts = torch.chunk(self.pre(x), 4, dim=1)
        if not self.loop:
            b = self.convs[0](parts[1])
            c = self.convs[1](parts[2] + b)
            return self.post(torch.cat([parts[0], b, c, self.convs[2](parts[3] + c)], 1))
        outs, sp = [], None
        for i, p in enumerate(parts):
            sp = p if i == 0 else self.convs[0](p) if i == 1 else self.convs[i - 1](p + sp)
            outs.append(sp)
        return self.post(torch.cat(outs, dim=1))


def test_loop_over_chunked_channels_prunes_like_the_unrolled_block() -> None:
    """A Python loop over torch.chunk's parts (SpeechBrain's ECAPA-TDNN) could not be traced by torch.fx ('Proxy
    object cannot be iterated'): --prune refused the model (exit 4). chunk(x, n) has n parts whatever x's size, so
    the tracer iterates them; the result is the unrolled block's, the same channels removed from every part."""
    from edgekit.prune import prune_model

    torch.manual_seed(0)
    looped = _Res2Net1d(loop=True).eval()
    unrolled = _Res2Net1d(loop=False).eval()
    unrolled.load_state_dict(looped.state_dict())
    feeds = {"x": torch.randn(2, 8, 12)}
    a, _ = prune_model(looped, feeds, ratio=0.5, round_to=1, keep_first_last=False)
    b, _ = prune_model(unrolled, feeds, ratio=0.5, round_to=1, keep_first_last=False)
    assert a.pre.out_channels == 8 and [c.in_channels for c in a.convs] == [2, 2, 2]
    assert a.pre.out_channels == b.pre.out_channels and a.post.in_channels == b.post.in_channels
    with torch.no_grad():
        torch.testing.assert_close(a(**feeds), b(**feeds))


class _StreamingGRU(nn.Module):
    """A streaming keyword spotter: the GRU state is a model input and output ((layers, batch, hidden))."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = (nn.Conv1d(n, 16, 3, padding=1) for n in (10, 16, 16))
        self.gru, self.fc = nn.GRU(16, 8, batch_first=True), nn.Linear(8, 4)

    def forward(self, feats, h0):
        x = torch.relu(self.mid(torch.relu(self.inp(feats))))
        y, hn = self.gru(torch.relu(self.out(x)).transpose(1, 2), h0)
        return self.fc(y[:, -1]), hn


def streaming_gru() -> nn.Module:
    torch.manual_seed(0)
    return _StreamingGRU().eval()


def test_pruning_a_model_with_a_recurrent_state_input(tmp_path, monkeypatch, capsys) -> None:
    """Pruning stacked calibration samples along axis 0, but a recurrent state input has its batch on axis 1:
    --prune-macs ended in an internal error (exit 1, 'Expected hidden size (1, 8, 8), got [8, 1, 8]'). A model that
    rejects stacked samples gets them one at a time. A MAC target far from met now says why."""
    import numpy as np

    from edgekit import api
    from edgekit.sources import parse_input_shapes

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    rng = np.random.default_rng(0)
    npz = tmp_path / "s.npz"
    np.savez(npz, feats=rng.standard_normal((12, 10, 8)).astype(np.float32),
             h0=rng.standard_normal((12, 1, 8)).astype(np.float32))
    shapes = parse_input_shapes(["feats=1x10x8", "h0=1x1x8"])
    result = api.convert("test_sweep8_seq:streaming_gru", ["onnxruntime"], tmp_path / "out", input_shapes=shapes,
                         calibration=str(npz), prune_macs=0.3)
    assert result["artifacts"][0]["verification"]["passed"]
    prune = result["prune"]["prune"]
    assert [g["modules"] for g in prune["groups"]] == [["mid", "out"]]  # the GRU's units are fixed by h0
    assert prune["macs_after"] < prune["macs_before"]
    # the first layer kept and no other group: nothing to prune, and the run says so
    result = api.convert("test_sweep8_seq:streaming_gru", ["onnxruntime"], tmp_path / "out2", input_shapes=shapes,
                         calibration=str(npz), prune_macs=0.3, prune_exclude=("mid",))
    assert result["prune"]["prune"]["macs_removed"] == 0.0
    assert "--prune-macs 0.3: only 0.0% of MACs removed: no channel group can be pruned" in capsys.readouterr().err
