"""Inputs for a profile run: the artifact's input specs, then samples (calibration set or synthetic) written to
a .npz the runner reads (keys "<i>/<input name>" and "__count__")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import InputSpec, SampleSet, load_samples, synthetic_samples
from edgekit.errors import DataError, EdgekitError, ModelLoadError, UnsupportedModelError


def artifact_inputs(path: Path) -> list[InputSpec]:
    """Input specs in the source model's convention. Asks the backend table first (its Session takes NCHW float
    feeds, the convention of calibration data); falls back to reading the artifact's own inputs."""
    try:
        from edgekit.backends import backend_for_file
        from edgekit.backends.base import LoadOptions

        session = backend_for_file(path).load(path, LoadOptions(threads=1))
        return [InputSpec(t.name, tuple(t.shape), t.dtype) for t in session.inputs]
    except Exception as exc:  # noqa: BLE001 - any backend trouble: read the artifact's own inputs instead
        from edgekit.progress import log

        log(f"profile: backend could not open {path.name} ({type(exc).__name__}: {exc}); using its own inputs",
            verbose_only=True)
        return native_inputs(path)


def native_inputs(path: Path) -> list[InputSpec]:
    """The artifact's own input names, shapes and dtypes, read with the format's own library."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".onnx", ".ort"):
            return _onnx_inputs(path)
        if suffix == ".xml":
            return _ov_inputs(path)
        if suffix == ".tflite":
            return _tflite_inputs(path)
    except EdgekitError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: cannot read its inputs: {exc}", hint="is the file complete?") from exc
    raise ModelLoadError(f"{path}: no runner for '{suffix}' files", hint="expected .onnx, .ort, .xml or .tflite")


def _onnx_inputs(path: Path) -> list[InputSpec]:
    if path.suffix.lower() == ".ort":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        table = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
                 "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(float16)": "float16"}
        return [InputSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape),
                          table.get(i.type, "float32")) for i in sess.get_inputs()]
    import onnx

    from edgekit.sources.onnx_file import graph_inputs

    return graph_inputs(onnx.load(str(path), load_external_data=False))


def _ov_inputs(path: Path) -> list[InputSpec]:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    out = []
    for port in model.inputs:
        shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
        out.append(InputSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()).name))
    return out


def _tflite_inputs(path: Path) -> list[InputSpec]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return [InputSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name)
            for d in interp.get_input_details()]


def make_samples(path: Path, samples: str | SampleSet | None, max_samples: int = 8) -> tuple[SampleSet, list[InputSpec]]:
    """The samples a profile run feeds: `samples` (a SampleSet, or a spec for edgekit.data.load_samples) or
    synthetic ones of the artifact's input shapes and dtypes."""
    specs = artifact_inputs(path)
    for spec in specs:  # a string (or sequence/map) input: nothing numeric to feed; was an internal error
        try:
            kind = np.dtype(spec.dtype).kind
        except TypeError:
            kind = None
        if kind not in ("f", "i", "u", "b"):
            raise UnsupportedModelError(f"{Path(path).name}: input '{spec.name}' is of type {spec.dtype}; a profile "
                                        "feeds numeric tensors only",
                                        hint="profile the graph after its string processing (e.g. the tokenizer)")
    from edgekit.profile.artifact_ids import artifact_id_bounds

    # integer ids index tables whose sizes the artifact's own graph gives: synthetic ids are drawn inside them,
    # given ones are checked against them (a tokenizer for another vocabulary is named as such)
    high = artifact_id_bounds(Path(path), [s.name for s in specs if np.dtype(s.dtype).kind in "iu"])
    if samples is None:
        return synthetic_samples(specs, count=1, id_high=high), specs
    if isinstance(samples, SampleSet):
        chosen = samples.select(max_samples)
    else:
        chosen = load_samples(str(samples), specs).select(max_samples)
    from edgekit.data.id_bounds import check_ids

    check_ids(chosen, high, f"--samples {samples if not isinstance(samples, SampleSet) else chosen.description}")
    return chosen, specs


def write_feeds(sample_set: SampleSet, specs: list[InputSpec], out: Path) -> Path:
    arrays: dict[str, Any] = {}
    count = 0
    for i, feed in enumerate(sample_set):
        for spec in specs:
            if spec.name not in feed:
                raise DataError(f"samples have no tensor for input '{spec.name}' (they have: {', '.join(feed)})",
                                hint="give samples made for this model")
            arrays[f"{i}/{spec.name}"] = np.asarray(feed[spec.name])
        count = i + 1
    if count == 0:
        raise DataError("no samples to profile with", hint="give at least one sample")
    arrays["__count__"] = np.array(count)
    arrays["__order__"] = np.array([spec.name for spec in specs])
    np.savez(out, **arrays)
    return out


def describe(sample_set: SampleSet) -> dict[str, Any]:
    return {"count": len(sample_set), "synthetic": bool(sample_set.synthetic), "description": sample_set.description}
