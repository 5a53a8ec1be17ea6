"""zoo:NAME: a built-in model with real weights."""

from __future__ import annotations

from pathlib import Path

from edgekit.sources.model import LoadedModel
from edgekit.sources.shapes import apply_overrides
from edgekit.sources.weights import apply_state_dict, load_state_dict


def load(name: str, *, weights: Path | None = None, input_shapes=None) -> LoadedModel:
    from edgekit.zoo import get_entry

    entry = get_entry(name)
    module = entry.build()
    if weights is not None:
        apply_state_dict(module, load_state_dict(Path(weights)), Path(weights))
    module.eval()
    inputs = apply_overrides(list(entry.inputs), input_shapes, f"zoo:{name}")
    return LoadedModel(name=name, kind="zoo", inputs=inputs, output_names=list(entry.output_names),
                       task=entry.task, module=module, calibration=entry.calibration,
                       meta={"description": entry.description})
