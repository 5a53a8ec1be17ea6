"""A folder of images (searched recursively) + a preprocessing spec -> model inputs, decoded lazily.

The spec comes from the `preprocess=` option (preset name or dict), else `preprocess.toml` inside the
folder, else `<folder>.toml` next to it, else the `imagenet` preset (with a note on stderr). Labels:
when the images sit in one sub-folder per class (`cat/1.jpg`, `dog/2.jpg`), the sorted class folder
index is the label; or give a `labels.txt` (one `filename label` line per image) in the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import InputSpec, SampleSet
from edgekit.data.preprocess import image_input, make_preprocess, read_spec_file
from edgekit.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPEC_NAMES = ("preprocess.toml", "edgekit.toml")


def accepts(spec: str) -> bool:
    p = Path(spec)
    return p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES


def find_spec(path: Path) -> Path | None:
    folder = path if path.is_dir() else path.parent
    for name in SPEC_NAMES:
        if (folder / name).is_file():
            return folder / name
    sibling = path.with_suffix(".toml") if path.is_file() else path.parent / f"{path.name}.toml"
    return sibling if sibling.is_file() else None


def list_images(path: Path) -> list[Path]:
    if not path.exists():
        raise DataError(f"data not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        if not files:
            raise DataError(f"{path}: the folder is empty", hint=f"put images ({', '.join(IMAGE_SUFFIXES[:4])} ...) in it")
        others = ", ".join(p.name for p in files[:3]) + (" ..." if len(files) > 3 else "")
        raise DataError(f"{path}: no image files in the folder (found {len(files)} other file(s): {others})",
                        hint=f"images must end in {', '.join(IMAGE_SUFFIXES[:4])} ...")
    return images


def _labels(root: Path, images: list[Path]) -> np.ndarray | None:
    table = root / "labels.txt"
    if table.is_file():
        mapping = {}
        for line in table.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                mapping[parts[0]] = int(parts[1])
        missing = [p.name for p in images if p.name not in mapping and str(p.relative_to(root)) not in mapping]
        if missing:
            raise DataError(f"{table}: no label for {len(missing)} image(s), e.g. {missing[0]}")
        return np.array([mapping.get(str(p.relative_to(root)), mapping.get(p.name)) for p in images])
    parents = {p.parent for p in images}
    if len(parents) > 1 and all(p.parent.parent == root for p in images):
        classes = sorted(q.name for q in parents)
        return np.array([classes.index(p.parent.name) for p in images])
    return None


def decode(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})",
                        hint="remove it from the calibration folder") from exc
    return img


def read(spec: str, inputs: list[InputSpec], *, preprocess: dict | str | None = None, **_: object) -> SampleSet:
    path = Path(spec)
    images = list_images(path)
    model_input = image_input(inputs, spec)
    source = "options"
    if preprocess is None:
        spec_file = find_spec(path)
        if spec_file is not None:
            preprocess, source = read_spec_file(spec_file), spec_file.name
        else:
            source = "imagenet preset (no preprocess.toml found)"
    pre = make_preprocess(preprocess, model_input, spec)
    decode(images[0])  # fail early on an unreadable first file
    root = path if path.is_dir() else path.parent

    def make(i: int) -> dict[str, np.ndarray]:
        return {model_input.name: pre.apply(decode(images[i]))}

    skipped = _other_files(path, images)
    return SampleSet(f"{len(images)} images from {path.name}", len(images), make,
                     labels=_labels(root, images) if path.is_dir() else None,
                     meta={"kind": "images", "preprocess": pre.to_dict(), "preprocess_source": source,
                           "skipped_files": skipped})


def _other_files(path: Path, images: list[Path]) -> list[str]:
    """Files of the folder that are neither images nor the folder's own spec / labels (skipped, and said so)."""
    if not path.is_dir():
        return []
    own = {*SPEC_NAMES, "labels.txt"}
    taken = set(images)
    return [str(p.relative_to(path)) for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p not in taken and p.name not in own]


def describe(meta: dict[str, Any]) -> str:
    """One line on how a folder's images become inputs, for the log."""
    pre = meta.get("preprocess", {})
    crop = "x".join(map(str, pre.get("crop", [])))
    line = (f"preprocessing from {meta.get('preprocess_source')}: resize {pre.get('resize')}, crop {crop}, "
            f"scale {pre.get('scale'):.6g}, mean {pre.get('mean')}, std {pre.get('std')}, "
            f"{pre.get('channel_order')}, {pre.get('layout')}")
    skipped = meta.get("skipped_files") or []
    if skipped:
        line += (f"; skipped {len(skipped)} non-image file(s): {', '.join(skipped[:3])}"
                 + (" ..." if len(skipped) > 3 else ""))
    return line
