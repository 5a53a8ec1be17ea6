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
