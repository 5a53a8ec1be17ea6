"""The source model's reference outputs, each sample run through a model once per convert.

The task check (stage_samples), the fp32 verification set and the int8 held-out set (stage_references), and
the unpruned-model comparison are drawn from one sample set and overlap: 32 samples give a verification set
of all 32, a held-out quarter inside it and a task check of 8 inside it. Running the source model for each
role repeated the same forward passes (ResNet-50 at 224, int8 for three targets: 48 torch passes where 32
distinct samples exist). Outputs are kept per (model, sample), where a sample is its index in the set it was
drawn from (`SampleSet.make`), and a model is the torch module object or the ONNX file; a pruned module is
another object, so its outputs are computed anew.
"""

from __future__ import annotations

from typing import Any

from edgekit.data import SampleSet


class ReferenceMemo:
    def __init__(self) -> None:
        self._outputs: dict[tuple[Any, Any, int], list] = {}  # keys hold the module / make: no id reuse

    @staticmethod
    def _model_key(model: Any) -> Any:
        return model.module if model.module is not None else ("onnx", str(model.onnx_path))

    def missing(self, model: Any, samples: SampleSet) -> SampleSet:
        """The part of `samples` whose outputs from `model` are not known yet (in the order of `samples`)."""
        key = self._model_key(model)
        idx = list(samples.indices) if samples.indices is not None else list(range(samples.count))
        todo = list(dict.fromkeys(i for i in idx if (key, samples.make, i) not in self._outputs))
        if len(todo) == len(idx):
            return samples
        return SampleSet(samples.description, samples.count, samples.make, samples.synthetic, samples.labels,
                         dict(samples.meta), todo)

    def store(self, model: Any, samples: SampleSet, outputs: list) -> None:
        """Outputs of `model` on `samples`, one entry per sample in its order."""
        key = self._model_key(model)
        idx = list(samples.indices) if samples.indices is not None else list(range(samples.count))
        if len(idx) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs for {len(idx)} samples")
        for i, out in zip(idx, outputs):
            self._outputs[(key, samples.make, i)] = out

    def get(self, model: Any, samples: SampleSet) -> list:
        """The stored outputs of `model` on every sample of `samples`, in its order."""
        key = self._model_key(model)
        idx = samples.indices if samples.indices is not None else range(samples.count)
        return [self._outputs[(key, samples.make, i)] for i in idx]

    def outputs(self, model: Any, samples: SampleSet) -> list:
        """verify.reference_outputs(model, samples), running only the samples not run before."""
        from edgekit.verify import reference_outputs

        todo = self.missing(model, samples)
        if len(todo):
            self.store(model, todo, reference_outputs(model, todo))
        return self.get(model, samples)
