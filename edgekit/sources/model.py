"""What every model source produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.data import InputSpec


@dataclass
class LoadedModel:
    """A model ready for the pipeline.

    Torch sources fill `module` (an nn.Module in eval mode); ONNX sources fill `onnx_path`.
    `inputs` name and shape every input (dynamic axes as strings, e.g. "batch", "seq");
    `task` tells verification what to compare: "classification" (top-1), "embedding" (cosine) or "generic".
    """

    name: str
    kind: str  # onnx | pt2 | torchscript | factory | zoo
    inputs: list[InputSpec]
    output_names: list[str]
    task: str = "generic"
    module: Any = None  # torch.nn.Module | None
    onnx_path: Path | None = None
    calibration: str | None = None  # name of the shipped calibration set that fits (zoo models)
    source_bytes_sha256: str | None = None  # content hash of the source (for caching)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {i.name: {ax: d for ax, d in enumerate(i.shape) if isinstance(d, str)} for i in self.inputs}
