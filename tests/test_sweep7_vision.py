"""Constructs found by the vision-architecture sweep (EfficientNet, ShuffleNetV2, DenseNet, GhostNet, YOLO, Swin,
DeepLab, HRNet-style models): pruning couplings and conversion paths."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from test_prune_coupling import _zeroed_equivalent  # noqa: E402
from torch import nn  # noqa: E402

from edgekit.prune import prune_model  # noqa: E402

IMG = {"x": torch.randn(2, 3, 16, 16)}


class MultiScale(nn.Module):
    """HRNet / FPN / YOLO-neck fusion: a low-resolution branch upsampled (nn.Upsample, F.interpolate) and added to
    or concatenated with a high-resolution one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.hi = nn.Conv2d(16, 32, 3, padding=1)
        self.lo = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.lo2 = nn.Conv2d(16, 32, 3, stride=4, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.hi(x) + self.up(self.lo(x)))
        z = F.interpolate(self.lo2(x), size=y.shape[-2:], mode="bilinear", align_corners=True)
        return self.head(torch.cat([y, F.relu(z)], 1))


def test_upsampled_branches_are_pruned():
    """nn.Upsample and F.interpolate pass channels through; they were unknown ops that kept every branch feeding
    them (HRNet fusion, YOLO/FPN necks, DeepLab's ASPP) whole."""
    torch.manual_seed(0)
    m = MultiScale().eval()
    p, _ = prune_model(m, IMG, ratio=0.5)
    assert p.hi.out_channels == p.lo.out_channels == 16 and p.lo2.out_channels == 16
    assert p.head.in_channels == 32
    _zeroed_equivalent(m, IMG)


class ChunkHalves(nn.Module):
    """YOLOv8's C2f / ShuffleNetV2: chunk(2) of one conv's output, each half feeding its own layers."""

    def __init__(self):
        super().__init__()
        self.cv1 = nn.Conv2d(3, 32, 1)
        self.m = nn.Conv2d(16, 16, 3, padding=1)
        self.cv2 = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat([a, F.relu(self.m(b))], 1))


def test_chunk_halves_keeping_different_counts():
    """The two halves of a chunk are separate groups; when they kept different counts (any non-uniform allocation)
    chunk(2) cut the pruned tensor in the middle and the pruned model did not run ('expected input[2, 56, 2, 2] to
    have 64 channels'). It becomes split with the kept sizes."""
    torch.manual_seed(0)

    def uneven(groups):
        halves = [g for g in groups if ("cv1", "weight", 0) in g.signature]
        assert len(halves) == 2
        return {u.root for u in halves[0].units[:8]} | {u.root for u in halves[1].units[:4]}

    _zeroed_equivalent(ChunkHalves(), IMG, pick=uneven)


class WindowAttention(nn.Module):
    """Swin's window attention: sizes read from x.shape, fused qkv, a relative position bias table (positions,
    heads) gathered by an index buffer, added per head."""

    def __init__(self, dim=32, ws=3, heads=4):
        super().__init__()
        self.heads = heads
        self.table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads))
        self.register_buffer("index", torch.randint(0, (2 * ws - 1) ** 2, (ws * ws, ws * ws)))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attn = WindowAttention()

    def forward(self, x):
        x = self.embed(x)
        b, n, c = x.shape  # the block reads the trunk width first (window partition): the trunk stays whole
        return self.attn(x.view(b * n // 9, 9, c))


def test_window_attention_with_position_bias_table_prunes_heads():
    """Heads of Swin's window attention were never pruned: a size read from an axis an earlier read had already
    kept whole was not known to be fixed (the final reshape(b, n, c) blocked the heads), and the bias table, a 2-D
    parameter, was a fixed whole tensor. Now both follow the heads (table columns are sliced with them)."""
    torch.manual_seed(0)
    m = SwinLike().eval()
    feeds = {"x": torch.randn(2, 18, 8)}
    p, rep = prune_model(m, feeds, ratio=0.5, round_to=1)
    assert p.attn.qkv.out_features == 48 and p.attn.proj.in_features == 16 and p.attn.table.shape[1] == 2
    assert p.embed.out_features == 32  # the trunk read by x.shape stays whole
    _zeroed_equivalent(m, feeds, frac=0.5)


def test_untraceable_forward_names_the_model_line():
    """Swin's window_reverse computes B = int(windows.shape[0] / ...): torch.fx cannot trace it, and the refusal
    said only "int() argument must be ... not 'Proxy'"; it now names the file, line and code."""
    from edgekit.errors import UnsupportedModelError

    class IntOfSize(nn.Module):
        def forward(self, x):
            return x.view(int(x.shape[0] / 1), -1)

    with pytest.raises(UnsupportedModelError) as info:
        prune_model(IntOfSize(), {"x": torch.randn(2, 3)}, ratio=0.5)
    msg = str(info.value)
    assert "test_sweep7_vision.py:" in msg and "int(x.shape[0] / 1)" in msg and "\n" not in msg
