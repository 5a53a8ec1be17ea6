"""The checks every command that reads an artifact (inspect, profile) runs before opening it, so a
missing, empty or incomplete file is one clear bad-input error (exit code 2) whatever the runtime
would have said about it (an empty .onnx loads as an empty graph; an .xml without its .bin gives a
multi-line OpenVINO trace)."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import ModelLoadError, UsageError

ARTIFACT_SUFFIXES = (".onnx", ".ort", ".xml", ".tflite")
_GIVE = "give the path of an .onnx, .ort, .xml or .tflite artifact"


def check_artifact_file(path: str | Path) -> Path:
    """`path` as a Path when it is a non-empty artifact file (with its .bin for OpenVINO), else ModelLoadError."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such file", hint=_GIVE)
    if p.is_dir():
        raise UsageError(f"{p}: is a folder, not an artifact file", hint=_GIVE)
    if p.suffix.lower() not in ARTIFACT_SUFFIXES:
        raise UsageError(f"{p}: unknown artifact type '{p.suffix}'",
                         hint=f"expected one of {', '.join(ARTIFACT_SUFFIXES)}")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: the file is empty", hint="re-run the conversion or build that wrote it")
    if p.suffix.lower() == ".xml":
        weights = p.with_suffix(".bin")
        if not weights.is_file() or weights.stat().st_size == 0:
            state = "missing" if not weights.exists() else "empty" if weights.is_file() else "not a file"
            raise ModelLoadError(f"{p}: its weights file {weights.name} is {state}",
                                 hint="an OpenVINO IR is an .xml and a .bin with the same stem; copy both")
    if p.suffix.lower() == ".onnx":
        for loc in _external_data(p):
            if not (p.parent / loc).is_file():
                raise ModelLoadError(f"{p}: its external data file '{loc}' is missing (looked in {p.parent})",
                                     hint="an ONNX model saved with external data needs its data files beside it; "
                                          "copy them too")
    return p


def _external_data(p: Path) -> list[str]:
    """The external data files an ONNX model names (none when the file does not parse: the loader says why)."""
    try:
        import onnx

        proto = onnx.load(str(p), load_external_data=False)
    except Exception:  # noqa: BLE001
        return []
    locs = {kv.value for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
            for kv in t.external_data if kv.key == "location"}
    return sorted(locs)
