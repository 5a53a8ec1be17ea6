"""Named sets shipped in calibration/: `--calibration NAME` reads calibration/NAME.toml.

Each TOML has a `kind`, one small reader each (KINDS):
  arrays         path = "mnist/train_sample.npz"       ready tensors (.npy/.npz, see arrays.py)
  text           path = "sentences.txt", tokenizer, max_length
  natural_crops  sources = ["skimage:astronaut", "sklearn:china.jpg", ...], count, seed, preprocess
An optional `eval = "..."` names a labelled evaluation set, read with `NAME:eval`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import InputSpec, SampleSet
from edgekit.errors import DataError, MissingDependencyError
from edgekit.resources import data_dir
from edgekit.toml_compat import toml

SPLITS = ("eval",)


def names() -> list[str]:
    return sorted(p.stem for p in data_dir("calibration").glob("*.toml"))


def _parse_name(spec: str) -> tuple[str, str | None]:
    name, _, split = spec.partition(":")
    return name, split or None


def accepts(spec: str) -> bool:
    name, split = _parse_name(spec)
    if split not in (None, *SPLITS) or "/" in name or "\\" in name or not name:
        return False
    return (data_dir("calibration") / f"{name}.toml").is_file()


def config(name: str) -> dict[str, Any]:
    path = data_dir("calibration") / f"{name}.toml"
    try:
        return dict(toml.loads(path.read_text()))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not valid TOML ({exc})") from exc


def read(spec: str, inputs: list[InputSpec], **opts: Any) -> SampleSet:
    name, split = _parse_name(spec)
    conf = config(name)
    base = data_dir("calibration")
    if split == "eval":
        if "eval" not in conf:
            raise DataError(f"shipped set '{name}' has no evaluation split", hint=f"use '{name}' alone")
        conf = {**conf, "path": conf["eval"]}
    kind = conf.get("kind")
    if kind not in KINDS:
        raise DataError(f"calibration/{name}.toml: unknown kind '{kind}'", hint=f"one of: {', '.join(KINDS)}")
    samples = KINDS[kind](name, conf, base, inputs, **opts)
    samples.meta.setdefault("shipped", name)
    return samples


def _arrays(name: str, conf: dict, base: Path, inputs: list[InputSpec], **opts: Any) -> SampleSet:
    from edgekit.data import arrays

    path = base / conf["path"]
    if not path.is_file():
        raise DataError(f"shipped set '{name}': {path} is missing", hint="reinstall edgekit")
    return arrays.read(str(path), inputs, **opts)


def _text(name: str, conf: dict, base: Path, inputs: list[InputSpec], *, tokenizer: str | None = None,
          max_length: int | None = None, vocab_size: int | None = None, **_: Any) -> SampleSet:
    from edgekit.data import text

    lines = text.text_lines(base / conf["path"])
    tok = text.resolve_tokenizer(tokenizer or conf["tokenizer"], base, conf.get("requires"))
    length = text.checked_max_length(max_length if max_length is not None else conf.get("max_length", 128),
                                     f"calibration/{name}.toml")
    return text.tokenized_samples(lines, tok, inputs, max_length=length, length_from=f"{name}.toml",
                                  where=f"shipped set '{name}'", vocab_size=vocab_size,
                                  description=f"{len(lines)} sentences ({name})")


@lru_cache(maxsize=4)
def _source_images(sources: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    out = []
    for src in sources:
        lib, _, item = src.partition(":")
        try:
            if lib == "skimage":
                import skimage.data

                img = getattr(skimage.data, item)()
            elif lib == "sklearn":
                from sklearn.datasets import load_sample_image

                img = load_sample_image(item)
            else:
                raise DataError(f"natural image source '{src}': use skimage:NAME or sklearn:FILE")
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(f"the natural_images set is built from {exc.name} images",
                                         hint="pip install scikit-image scikit-learn") from exc
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    return tuple(out)


def random_region(img: np.ndarray, rng: np.random.Generator, scale: tuple[float, float],
                  ratio: tuple[float, float]) -> np.ndarray:
    """A random-area (fraction of the image in `scale`), random-aspect region, mirrored half the time (uint8 HWC)."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        ch, cw = int(round(np.sqrt(area / aspect))), int(round(np.sqrt(area * aspect)))
        if 0 < ch <= h and 0 < cw <= w:
            break
    else:
        ch = cw = min(h, w)
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    region = img[top : top + ch, left : left + cw]
    return np.ascontiguousarray(region[:, ::-1] if rng.random() < 0.5 else region)


def _natural_crops(name: str, conf: dict, base: Path, inputs: list[InputSpec], *,
                   preprocess: dict | str | None = None, **_: Any) -> SampleSet:
    """Photos seen the way an app sees them: a random region of a source photo (RandomResizedCrop-style
    area/aspect, random mirror) treated as the camera frame, then the model's own preprocessing
    (resize the shorter side, center crop, normalize), i.e. `ImagePreprocess.apply`."""
    from PIL import Image

    from edgekit.data.preprocess import image_input, make_preprocess

    model_input = image_input(inputs, f"shipped set '{name}'")
    pre = make_preprocess(preprocess or conf.get("preprocess"), model_input, f"shipped set '{name}'")
    sources = tuple(conf["sources"])
    count, seed = int(conf.get("count", 1000)), int(conf.get("seed", 0))
    scale = tuple(conf.get("area", (0.25, 1.0)))
    ratio = tuple(conf.get("aspect", (0.75, 4 / 3)))

    def make(i: int) -> dict[str, np.ndarray]:
        images = _source_images(sources)
        rng = np.random.default_rng([seed, i])
        region = random_region(images[i % len(images)], rng, scale, ratio)
        return {model_input.name: pre.apply(Image.fromarray(region))}

    return SampleSet(f"{count} natural-image crops ({name}, seed {seed})", count, make,
                     meta={"kind": "natural_crops", "preprocess": pre.to_dict(), "sources": list(sources)})


KINDS = {"arrays": _arrays, "text": _text, "natural_crops": _natural_crops}
