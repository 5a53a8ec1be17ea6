"""What app code needs to know about an artifact: I/O names, shapes, dtypes, layout and quantization.

`inspect_artifact(path)` reads any artifact edgekit writes (.onnx, .ort, OpenVINO .xml/.bin, .tflite)
without running it. One reader per format, registered in READERS. Each reader returns the graph-level
facts; the shared code adds file hashes and sizes. Runtimes are imported inside the readers, so this
module is cheap to import.

Layout is derived from the graph, not guessed from the shape: a rank-4 input feeding a convolution
(through casts / (de)quantize nodes) is in the format's native layout (NCHW for ONNX/OpenVINO, NHWC for
TFLite); one feeding a Transpose is in the layout that transpose turns into the native one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.callable_module import call_api
from edgekit.errors import ModelLoadError, UsageError
from edgekit.hashing import sha256_file  # noqa: F401 (re-exported)

_NP_DTYPES = {
    # OpenVINO element type names -> numpy names
    "f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "i8": "int8", "u8": "uint8",
    "i16": "int16", "u16": "uint16", "i32": "int32", "u32": "uint32", "i64": "int64", "u64": "uint64",
    "boolean": "bool",
}
_CONV_LIKE = {
    "onnx": {"Conv", "QLinearConv", "ConvInteger", "ConvTranspose", "MaxPool", "AveragePool",
             "GlobalAveragePool", "BatchNormalization", "Resize"},
    "openvino": {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MaxPool", "AvgPool"},
    "tflite": {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "MAX_POOL_2D", "AVERAGE_POOL_2D"},
}
_PASS_THROUGH = {
    "onnx": {"Cast", "QuantizeLinear", "DequantizeLinear", "Identity", "Relu", "Clip"},
    "openvino": {"Convert", "Subtract", "Multiply", "FakeQuantize", "Relu", "Clamp"},
    "tflite": {"QUANTIZE", "DEQUANTIZE", "CAST", "RELU", "RELU6"},
}
_NATIVE = {"onnx": "NCHW", "openvino": "NCHW", "tflite": "NHWC"}



def layout_from_transpose(fmt: str, perm: list[int], *, feeds_transpose: bool) -> str | None:
    """Layout of a rank-4 tensor joined to a native-layout tensor by a Transpose with `perm`.

    feeds_transpose: the tensor is the transpose's input (an graph input); else its output (a graph output).
    """
    native = _NATIVE[fmt]
    if sorted(perm) != [0, 1, 2, 3]:
        return None
    letters = [""] * 4
    for i, p in enumerate(perm):
        if feeds_transpose:
            letters[p] = native[i]  # out[i] = in[perm[i]] and out is native
        else:
            letters[i] = native[p]  # in is native
    return "".join(letters)


def _shape_guess(shape: list[Any]) -> str | None:
    """Last resort for rank-4 tensors not next to a conv or transpose: a small channel axis decides."""
    if len(shape) != 4:
        return None
    small = {1, 3, 4}
    c1, c3 = shape[1], shape[3]
    if isinstance(c1, int) and c1 in small and not (isinstance(c3, int) and c3 in small):
        return "NCHW"
    if isinstance(c3, int) and c3 in small and not (isinstance(c1, int) and c1 in small):
        return "NHWC"
    return None


# ----------------------------------------------------------------------------- ONNX


def _onnx_graph_facts(model: Any) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts: dict[str, Any] = {}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)

    def value(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return consts.get(name)

    consumers: dict[str, list[Any]] = {}
    producer: dict[str, Any] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        for o in n.output:
            producer[o] = n

    def perm_of(node: Any) -> list[int] | None:
        for a in node.attribute:
            if a.name == "perm":
                return list(a.ints)
        return None

    def walk(name: str, forward: bool, depth: int = 0) -> str | None:
        nodes = consumers.get(name, []) if forward else [producer[name]] if name in producer else []
        for n in nodes:
            if n.op_type in _CONV_LIKE["onnx"]:
                return _NATIVE["onnx"]
            if n.op_type == "Transpose" and (p := perm_of(n)) and len(p) == 4:
                return layout_from_transpose("onnx", p, feeds_transpose=forward)
            if n.op_type in _PASS_THROUGH["onnx"] and depth < 6:
                nxt = n.output[0] if forward else n.input[0]
                found = walk(nxt, forward, depth + 1)
                if found:
                    return found
        return None

    def quant(name: str, forward: bool) -> dict[str, Any] | None:
        nodes = consumers.get(name, []) if forward else [producer[name]] if name in producer else []
        for n in nodes:
            if n.op_type in ("DequantizeLinear", "QuantizeLinear") and len(n.input) >= 2:
                scale = value(n.input[1])
                zp = value(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                if scale is not None:
                    return {"scale": [float(s) for s in scale.reshape(-1)],
                            "zero_point": [int(z) for z in zp.reshape(-1)] if zp is not None else [0]}
        return None

    def tensor(vi: Any, forward: bool) -> dict[str, Any]:
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else "unknown"
        layout = walk(vi.name, forward) if len(shape) == 4 else None
        q = quant(vi.name, forward) if dtype in ("int8", "uint8", "int16", "uint16") else None
        return {"name": vi.name, "shape": shape, "dtype": dtype, "layout": layout or _shape_guess(shape),
                "quantization": q}

    ops: dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    precision = _onnx_precision(ops, {t.data_type for t in g.initializer})
    params = 0
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        params += n
    return {
        "precision": precision,
        "inputs": [tensor(vi, True) for vi in g.input if vi.name not in inits],
        "outputs": [tensor(vi, False) for vi in g.output],
        "ops": dict(sorted(ops.items())),
        "parameters": params,
        "metadata": {
            "ir_version": model.ir_version,
            "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            **{p.key: p.value for p in model.metadata_props},
        },
    }


def _read_onnx(path: Path) -> dict[str, Any]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds
        raise ModelLoadError(f"{path}: not a readable ONNX model ({exc})",
                             hint="check that the file is complete; re-run the build") from exc
    try:  # a damaged file can still parse (proto2 strings are not checked: a name comes back as bytes)
        facts = _onnx_graph_facts(model)
        data = sorted({t.external_data[0].value for t in model.graph.initializer
                       if t.data_location == onnx.TensorProto.EXTERNAL and t.external_data})
        facts["files"] = [path, *[path.parent / d for d in data]]
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: corrupt ONNX model ({type(exc).__name__}: {exc})",
                             hint="check that the file is complete; re-run the build") from exc
    facts["format"], facts["backend"] = "onnx", "onnxruntime"
    return facts


_ONNX_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                   "MatMulInteger", "QGemm", "DynamicQuantizeLinear"}


def _onnx_precision(ops: dict[str, int], initializer_types: set[int]) -> str:
    """int8 when quantization ops run, fp16 when the weights are all half, else fp32 (ONNX and .ort)."""
    if _ONNX_QUANT_OPS & set(ops):
        return "int8"
    float16, float32 = 10, 1  # onnx.TensorProto.FLOAT16 / FLOAT (the .ort schema uses the same numbers)
    return "fp16" if float16 in initializer_types and float32 not in initializer_types else "fp32"


def _ort_graph_ops(path: Path) -> tuple[dict[str, int], set[int]] | None:
    """Op counts and initializer types of an .ort file, read with the flatbuffer classes ONNX Runtime ships."""
    try:
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession
    except ImportError:  # pragma: no cover - an onnxruntime build without its tools
        return None
    graph = InferenceSession.InferenceSession.GetRootAsInferenceSession(path.read_bytes(), 0).Model().Graph()
    ops: dict[str, int] = {}
    for i in range(graph.NodesLength()):
        op = graph.Nodes(i).OpType().decode()
        ops[op] = ops.get(op, 0) + 1
    return ops, {graph.Initializers(i).DataType() for i in range(graph.InitializersLength())}


def _read_ort(path: Path) -> dict[str, Any]:
    """ORT flatbuffer format: only ONNX Runtime reads it, so ask a session (no graph walk)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: not a readable .ort model ({exc})") from exc

    def info(a: Any) -> dict[str, Any]:
        dtype = a.type.replace("tensor(", "").rstrip(")")
        dtype = {"float": "float32", "double": "float64", "float16": "float16"}.get(dtype, dtype)
        return {"name": a.name, "shape": list(a.shape), "dtype": dtype, "layout": _shape_guess(list(a.shape)),
                "quantization": None}

    meta = sess.get_modelmeta()
    ops, kinds = _ort_graph_ops(path) or ({}, set())  # the session loaded it: the flatbuffer is sound
    return {"format": "ort", "backend": "onnxruntime", "files": [path],
            "precision": _onnx_precision(ops, kinds) if ops else None,
            "inputs": [info(a) for a in sess.get_inputs()], "outputs": [info(a) for a in sess.get_outputs()],
            "ops": ops, "parameters": None,
            "metadata": {"producer": meta.producer_name, **dict(meta.custom_metadata_map)}}


