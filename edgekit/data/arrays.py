"""Ready input tensors in .npy / .npz files (keys = input names, or one array for a single-input model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.data import InputSpec, SampleSet
from edgekit.errors import DataError

LABEL_KEYS = ("labels", "label", "y", "targets")


def accepts(spec: str) -> bool:
    return spec.lower().endswith((".npy", ".npz"))


def stacked(arr: np.ndarray, spec: InputSpec) -> bool:
    """Samples of an input with no batch axis ((C, H, W): forward() adds it), stored one per leading index."""
    want = spec.shape
    return (bool(want) and arr.ndim == len(want) + 1 and all(isinstance(d, int) and d > 0 for d in want)
            and tuple(arr.shape[1:]) == tuple(want))


def _check(name: str, arr: np.ndarray, spec: InputSpec, path: str) -> np.ndarray:
    want, stored = spec.shape, tuple(arr.shape)  # messages name the shape as stored in the file
    if stacked(arr, spec):
        return arr
    single = arr.ndim == len(want) - 1
    if single:
        arr = arr[None]  # a single sample without a batch axis
    if arr.ndim != len(want):
        raise DataError(f"{path}: '{name}' has shape {stored}, model input '{spec.name}' expects rank "
                        f"{len(want)} {tuple(want)}", hint="store samples as (N, ...) matching the input")
    for i, (got, exp) in enumerate(zip(arr.shape[1:], want[1:]), start=1):
        if isinstance(exp, int) and exp > 0 and got != exp:
            read_as = " (read as one sample without a batch axis)" if single else ""
            raise DataError(f"{path}: '{name}' has shape {stored}{read_as}, model input '{spec.name}' expects "
                            f"{tuple(want)} (axis {i - single} of the stored array: {got} != {exp})")
    kind_ok = np.dtype(spec.dtype).kind == arr.dtype.kind or (
        np.dtype(spec.dtype).kind in "iu" and arr.dtype.kind in "iu")
    if not kind_ok and not (np.dtype(spec.dtype).kind == "f" and arr.dtype.kind in "fiu"):
        raise DataError(f"{path}: '{name}' has dtype {arr.dtype}, model input '{spec.name}' expects {spec.dtype}")
    return arr


def read(spec: str, inputs: list[InputSpec], **_: object) -> SampleSet:
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if path.suffix == ".npy" else None)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a readable {path.suffix} file ({exc})") from exc
    labels = None
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise DataError(f"{path}: one array given but the model has {len(inputs)} inputs",
                            hint=f"use a .npz with keys {', '.join(i.name for i in inputs)}")
        arrays = {inputs[0].name: _check("array", loaded, inputs[0], spec)}
    else:
        keys = list(loaded.keys())
        input_names = {i.name for i in inputs}  # a model input named "y" or "label" is data, not labels
        label_key = next((k for k in LABEL_KEYS if k in keys and k not in input_names), None)
        data_keys = [k for k in keys if k != label_key]
        if label_key:
            labels = np.asarray(loaded[label_key])
        if len(inputs) == 1 and len(data_keys) == 1:
            arrays = {inputs[0].name: _check(data_keys[0], loaded[data_keys[0]], inputs[0], spec)}
        else:
            missing = [i.name for i in inputs if i.name not in data_keys]
            if missing:
                raise DataError(f"{path}: no array for input(s) {', '.join(missing)} (keys: {', '.join(keys)})",
                                hint="name the .npz keys after the model inputs")
            arrays = {i.name: _check(i.name, loaded[i.name], i, spec) for i in inputs}
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise DataError(f"{path}: inputs have different sample counts {sorted(counts)}")
    count = counts.pop()
    if labels is not None and len(labels) != count:
        raise DataError(f"{path}: {len(labels)} labels for {count} samples")
    dtypes = {i.name: i.dtype for i in inputs}
    whole = {i.name for i in inputs if stacked(arrays[i.name], i)}  # one sample = a[i], no batch axis to keep

    def make(i: int) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(a[i] if k in whole else a[i : i + 1]).astype(dtypes[k], copy=False)
                for k, a in arrays.items()}

    return SampleSet(f"{count} samples from {path.name}", count, make, labels=labels)
