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