# ----------------------------------------------------------------------------- OpenVINO


def _read_openvino(path: Path) -> dict[str, Any]:
    import openvino as ov

    bin_path = path.with_suffix(".bin")
    if not bin_path.is_file():
        raise ModelLoadError(f"{path}: the weights file {bin_path.name} is missing next to it",
                             hint="an OpenVINO IR is an .xml and a .bin with the same stem; copy both")
    try:
        model = ov.Core().read_model(str(path), str(bin_path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: not a readable OpenVINO IR ({exc})") from exc

    def const_values(node: Any):
        if node.get_type_name() == "Convert":
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            return node.get_data().reshape(-1)
        return None

    def walk(out: Any, forward: bool, depth: int = 0) -> str | None:
        nodes = [t.get_node() for t in out.get_target_inputs()] if forward else [out.get_node()]
        for n in nodes:
            kind = n.get_type_name()
            if kind in _CONV_LIKE["openvino"]:
                return _NATIVE["openvino"]
            if kind == "Transpose":
                perm = const_values(n.input_value(1).get_node())
                if perm is not None and len(perm) == 4:
                    return layout_from_transpose("openvino", [int(p) for p in perm], feeds_transpose=forward)
            if kind in _PASS_THROUGH["openvino"] and depth < 6:
                nxt = n.output(0) if forward else n.input_value(0)
                found = walk(nxt, forward, depth + 1)
                if found:
                    return found
        return None

    def quant(port: Any) -> dict[str, Any] | None:
        """Parameter(u8/i8) -> Convert -> [Subtract(zp)] -> Multiply(scale): the dequantize pattern."""
        for t in port.get_target_inputs():
            n = t.get_node()
            if n.get_type_name() != "Convert":
                continue
            zp, scale = [0], None
            for t2 in n.output(0).get_target_inputs():
                m = t2.get_node()
                if m.get_type_name() == "Subtract":
                    vals = const_values(m.input_value(1).get_node())
                    zp = [int(v) for v in vals] if vals is not None else zp
                    nxt = [t3.get_node() for t3 in m.output(0).get_target_inputs()]
                    m = next((x for x in nxt if x.get_type_name() == "Multiply"), None)
                if m is not None and m.get_type_name() == "Multiply":
                    vals = const_values(m.input_value(1).get_node())
                    scale = [float(v) for v in vals] if vals is not None else None
            if scale is not None:
                return {"scale": scale, "zero_point": zp}
        return None

    def tensor(port: Any, forward: bool) -> dict[str, Any]:
        ps = port.get_partial_shape()
        shape = [d.get_length() if d.is_static else None for d in ps] if ps.rank.is_static else []
        dtype = _NP_DTYPES.get(port.get_element_type().get_type_name(), port.get_element_type().get_type_name())
        layout = None
        try:
            lay = ov.layout_helpers.get_layout(port)
            layout = lay.to_string().strip("[]").replace(",", "") if not lay.empty else None
        except Exception:  # noqa: BLE001 - layout API differs between versions
            layout = None
        if not layout and len(shape) == 4:
            layout = walk(port, forward) or _shape_guess(shape)
        q = quant(port) if forward and dtype in ("int8", "uint8") else None
        names = port.get_names()
        name = port.get_any_name() if names else port.get_node().get_friendly_name()
        return {"name": name, "shape": shape, "dtype": dtype, "layout": layout or None, "quantization": q}

    ops: dict[str, int] = {}
    const_types: set[str] = set()
    params = 0
    for n in model.get_ordered_ops():
        kind = n.get_type_name()
        ops[kind] = ops.get(kind, 0) + 1
        if kind == "Constant":
            et = n.get_element_type().get_type_name()
            const_types.add(et)
            if et in ("f32", "f16", "i8", "u8", "bf16"):
                size = 1
                for d in n.get_output_shape(0):
                    size *= d
                params += size
    if "FakeQuantize" in ops or {"i8", "u8", "i4", "u4"} & const_types:
        precision = "int8"
    elif "f16" in const_types:
        precision = "fp16"
    else:
        precision = "fp32"
    rt: dict[str, Any] = {}
    try:
        for key in ("framework",):
            if model.has_rt_info(key):
                v = model.get_rt_info(key)
                v = getattr(v, "value", v)  # OVAny -> its Python value (a dict of framework facts)
                rt[key] = {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else str(v)
    except Exception:  # noqa: BLE001
        pass
    return {"format": "openvino", "backend": "openvino", "files": [path, bin_path], "precision": precision,
            "inputs": [tensor(p, True) for p in model.inputs],
            "outputs": [tensor(p, False) for p in model.outputs],
            "ops": dict(sorted(ops.items())), "parameters": params,
            "metadata": {"model_name": model.get_friendly_name(), **rt}}


# ----------------------------------------------------------------------------- TFLite


def _read_tflite(path: Path) -> dict[str, Any]:
    """Flatbuffer fields are read lazily: damage shows while the file is walked (an offset past the end, a
    negative count, a name that is not UTF-8), which is bad input, never an internal error."""
    try:
        return _tflite_facts(path)
    except (struct.error, IndexError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})",
                             hint="check that the file is complete; re-run the build") from exc


def _tflite_facts(path: Path) -> dict[str, Any]:
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TFLite flatbuffer (file identifier is not TFL3)",
                             hint="check that the file is complete; re-run the build")
    try:
        model = schema.Model.GetRootAs(buf, 0)
        sg = model.Subgraphs(0)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: corrupt TFLite flatbuffer ({exc})") from exc

    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    type_names.update({0: "float32", 1: "float16", 10: "float64"})
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def op_name(op: Any) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        b = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if b == schema.BuiltinOperator.CUSTOM:
            return (code.CustomCode() or b"CUSTOM").decode()
        return op_names.get(b, str(b))

    operators = [sg.Operators(i) for i in range(sg.OperatorsLength())]
    consumers: dict[int, list[Any]] = {}
    producer: dict[int, Any] = {}
    for op in operators:
        for t in op.InputsAsNumpy() if op.InputsLength() else []:
            consumers.setdefault(int(t), []).append(op)
        for t in op.OutputsAsNumpy() if op.OutputsLength() else []:
            producer[int(t)] = op

    def buffer_values(tidx: int):
        import numpy as np

        t = sg.Tensors(tidx)
        b = model.Buffers(t.Buffer())
        if b is None or b.DataLength() == 0:
            return None
        dt = {2: np.int32, 4: np.int64}.get(t.Type())
        return np.frombuffer(b.DataAsNumpy().tobytes(), dtype=dt) if dt else None

    def walk(tidx: int, forward: bool, depth: int = 0) -> str | None:
        nodes = consumers.get(tidx, []) if forward else [producer[tidx]] if tidx in producer else []
        for op in nodes:
            name = op_name(op)
            if name in _CONV_LIKE["tflite"]:
                return _NATIVE["tflite"]
            if name == "TRANSPOSE":
                perm = buffer_values(int(op.Inputs(1)))
                if perm is not None and len(perm) == 4:
                    return layout_from_transpose("tflite", [int(p) for p in perm], feeds_transpose=forward)
            if name in _PASS_THROUGH["tflite"] and depth < 6:
                nxt = int(op.Outputs(0)) if forward else int(op.Inputs(0))
                found = walk(nxt, forward, depth + 1)
                if found:
                    return found
        return None

    def tensor(tidx: int, forward: bool) -> dict[str, Any]:
        t = sg.Tensors(tidx)
        sig = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else None
        dims = t.ShapeAsNumpy() if t.ShapeLength() else []
        shape = [None if (sig is not None and int(s) < 0) else int(d)
                 for d, s in zip(dims, sig if sig is not None else dims, strict=False)]
        dtype = type_names.get(t.Type(), str(t.Type()))
        q = t.Quantization()
        quant = None
        if q is not None and q.ScaleLength():
            quant = {"scale": [float(s) for s in q.ScaleAsNumpy()],
                     "zero_point": [int(z) for z in q.ZeroPointAsNumpy()] if q.ZeroPointLength() else [0]}
            if q.QuantizedDimension():
                quant["quantized_dimension"] = int(q.QuantizedDimension())
        layout = walk(tidx, forward) if len(shape) == 4 else None
        return {"name": (t.Name() or b"").decode(), "shape": shape, "dtype": dtype,
                "layout": layout or _shape_guess(shape), "quantization": quant}

    ops: dict[str, int] = {}
    for op in operators:
        n = op_name(op)
        ops[n] = ops.get(n, 0) + 1
    weight_types: set[str] = set()
    params = 0
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        b = model.Buffers(t.Buffer())
        if b is not None and b.DataLength():
            weight_types.add(type_names.get(t.Type(), ""))
            n = 1
            for d in t.ShapeAsNumpy() if t.ShapeLength() else []:
                n *= int(d)
            params += n
    precision = "int8" if "int8" in weight_types else "fp16" if "float16" in weight_types else "fp32"
    meta: dict[str, Any] = {"schema_version": model.Version()}
    if model.Description():
        meta["description"] = model.Description().decode()
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        meta[f"metadata.{(m.Name() or b'').decode()}"] = f"buffer {m.Buffer()}"
    return {"format": "tflite", "backend": "tflite", "files": [path], "precision": precision,
            "inputs": [tensor(int(i), True) for i in sg.InputsAsNumpy()],
            "outputs": [tensor(int(i), False) for i in sg.OutputsAsNumpy()],
            "ops": dict(sorted(ops.items())), "parameters": params, "metadata": meta}


READERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    ".onnx": _read_onnx,
    ".ort": _read_ort,
    ".xml": _read_openvino,
    ".tflite": _read_tflite,
}


def inspect_artifact(path: str | Path, *, base: Path | None = None) -> dict[str, Any]:
    """Describe an artifact: format, files (sha256, size), precision, inputs, outputs, ops, metadata.

    Paths in the result are relative to `base` when given (the manifest's folder), else as given.
    """
    from edgekit.artifact_file import check_artifact_file

    p = check_artifact_file(path)  # missing, a folder, empty, an .xml without its .bin: exit code 2
    reader = READERS.get(p.suffix.lower())
    if reader is None:
        raise UsageError(f"{p}: unknown artifact type '{p.suffix}'",
                         hint=f"edgekit inspects {', '.join(READERS)} files")
    facts = reader(p)
    files = []
    for f in facts.pop("files"):
        rel = f.relative_to(base) if base is not None else f
        files.append({"path": str(rel), "size": f.stat().st_size, "sha256": sha256_file(f)})
    return {
        "path": str(p.relative_to(base) if base is not None else p),
        "format": facts.pop("format"),
        "backend": facts.pop("backend"),
        "sha256": files[0]["sha256"],
        "size_bytes": sum(f["size"] for f in files),
        "files": files,
        **facts,
    }


call_api(__name__, "inspect")  # `edgekit.inspect(...)` stays the api function once this module is imported
