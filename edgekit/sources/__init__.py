"""Model sources: turn what the user names into a LoadedModel. One loader module per kind.

  file.onnx            edgekit.sources.onnx_file
  file.pt2             edgekit.sources.torch_files (torch.export program)
  file.pt / .ts        edgekit.sources.torch_files (TorchScript archive)
  pkg.module:fn        edgekit.sources.factory (+ --weights state_dict / .safetensors)
  zoo:NAME             edgekit.sources.zoo_source
Files are recognised by content (zip members, ONNX protobuf), not only by suffix.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import ModelLoadError, UsageError
from edgekit.sources.model import LoadedModel

__all__ = ["LoadedModel", "load_model", "parse_input_shapes", "classify_spec", "normalize_input_shapes"]

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def classify_spec(spec: str) -> str:
    """Which kind of source `spec` names: zoo | factory | onnx | pt2 | torchscript | pickle."""
    if spec.startswith("zoo:"):
        return "zoo"
    path = Path(spec)
    if not path.exists():
        if _FACTORY_RE.match(spec):
            return "factory"
        file, _, fn = spec.rpartition(":")
        if file.endswith(".py") and Path(file).is_file():  # models/net.py:build
            module = Path(file).with_suffix("").as_posix().replace("/", ".").lstrip(".")
            raise ModelLoadError(f"{spec}: a factory is named by its module, not its file",
                                 hint=f"give {module}:{fn} (run from the folder that holds it, or add that folder "
                                      "to PYTHONPATH)")
        raise ModelLoadError(f"model not found: {spec}",
                             hint="give an .onnx, .pt2, TorchScript file, pkg.module:fn or zoo:NAME (see `edgekit zoo`)")
    if path.is_dir():  # an exported folder (optimum, a model repo): name the model files inside
        inside = sorted(str(p) for ext in ("onnx", "pt2", "pt", "ts", "pth") for p in path.glob(f"*.{ext}"))
        raise ModelLoadError(f"{spec} is a folder, not a model file",
                             hint=f"give the model file inside it: {', '.join(inside[:4])}" if inside else
                             "give an .onnx, .pt2 or TorchScript file")
    from edgekit.sources.torch_files import zip_kind

    kind = zip_kind(path)
    if kind:
        return kind
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() in (".pt", ".pth", ".bin", ".ckpt", ".pkl"):
        return "onnx" if _is_onnx(path) else "pickle"  # an ONNX file saved as model.pt was 'a pickled model'
    return "onnx"  # let the ONNX parser give the precise error


def _is_onnx(path: Path) -> bool:
    """Whether `path` parses as an ONNX model with a graph (protobuf parsing runs no code, unlike unpickling)."""
    with open(path, "rb") as f:
        if f.read(1) in (b"\x80", b""):  # a pickle (protocol 2+) or nothing
            return False
    try:
        import onnx

        return len(onnx.load(str(path), load_external_data=False).graph.node) > 0
    except Exception:  # noqa: BLE001 - not ONNX
        return False


def load_model(spec: str, *, weights: Path | None = None,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> LoadedModel:
    kind = classify_spec(spec)
    if weights is not None and kind not in ("factory", "zoo"):
        raise UsageError("--weights applies to a Python factory (pkg.module:fn) or a zoo model",
                         hint=f"{spec} already holds its weights; drop --weights")
    if kind == "zoo":
        from edgekit.sources.zoo_source import load
        return load(spec[4:], weights=weights, input_shapes=input_shapes)
    if kind == "factory":
        from edgekit.sources.factory import load
        return load(spec, weights=weights, input_shapes=input_shapes)
    if kind == "onnx":
        from edgekit.sources.onnx_file import load
        return load(Path(spec), input_shapes=input_shapes)
    if kind == "pt2":
        from edgekit.sources.torch_files import load_exported
        return load_exported(Path(spec), input_shapes=input_shapes)
    if kind == "torchscript":
        from edgekit.sources.torch_files import load_torchscript
        return load_torchscript(Path(spec), input_shapes=input_shapes)
    raise ModelLoadError(
        f"{spec}: a pickled model is refused (unpickling can run arbitrary code)",
        hint="export it with torch.export.save (.pt2), torch.jit.save, or ONNX; or pass a factory "
             "pkg.module:fn with --weights state_dict.safetensors",
    )


class Shape(tuple):
    """An --input-shape: the dims, and the dtype when the user gave one (`ids=1x128:int64`)."""

    dtype: str | None = None

    def __new__(cls, dims, dtype: str | None = None):
        obj = super().__new__(cls, dims)
        obj.dtype = dtype
        return obj


INPUT_DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")


def parse_input_shapes(values: tuple[str, ...] | list[str]) -> dict[str, tuple[int, ...]]:
    """`name=1x3x224x224` (repeatable) or a bare `1x3x224x224` (key "" = the single input); a `:int64`
    suffix states the dtype (token ids of a torch model, whose inputs state none)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, _, rest = value.rpartition("=")
        dims, _, dtype = rest.partition(":")
        dtype = dtype.strip().lower() or None
        if dtype is not None and dtype not in INPUT_DTYPES:
            raise UsageError(f"bad --input-shape '{value}': unknown dtype '{dtype}'",
                             hint=f"use one of {', '.join(INPUT_DTYPES)}, e.g. input_ids=1x128:int64")
        try:
            shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise UsageError(f"bad --input-shape '{value}'",
                             hint="write name=1x3x224x224, or 1x3x224x224 for a single-input model") from None
        shapes[name.strip()] = Shape(shape, dtype)
    return shapes


def normalize_input_shapes(value) -> dict[str, tuple[int, ...]] | None:
    """input_shapes as the Python API takes them, in any form the CLI or edgekit.toml writes: {name: (1, 3, 224,
    224)}, {name: "1x128:int64"}, ["name=1x128:int64", ...], a bare "1x3x224x224" or (1, 3, 224, 224) for a
    single-input model. A string value was read as a sequence of characters (a shape of '1x16x16x16...') and a
    list of strings raised a bare ValueError."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_input_shapes([value])
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(d, int) for d in value):
            return parse_input_shapes(["x".join(map(str, value))])
        if all(isinstance(v, str) for v in value):
            return parse_input_shapes(list(value))
    elif isinstance(value, dict):
        out: dict[str, tuple[int, ...]] = {}
        for name, dims in value.items():
            if isinstance(dims, Shape):
                out[str(name)] = dims
            elif isinstance(dims, str):
                out.update(parse_input_shapes([f"{name}={dims}"]))
            elif isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims):
                out.update(parse_input_shapes([f"{name}={'x'.join(map(str, dims))}"]))
            else:
                raise UsageError(f"bad input_shapes entry {name!r}: {dims!r}",
                                 hint="give dims as a tuple of ints or a string such as '1x128:int64'")
        return out
    raise UsageError(f"bad input_shapes {value!r}",
                     hint="give {name: (1, 3, 224, 224)}, {name: '1x128:int64'} or ['name=1x3x224x224', ...]")
