"""Constructs found by the sweep-8 vision sweep (RegNet, ResNeXt, ConvNeXt, MobileViT, EfficientFormer, MnasNet,
UNet, SSD-lite, super-resolution, style transfer, depth, keypoints, channels_last, .pt2 / TorchScript sources)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from test_prune_coupling import _zeroed_equivalent  # noqa: E402
from torch import nn  # noqa: E402

from edgekit.prune import prune_model  # noqa: E402
from edgekit.prune.graph import analyze  # noqa: E402

IMG = {"x": torch.randn(2, 3, 16, 16)}


def _grouped_modules(m, feeds) -> set[str]:
    return {mod for g in analyze(m.eval(), feeds).groups() for mod in g.modules()}


class LayerScale4D(nn.Module):
    """EfficientFormer's Meta4D / PoolFormer / NAFNet: a residual scaled by a (C, 1, 1) or (1, C, 1, 1) parameter."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)  # the first and last layers are kept whole by default
        self.a = nn.Conv2d(8, 16, 3, padding=1)
        self.mlp = nn.Conv2d(16, 16, 1)
        self.ls = nn.Parameter(torch.rand(16, 1, 1))
        self.beta = nn.Parameter(torch.rand(1, 16, 1, 1))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = torch.relu(self.a(torch.relu(self.stem(x))))
        x = x + self.ls * self.mlp(x) + self.beta
        return self.head(x)


def test_layer_scale_of_shape_c11_is_pruned_with_its_channels():
    """A (C, 1, 1) or (1, C, 1, 1) parameter was 'used as a whole tensor': the whole trunk of a Meta4D /
    NAFNet-style block stayed unpruned. Its one wide axis is the channel axis and is sliced with the channels."""
    torch.manual_seed(0)
    m = LayerScale4D().eval()
    assert "a" in _grouped_modules(m, IMG)
    p, _ = prune_model(m, IMG, ratio=0.5, round_to=1)
    assert p.a.out_channels == 8 and p.ls.shape == (8, 1, 1) and p.beta.shape == (1, 8, 1, 1)
    assert p(**IMG).shape == (2, 4, 16, 16)
    _zeroed_equivalent(m, IMG, frac=0.5)


class UnusedSizeAttention(nn.Module):
    """EfficientFormer's Attention: `B, N, C = x.shape` with C never used (the output reshape uses heads * kd)."""

    def __init__(self, d=16, heads=2, kd=4):
        super().__init__()
        self.h, self.kd = heads, kd
        self.stem = nn.Linear(8, 8)
        self.embed = nn.Linear(8, d)
        self.qkv = nn.Linear(d, heads * kd * 3)
        self.proj = nn.Linear(heads * kd, d)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        x = self.embed(self.stem(x))
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, self.h, -1).permute(0, 2, 1, 3).split([self.kd] * 3, dim=3)
        a = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.head(x + self.proj((a @ v).transpose(1, 2).reshape(b, n, self.h * self.kd)))


def test_unused_size_read_does_not_fix_the_axis():
    """`B, N, C = x.shape` with C unused kept the whole trunk (every layer reading x) unpruned: a size read fixes
    an axis only when the size is used."""
    torch.manual_seed(0)
    m = UnusedSizeAttention().eval()
    feeds = {"x": torch.randn(2, 6, 8)}
    assert "embed" in _grouped_modules(m, feeds)
    p, _ = prune_model(m, feeds, ratio=0.5, round_to=1)
    assert p.embed.out_features == 8 and p.head.in_features == 8
    _zeroed_equivalent(m, feeds, frac=0.5)


