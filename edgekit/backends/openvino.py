"""OpenVINO backend: IR .xml/.bin via openvino.save_model (fp32 weights unless the target asks for fp16).
A QDQ int8 hub graph becomes FakeQuantize and compiles to int8 kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import LoadOptions, TensorInfo, artifact_path
from edgekit.backends.diagnose import unsupported
from edgekit.errors import DeviceError, UnsupportedModelError

NAME = "openvino"
SUFFIXES = (".xml",)


def lower(onnx_path: Path, target: Any, out_stem: Path, options: dict[str, Any]) -> list[Path]:
    import onnx
    import openvino as ov

    from edgekit.backends.openvino_compat import frontend_input
    from edgekit.backends.openvino_rnn import lens_to_tensor_iterator, needs_tensor_iterator
    from edgekit.backends.openvino_size import compact_xml, reshape_weights, scalar_ranges, share_constants

    xml = artifact_path(out_stem, ".xml")
    raw = artifact_path(out_stem, ".raw.xml")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    same = [o.name for o in graph.output if o.name in {i.name for i in graph.input}]
    if same:  # the ONNX frontend turns such an output into a second input ('x_1'): a KeyError at run time
        raise UnsupportedModelError(f"OpenVINO: graph output '{same[0]}' is the graph input of that name, passed "
                                    "through; OpenVINO's ONNX frontend makes it a second input",
                                    hint="drop that output from the model (the caller has the input), or choose "
                                         "another target")
    with frontend_input(Path(onnx_path)) as src:  # nodes the ONNX frontend gets wrong, rewritten
        try:
            model = ov.convert_model(str(src))
        except Exception as exc:  # noqa: BLE001
            raise unsupported("OpenVINO", onnx_path, str(exc)) from exc
        if needs_tensor_iterator(onnx.load(str(onnx_path), load_external_data=False)):
            lens_to_tensor_iterator(model)  # the CPU plugin ignores sequence_lens at dynamic shapes
        scalar_ranges(model)
        reshape_weights(model)
        share_constants(model)
        half = options.get("precision") == "fp16" or bool(target.runtime.get("compress_to_fp16", False))
        ov.save_model(model, str(raw), compress_to_fp16=half)  # fp16: f16 weights, decompressed when compiled
    final = ov.Core().read_model(str(raw))  # as saved: constants folded, weights compressed if asked
    _layer_names(final)
    _stable_names(final)
    ov.serialize(final, str(xml), str(artifact_path(out_stem, ".bin")))
    compact_xml(xml)
    raw.unlink()
    artifact_path(out_stem, ".raw.bin").unlink()
    return [xml, artifact_path(out_stem, ".bin")]


AUTO_NAME = r"^([A-Za-z][A-Za-z0-9]*)_(\d+)(\.\d+|/tensor_iterator)?$"
BIASED = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")


def _layer_names(model) -> None:
    """The frontend names a Conv's convolution `<ONNX node>/WithoutBiases` and its bias Add `<ONNX node>`, but
    leaves a ConvTranspose's (and other biased ops') `<Type>_<counter>`: per-layer profiles then named a row
    no model layer has. Such an op feeding only a named bias Add takes the same `<Add>/WithoutBiases` name."""
    import re

    auto = re.compile(AUTO_NAME)
    for op in model.get_ordered_ops():
        if op.get_type_name() not in BIASED or not auto.match(op.get_friendly_name()):
            continue
        users = list(op.output(0).get_target_inputs())
        if len(users) == 1 and users[0].get_node().get_type_name() == "Add":
            name = users[0].get_node().get_friendly_name()
            if not auto.match(name):
                op.set_friendly_name(f"{name}/WithoutBiases")


def _stable_names(model, prefix: str = "") -> None:
    """OpenVINO names the nodes it creates `<Type>_<global counter>` (a folded output `<Type>_<n>.<port>`, a converted sequence `<Type>_<n>/tensor_iterator`), so a
    second conversion in one process writes different bytes. Renumber those names by graph order, inside
    TensorIterator / Loop / If bodies too: the same model gives the same IR."""
    import re

    auto = re.compile(AUTO_NAME)
    for index, op in enumerate(model.get_ordered_ops()):
        bodies = ([op.get_then_body(), op.get_else_body()] if hasattr(op, "get_then_body")
                  else [op.get_function()] if hasattr(op, "get_function") else [])
        for k, body in enumerate(bodies):
            _stable_names(body, f"{prefix}{index}.{k}.")
        if not prefix and op.get_type_name() in ("Parameter", "Result"):
            continue  # their names are the model's I/O
        m = auto.match(op.get_friendly_name())
        if m:
            op.set_friendly_name(f"{m.group(1)}_{prefix}{index}{m.group(3) or ''}")


class OvSession:
    def __init__(self, path: Path, options: LoadOptions) -> None:
        import openvino as ov

        core = ov.Core()
        device = options.device or "CPU"
        available = core.available_devices
        if device.split(".")[0] not in {d.split(".")[0] for d in available} and not device.startswith(("AUTO", "HETERO", "MULTI")):
            raise DeviceError(f"OpenVINO device '{device}' is not available here",
                              hint=f"available: {', '.join(available)}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if options.threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(options.threads)
        if device == "CPU":
            config["INFERENCE_PRECISION_HINT"] = "f32"  # no silent bf16 on AMX hosts; int8 FQ stays int8
        if options.extra.get("profile"):
            config["PERF_COUNT"] = True
        config.update(options.extra.get("ov_config", {}))
        self.model = core.read_model(str(path))
        self.compiled = core.compile_model(self.model, device, config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [TensorInfo(_port_name(p), _shape(p), p.get_element_type().to_dtype().name)
                       for p in self.compiled.inputs]
        self._aliases = [sorted(p.get_names()) for p in self.compiled.inputs]
        self.outputs = [TensorInfo(p.get_any_name(), _shape(p), p.get_element_type().to_dtype().name)
                        for p in self.compiled.outputs]
        self.runtime = "openvino"
        self.device = device

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        data = {}
        for k, (info, names) in enumerate(zip(self.inputs, self._aliases)):
            key = info.name if info.name in feeds else next((n for n in names if n in feeds), info.name)
            data[k] = np.asarray(feeds[key], dtype=info.dtype)
        res = self.request.infer(data)
        return [np.array(res[o]) for o in self.compiled.outputs]


def _port_name(port) -> str:
    """The ONNX input's own name: a port can carry several tensor names (an input Cast folded into it adds
    the Cast's output name), and get_any_name() may return that one."""
    names = port.get_names()
    try:
        own = port.get_node().get_friendly_name()
    except Exception:  # noqa: BLE001 - compiled-model ports of some plugins have no node
        own = None
    return own if own in names else port.get_any_name()


def _shape(port) -> list[int | str | None]:
    ps = port.get_partial_shape()
    return [d.get_length() if d.is_static else None for d in ps]


def load(path: Path, options: LoadOptions | None = None) -> OvSession:
    return OvSession(Path(path), options or LoadOptions())


def version() -> str:
    import openvino as ov

    return ov.get_version()
