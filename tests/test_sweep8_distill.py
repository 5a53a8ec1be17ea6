"""Distillation sweep on small models not in the repo: optional/keyword-only forward arguments, several outputs,
namedtuple/dataclass outputs, a recurrent state input, separate --train-data, bad input."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgekit.prune import prune_model  # noqa: E402


def _mlp(out: int = 5) -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, out))


class _OptionalArgs(nn.Module):
    """forward(x, *, scale=1.0, mask=None): edgekit feeds x only."""

    def __init__(self) -> None:
        super().__init__()
        self.n = _mlp()

    def forward(self, x, *, scale: float = 1.0, mask=None):
        y = self.n(x) * scale
        return y if mask is None else y * mask


def test_pruning_leaves_unfed_optional_and_keyword_only_arguments_at_their_defaults() -> None:
    """fx traced `mask` as a placeholder (a proxy is never None), so the graph multiplied by the missing mask:
    --prune-macs ended in an internal error (exit 1, "unsupported operand type(s) for *: 'Tensor' and 'NoneType'")."""
    torch.manual_seed(0)
    model = _OptionalArgs().eval()
    x = torch.randn(4, 16)
    student, rep = prune_model(model, {"x": x[:1]}, macs_ratio=0.4)
    assert rep["macs_after"] < rep["macs_before"]
    assert student(x).shape == (4, 5)
