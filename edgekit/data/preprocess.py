"""Image preprocessing specs: resize the shorter side, center crop, scale, mean/std, channel order, layout.

A spec is a small dict (from a TOML next to the data, a shipped set's TOML, or options) optionally
starting from a preset:

    preset = "imagenet"     # resize 256 / crop 224 (scaled to the model input), /255, ImageNet mean/std
    resize = 256            # shorter side, pixels (0 = no resize)
    crop = 224              # center crop (int or [h, w]); default: the model input's H, W
    scale = 0.00392156862   # multiply raw 0..255 pixels first
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    channel_order = "rgb"   # or "bgr"
    layout = "nchw"         # or "nhwc"; default: guessed from the model input shape

`x = (pixel * scale - mean) / std`, then channels reordered and laid out for the model input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import InputSpec
from edgekit.errors import DataError
from edgekit.toml_compat import toml

PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "crop_ratio": 0.875, "channel_order": "rgb"},
    "[-1,1]": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
               "crop_ratio": 0.875, "channel_order": "rgb"},
    "[0,1]": {"scale": 1 / 255, "mean": [0.0], "std": [1.0], "crop_ratio": 0.875, "channel_order": "rgb"},
    "raw": {"scale": 1.0, "mean": [0.0], "std": [1.0], "crop_ratio": 1.0, "channel_order": "rgb"},
}
PRESET_ALIASES = {"-1,1": "[-1,1]", "inception": "[-1,1]", "0,1": "[0,1]"}
_KEYS = {"preset", "resize", "crop", "scale", "mean", "std", "channel_order", "layout", "crop_ratio"}


@dataclass(frozen=True)
class ImagePreprocess:
    height: int  # crop size = model input H, W
    width: int
    channels: int  # 1 (grayscale) or 3
    layout: str  # "nchw" | "nhwc"
    resize: int  # shorter side before the crop; 0 = none
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "rgb"
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"resize": self.resize, "crop": [self.height, self.width], "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order,
                "layout": self.layout}

    def normalize(self, hwc: np.ndarray) -> np.ndarray:
        """A (H, W, 3|1) uint8/float RGB crop of the final size -> one model input with batch axis."""
        x = hwc.astype(np.float32)
        if self.channels == 1 and x.shape[-1] != 1:
            x = (x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        elif self.channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        if self.channels == 3 and self.channel_order == "bgr":
            x = x[..., ::-1]
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if self.channel_order == "bgr" and mean.size == 3:
            mean, std = mean[::-1], std[::-1]
        x = (x * np.float32(self.scale) - mean) / std
        if self.layout == "nchw":
            x = x.transpose(2, 0, 1)
        if np.dtype(self.dtype).kind in "iu":  # raw pixels for an integer image input
            info = np.iinfo(self.dtype)
            x = np.clip(np.round(x), info.min, info.max)
        return np.ascontiguousarray(x[None]).astype(self.dtype, copy=False)

    def apply(self, image: Any) -> np.ndarray:
        """PIL image -> model input: resize shorter side, center crop, normalize."""
        from PIL import Image

        img = image.convert("RGB")
        if self.resize:
            w, h = img.size
            s = self.resize / min(w, h)
            img = img.resize((max(self.width, round(w * s)), max(self.height, round(h * s))), Image.BILINEAR)
        w, h = img.size
        if w < self.width or h < self.height:  # no resize asked and too small: upscale to cover the crop
            s = max(self.width / w, self.height / h)
            img = img.resize((max(self.width, round(w * s)), max(self.height, round(h * s))), Image.BILINEAR)
            w, h = img.size
        left, top = (w - self.width) // 2, (h - self.height) // 2
        img = img.crop((left, top, left + self.width, top + self.height))
        return self.normalize(np.asarray(img))


def image_input(inputs: list[InputSpec], where: str) -> InputSpec:
    """The single image input of a model (rank 4, 1 or 3 channels), else a DataError."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(f"{i.name}{tuple(i.shape)}" for i in inputs)
        raise DataError(f"{where}: images need a model with one image input (N, C, H, W) or (N, H, W, C); "
                        f"this model has {shapes}", hint="give a .npz of ready input tensors instead")
    return inputs[0]


