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
