"""Run a .tflite artifact in LiteRT: NCHW float feeds in, float ONNX-layout outputs back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import LoadOptions, TensorInfo
from edgekit.backends.tflite.writer import read_metadata, read_model
from edgekit.errors import MissingDependencyError, ModelLoadError
from edgekit.native_output import quiet_info


def _interpreter_module() -> Any:
    try:
        from ai_edge_litert import interpreter

        return interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter  # type: ignore[import-not-found]

            return interpreter
        except ImportError as exc:
            raise MissingDependencyError("running .tflite files needs LiteRT", hint="pip install ai-edge-litert") from exc


class TFLiteSession:
    def __init__(self, path: Path, options: LoadOptions | None = None) -> None:
        options = options or LoadOptions()
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such .tflite file")
        data = path.read_bytes()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelLoadError(f"{path}: not a TFLite flatbuffer (missing the TFL3 identifier)")
        mod = _interpreter_module()
        extra = dict(options.extra or {})
        kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": options.threads}
        if not extra.get("xnnpack", True):
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if extra.get("delegate"):
            kwargs["experimental_delegates"] = [mod.load_delegate(str(extra["delegate"]))]
        try:
            with quiet_info():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" line, per session
                self.interpreter = mod.Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path}: LiteRT could not load the model: {exc}") from exc
        meta = read_metadata(read_model(data))
        by_name = {e["name"]: e for e in meta.get("inputs", []) + meta.get("outputs", [])}
        runner = self.interpreter.get_signature_runner("serving_default")
        self._in = self._details(runner.get_input_details(), by_name)
        self._out = self._details(runner.get_output_details(), by_name)
        order_in = [e["name"] for e in meta.get("inputs", [])] or list(self._in)
        order_out = [e["name"] for e in meta.get("outputs", [])] or list(self._out)
        self._in_order, self._out_order = order_in, order_out
        self.inputs = [self._info(n, self._in[n]) for n in order_in]
        self.outputs = [self._info(n, self._out[n]) for n in order_out]
        self.metadata = meta

    @staticmethod
    def _details(details: dict, by_name: dict) -> dict:
        out = {}
        for name, d in details.items():
            e = by_name.get(name, {})
            perm = tuple(e.get("perm", range(len(d["shape"]))))
            scale, zp = d["quantization"]
            out[name] = {"index": d["index"], "dtype": np.dtype(d["dtype"]), "perm": perm, "scale": scale, "zp": zp,
                         "onnx_shape": e.get("onnx_shape", list(d["shape"])), "onnx_dtype": e.get("onnx_dtype")}
        return out

    @staticmethod
    def _info(name: str, d: dict) -> TensorInfo:
        rank = len(d["perm"])
        layout = "NHWC" if rank == 4 and tuple(d["perm"]) == (0, 2, 3, 1) else ("NCHW" if rank == 4 else None)
        q = {"scale": [d["scale"]], "zero_point": [d["zp"]]} if d["dtype"] == np.int8 and d["scale"] else None
        return TensorInfo(name, list(d["onnx_shape"]), d["onnx_dtype"] or d["dtype"].name, layout, q)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference. A batch larger than the artifact's static batch of 1 runs sample by sample."""
        first = self._in[self._in_order[0]] if self._in_order else None
        if first is not None and self._in_order[0] in feeds:
            x = np.asarray(feeds[self._in_order[0]])
            want = tuple(first["onnx_shape"])
            if want and want[0] == 1 and x.ndim == len(want) and x.shape[0] > 1 and tuple(x.shape[1:]) == want[1:]:
                parts = [self._run({k: np.asarray(v)[i : i + 1] for k, v in feeds.items()}) for i in range(x.shape[0])]
                return [np.concatenate(p, axis=0) for p in zip(*parts)]
        return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        interp = self.interpreter
        for name in self._in_order:
            if name not in feeds:
                from edgekit.errors import DataError

                raise DataError(f"missing input '{name}'", hint=f"inputs: {', '.join(self._in_order)}")
            d = self._in[name]
            x = np.asarray(feeds[name])
            if tuple(x.shape) != tuple(d["onnx_shape"]):
                from edgekit.errors import DataError

                raise DataError(f"input '{name}' has shape {tuple(x.shape)}, the .tflite model takes {tuple(d['onnx_shape'])}")
            x = np.transpose(x, d["perm"])
            if d["dtype"] == np.int8 and d["scale"]:
                x = np.clip(np.round(x.astype(np.float32) / d["scale"]) + d["zp"], -128, 127)
            interp.set_tensor(d["index"], np.array(x, dtype=d["dtype"], order="C"))
        interp.invoke()
        outs = []
        for name in self._out_order:
            d = self._out[name]
            y = interp.get_tensor(d["index"])
            if d["dtype"] == np.int8 and d["scale"]:
                y = (y.astype(np.float32) - d["zp"]) * d["scale"]
            inv = np.argsort(d["perm"])
            outs.append(np.array(np.transpose(y, inv), order="C"))
        return outs