def _guess_layout(shape: tuple) -> str:
    c1, c_last = shape[1], shape[-1]
    if c1 in (1, 3):
        return "nchw"
    if c_last in (1, 3):
        return "nhwc"
    return "nchw"


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        raw = toml.loads(path.read_text())
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not valid TOML ({exc})") from exc
    return dict(raw.get("preprocess", raw))


def make_preprocess(spec: dict[str, Any] | str | None, model_input: InputSpec, where: str) -> ImagePreprocess:
    """Resolve a preprocessing spec (preset name, dict, or None = imagenet) against the model input."""
    if spec is None:
        spec = {"preset": "imagenet"}
    if isinstance(spec, str):
        spec = {"preset": spec}
    unknown = set(spec) - _KEYS
    if unknown:
        raise DataError(f"{where}: unknown preprocessing key(s) {', '.join(sorted(unknown))}",
                        hint=f"known keys: {', '.join(sorted(_KEYS))}")
    preset_name = str(spec.get("preset", "imagenet"))
    preset_name = PRESET_ALIASES.get(preset_name, preset_name)
    if preset_name not in PRESETS:
        raise DataError(f"{where}: unknown preprocessing preset '{preset_name}'",
                        hint=f"choose one of: {', '.join(PRESETS)}")
    merged = {**PRESETS[preset_name], **{k: v for k, v in spec.items() if k != "preset"}}
    shape = model_input.shape
    layout = str(merged.get("layout") or _guess_layout(shape)).lower()
    if layout not in ("nchw", "nhwc"):
        raise DataError(f"{where}: layout must be 'nchw' or 'nhwc', got '{layout}'")
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])
    crop = merged.get("crop")
    if crop is not None:
        ch, cw = (crop, crop) if isinstance(crop, int) else tuple(crop)
    else:
        ch, cw = h, w
    if not (isinstance(ch, int) and isinstance(cw, int) and ch > 0 and cw > 0):
        raise DataError(f"{where}: the model input {model_input.name}{tuple(shape)} has no fixed height/width",
                        hint="set crop = [H, W] in the preprocessing spec")
    for got, exp, axis in ((ch, h, "height"), (cw, w, "width")):
        if isinstance(exp, int) and exp > 0 and got != exp:
            raise DataError(f"{where}: crop {axis} {got} does not match the model input {tuple(shape)}")
    channels = c if isinstance(c, int) and c > 0 else 3
    if channels not in (1, 3):
        raise DataError(f"{where}: model input {model_input.name}{tuple(shape)} has {channels} channels; "
                        "images give 1 or 3", hint="check the layout (nchw/nhwc) or give a .npz")
    resize = merged.get("resize")
    if resize is None:
        resize = round(min(ch, cw) / float(merged.get("crop_ratio", 0.875)))
    order = str(merged.get("channel_order", "rgb")).lower()
    if order not in ("rgb", "bgr"):
        raise DataError(f"{where}: channel_order must be 'rgb' or 'bgr', got '{order}'")
    mean = tuple(float(v) for v in np.atleast_1d(merged.get("mean", [0.0])))
    std = tuple(float(v) for v in np.atleast_1d(merged.get("std", [1.0])))
    if channels == 1:
        mean, std = mean[:1], std[:1]
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or min(std) <= 0:
        raise DataError(f"{where}: mean/std need 1 or {channels} values (std > 0), got {mean} / {std}")
    if np.dtype(model_input.dtype) in (np.dtype(np.uint8), np.dtype(np.int8)):
        # the model normalizes inside: it takes pixels 0..255 (uint8) or pixel - 128 (int8)
        explicit = sorted({"scale", "mean", "std"} & set(spec))
        if explicit:
            raise DataError(f"{where}: model input {model_input.name} is {model_input.dtype}: it takes raw pixels, so "
                            f"{', '.join(explicit)} do not apply", hint="remove them from the preprocessing spec")
        offset = 128.0 if np.dtype(model_input.dtype) == np.dtype(np.int8) else 0.0
        return ImagePreprocess(ch, cw, channels, layout, int(resize), 1.0, (offset,), (1.0,), order,
                               np.dtype(model_input.dtype).name)
    dtype = model_input.dtype if np.dtype(model_input.dtype).kind == "f" else "float32"
    return ImagePreprocess(ch, cw, channels, layout, int(resize), float(merged.get("scale", 1 / 255)),
                           mean, std, order, dtype)