class UpConv(nn.Module):
    """UNet decoder step / SimpleBaseline deconvolution head: ConvTranspose2d up, concat with the skip, conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.enc = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(16, 16, 4, 2, 1)
        self.deconv = nn.ConvTranspose2d(16, 8, 2, 2, bias=False)  # a second up-step, its input pruned
        self.dec = nn.Conv2d(24, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        u = torch.relu(self.up(torch.relu(self.enc(s))))
        y = torch.relu(self.dec(torch.cat([u, s], 1)))
        return self.head(y), self.deconv(u)


def test_conv_transpose_channels_are_pruned():
    """ConvTranspose was an unknown layer: every channel into or out of it stayed whole (a UNet's deepest level and
    every up-convolution; a keypoint model's deconvolution head). Its weight is (in, out, k, k): inputs on dim 0,
    outputs on dim 1; the MAC count includes it."""
    import copy

    from edgekit.prune.apply import build_pruned
    from edgekit.prune.macs import count_macs

    torch.manual_seed(0)
    m = UpConv().eval()
    assert {"enc", "up", "deconv", "dec"} <= _grouped_modules(m, IMG)
    an = analyze(m, IMG)
    removed = {g.units[i].root for g in an.groups() for i in range(0, len(g.units), 2)}
    pruned, _ = build_pruned(an, removed, IMG, original=m)
    assert pruned.enc.out_channels == pruned.up.in_channels == 8 and pruned.up.out_channels == 8
    assert pruned.deconv.in_channels == 8 and pruned.dec.in_channels == 12
    zeroed = copy.deepcopy(m)
    for (mod, pname, dim), atoms in an.slices.items():
        layer = zeroed.get_submodule(mod)
        consumer_dim = 0 if isinstance(layer, nn.ConvTranspose2d) else 1 if isinstance(layer, nn.Conv2d) else None
        if dim == consumer_dim and pname == "weight":
            idx = torch.as_tensor(np.nonzero(np.isin(an.uf.roots(atoms), np.fromiter(removed, np.int64)))[0])
            with torch.no_grad():
                layer.weight.index_fill_(dim, idx, 0.0)
    with torch.no_grad():
        for a, b in zip(pruned(**IMG), zeroed(**IMG)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    convs = 8 * 16 * 16 * 27 + 16 * 8 * 8 * 72 + 16 * 16 * 16 * 216 + 4 * 16 * 16 * 16
    transposed = 16 * 8 * 8 * 16 * 16 + 16 * 16 * 16 * 8 * 4  # input elements x out channels x kernel
    assert count_macs(m, {"x": IMG["x"][:1]}) == convs + transposed


class Fold(nn.Module):
    """MobileViT-style patch folding: F.unfold into patches, a per-patch linear, F.fold back (ONNX Col2Im)."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(12, 12)

    def forward(self, x):
        p = self.mix(F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)).transpose(1, 2)
        return F.fold(p, output_size=(16, 16), kernel_size=2, stride=2)


def test_export_raises_the_opset_an_operator_needs(tmp_path):
    """F.fold exports as Col2Im, which needs opset 18: the export at opset 17 failed ('unsupported model', exit 4)
    for every target, although ONNX Runtime and OpenVINO run it. The opset the exporter names is used instead."""
    import onnx
    import onnxruntime as ort

    from edgekit.data import InputSpec
    from edgekit.export import export_onnx

    torch.manual_seed(0)
    m = Fold().eval()
    path = export_onnx(m, [InputSpec("x", ("batch", 3, 16, 16))], ["y"], tmp_path / "fold.onnx")
    model = onnx.load(str(path))
    assert "Col2Im" in {n.op_type for n in model.graph.node}
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    x = IMG["x"]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, m(x).detach().numpy(), atol=1e-5)


class FoldToInputSize(Fold):
    """F.fold back to the input's own size (output_size from x.shape): torch's exporter fails on it."""

    def forward(self, x):
        p = self.mix(F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)).transpose(1, 2)
        return F.fold(p, output_size=(x.shape[2], x.shape[3]), kernel_size=2, stride=2)


def fold_to_input_size():
    torch.manual_seed(0)
    return FoldToInputSize().eval()


def test_a_failed_export_prints_one_json_object_and_one_error_line(tmp_path):
    """When torch's TorchScript exporter fails it prints the whole TorchScript graph (100+ lines) from C++ on
    stdout, past Python's redirection: `--json` stdout was not one JSON object and stderr was not one clear
    line. The exporter's own output is kept for --verbose only."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])}
    proc = subprocess.run([sys.executable, "-m", "edgekit", "convert", "test_sweep8_vision:fold_to_input_size",
                           "--input-shape", "1x3x16x16", "-t", "onnxruntime", "--precision", "fp32",
                           "-o", str(tmp_path / "out"), "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode in (2, 4), proc.stderr[-2000:]
    assert json.loads(proc.stdout)["error"]["message"].startswith("ONNX export failed")
    assert "Torch IR graph" not in proc.stdout + proc.stderr and len(proc.stderr.splitlines()) < 10
    assert not (tmp_path / "out").exists()
