"""ONNX Runtime backend: a basic-optimized, portable .onnx plus the .ort flatbuffer format."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import LoadOptions, TensorInfo, artifact_path
from edgekit.backends.diagnose import unsupported
from edgekit.errors import DeviceError
from edgekit.progress import warn

NAME = "onnxruntime"
SUFFIXES = (".onnx", ".ort")

_ORT_DT = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8",
           "tensor(int8)": "int8", "tensor(float16)": "float16", "tensor(bool)": "bool", "tensor(double)": "float64",
           "tensor(int16)": "int16", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64"}


def _session(path: Path, options: LoadOptions, level: str = "all", save_to: Path | None = None,
             save_format: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 4  # FATAL only: a failing run raises with its message; ORT also logged it in red
    if options.threads:
        so.intra_op_num_threads = int(options.threads)
        so.inter_op_num_threads = 1
    if options.extra.get("profile"):
        so.enable_profiling = True
        so.profile_file_prefix = str(options.extra.get("profile_prefix", "ort_profile"))
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
        if save_format:
            so.add_session_config_entry("session.save_model_format", save_format)
        elif _external_data(path):  # weights past protobuf's 2 GB: the artifact keeps them in <name>.data
            Path(str(save_to) + ".data").unlink(missing_ok=True)
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                        Path(save_to).name + ".data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    providers = _providers(options)
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc)
        if any(k in msg for k in ("NOT_IMPLEMENTED", "Could not find an implementation", "not a registered",
                                  "Exception during initialization")):  # a kernel refused the node's attributes
            raise unsupported("ONNX Runtime", path, msg) from exc
        raise


def _external_data(path: Path) -> bool:
    """Whether the ONNX file at `path` keeps tensors in external data files (a hub past protobuf's 2 GB)."""
    if Path(path).suffix != ".onnx":
        return False
    import onnx

    from edgekit.onnx_size import uses_external_data

    return uses_external_data(onnx.load(str(path), load_external_data=False))


def _providers(options: LoadOptions) -> list[str]:
    import onnxruntime as ort

    wanted = options.extra.get("providers") or ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    for p in wanted:
        if p not in available:
            raise DeviceError(f"ONNX Runtime execution provider '{p}' is not available here",
                              hint=f"available: {', '.join(available)}")
    return list(wanted)


def lower(onnx_path: Path, target: Any, out_stem: Path, options: dict[str, Any]) -> list[Path]:
    """Basic-level optimizations only (constant folding, redundant node removal): the saved graph stays
    portable across CPUs (level 'all' would bake in this host's NCHWc layouts); ORT applies the
    hardware-specific fusions when the artifact is loaded on the device."""
    out_onnx = artifact_path(out_stem, ".onnx")
    level = str(target.runtime.get("save_optimization", "basic"))
    untied = _share_tied_tables(onnx_path, out_onnx)
    try:
        _save(untied or onnx_path, out_onnx, level)
    finally:
        if untied:
            untied.unlink(missing_ok=True)
    files = [out_onnx] + [p for p in [Path(str(out_onnx) + ".data")] if p.exists()]
    if target.runtime.get("save_ort", False):
        out_ort = artifact_path(out_stem, ".ort")
        # ONNX Runtime does not re-run its level-2 fusions on an .ort it loads: an int8 .ort saved at 'basic'
        # ran Q/DQ around float Conv, 4.3x slower than the same .onnx (mnist_cnn int8, 0.355 vs 0.082 ms).
        # 'extended' bakes in the portable fusions (QDQ -> QLinearConv/QGemm, Conv+activation, GELU/LayerNorm)
        # and not level 3's host-specific layouts (x86 NCHWc), which ONNX Runtime adds when it loads the file.
        ort_level = str(target.runtime.get("ort_optimization", "extended"))
        try:
            _session(out_onnx, LoadOptions(), level=ort_level, save_to=out_ort, save_format="ORT")
            from edgekit.backends.ort_format import canonicalize_ort

            canonicalize_ort(out_ort)  # ONNX Runtime's own bytes vary from save to save
            files.append(out_ort)
        except Exception as exc:  # noqa: BLE001 - the .onnx beside it stays usable
            out_ort.unlink(missing_ok=True)
            warn(f"ONNX Runtime could not save the .ort format ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}); "
                 "the artifact is the .onnx alone")
    return files


def _save(src: Path, out_onnx: Path, level: str) -> None:
    _session(src, LoadOptions(), level=level, save_to=out_onnx)
    if not out_onnx.exists():  # pragma: no cover - ORT always writes it
        shutil.copyfile(src, out_onnx)
    elif level != "none" and not _reloads(out_onnx):
        # ORT bug: a saved graph can fail its own fusions on reload (MatMulAddFusion re-adds an initializer
        # name its first pass already wrote, e.g. with weights shared by repeated layers): ship it unoptimized
        warn(f"ONNX Runtime cannot reload its own {level}-optimized graph; the artifact keeps the graph "
             "unoptimized (ONNX Runtime optimizes it when loading)")
        _session(src, LoadOptions(), level="none", save_to=out_onnx)


def _share_tied_tables(onnx_path: Path, out_onnx: Path) -> Path | None:
    """A temporary copy of the graph whose tied embedding table is stored once (onnx_tied.py), else None."""
    if _external_data(onnx_path):
        return None
    import onnx

    from edgekit.backends.onnx_tied import share_tied_tables

    model = onnx.load(str(onnx_path))
    if not share_tied_tables(model):
        return None
    tmp = out_onnx.with_name(f".{out_onnx.name}.untied.onnx")
    onnx.save(model, str(tmp))
    return tmp


def _reloads(path: Path) -> bool:
    """Whether ONNX Runtime opens `path` with every optimization on, as an app loading the artifact does."""
    try:
        _session(path, LoadOptions(), level="all")
    except Exception:  # noqa: BLE001
        return False
    return True


class OrtSession:
    def __init__(self, path: Path, options: LoadOptions) -> None:
        self.path = path
        self.options = options
        self.sess = _session(path, options, level=str(options.extra.get("optimization", "all")))
        self.inputs = [TensorInfo(i.name, list(i.shape), _ORT_DT.get(i.type, i.type)) for i in self.sess.get_inputs()]
        self.outputs = [TensorInfo(o.name, list(o.shape), _ORT_DT.get(o.type, o.type)) for o in self.sess.get_outputs()]
        self.runtime = "onnxruntime"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sess.run(None, {i.name: np.asarray(feeds[i.name], dtype=i.dtype) for i in self.inputs})


def load(path: Path, options: LoadOptions | None = None) -> OrtSession:
    return OrtSession(Path(path), options or LoadOptions())


def version() -> str:
    import onnxruntime as ort

    return ort.__version__
