"""Bounds for synthetic integer inputs of a profile run, read from the artifact itself (.onnx, .ort, .xml, .tflite).

A token-id input that indexes an embedding table must get ids inside the table, or the runtime fails on
the very first run (ONNX Runtime 'indices element out of data bounds', LiteRT 'gather index out of bounds')
or, OpenVINO, quietly gathers zeros: the profile would time a run the model never makes. ONNX files use
edgekit.data.id_bounds; the other formats are read here with their own libraries. Each reader lists, in any
order, the Gather-like ops (indices tensor, length of the axis it indexes) and the ops that pass ids through
unchanged (Cast, Reshape, ...); `walk` follows every integer input through them to the axes it indexes.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import NamedTuple


class Gather(NamedTuple):
    indices: Hashable
    length: int | None  # length of the indexed axis (None: not static)


class Carry(NamedTuple):
    source: Hashable
    outputs: tuple[Hashable, ...]


def walk(inputs: dict[str, Hashable], events: list[Gather | Carry]) -> dict[str, int]:
    """Input name -> exclusive bound: the smallest static axis the input's values index."""
    bounds: dict[str, int] = {}
    for name, tensor in inputs.items():
        carried, grew = {tensor}, True
        while grew:  # to a fixed point: the readers need not list the ops in graph order
            grew = False
            for ev in events:
                if isinstance(ev, Carry) and ev.source in carried and not carried.issuperset(ev.outputs):
                    carried.update(ev.outputs)
                    grew = True
        lengths = [ev.length for ev in events if isinstance(ev, Gather) and ev.indices in carried and ev.length]
        if lengths:
            bounds[name] = int(min(lengths))
    return bounds


def artifact_id_bounds(path: Path, names: list[str]) -> dict[str, int]:
    """Exclusive upper bounds for the integer inputs `names` of the artifact at `path` (empty when unknown)."""
    if not names:
        return {}
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        from edgekit.data.id_bounds import id_bounds

        return id_bounds(onnx_path=path, names=names)
    reader = {".ort": _ort_graph, ".xml": _openvino_graph, ".tflite": _tflite_graph}.get(suffix)
    if reader is None:
        return {}
    try:
        inputs, events = reader(Path(path))
    except Exception as exc:  # noqa: BLE001 - no bounds: ids stay small, as before
        from edgekit.progress import log

        log(f"profile: could not read {Path(path).name}'s index ops ({type(exc).__name__}: {exc})", verbose_only=True)
        return {}
    if not set(names) & set(inputs) and len(inputs) == len(names):  # renamed inputs (serving_default_x:0): by position
        inputs = dict(zip(names, inputs.values()))
    return walk({n: inputs[n] for n in names if n in inputs}, events)


# ONNX ops that move ids without changing them (the first input is the ids)
_ONNX_CARRY = ("Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Transpose", "Tile",
               "Slice", "Gather", "GatherElements")


def _ort_graph(path: Path) -> tuple[dict[str, Hashable], list[Gather | Carry]]:
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    graph = InferenceSession.InferenceSession.GetRootAs(path.read_bytes(), 0).Model().Graph()
    dims: dict[bytes, list[int | None]] = {}
    for i in range(graph.NodeArgsLength()):
        arg = graph.NodeArgs(i)
        shape = _ort_shape(arg)
        if shape is not None:
            dims[arg.Name()] = shape
    for i in range(graph.InitializersLength()):
        t = graph.Initializers(i)
        dims[t.Name()] = [int(d) for d in t.DimsAsNumpy()] if t.DimsLength() else []
    events: list[Gather | Carry] = []
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        op = node.OpType().decode()
        ins = [node.Inputs(j) for j in range(node.InputsLength())]
        outs = tuple(node.Outputs(j) for j in range(node.OutputsLength()))
        if op in ("Gather", "GatherElements") and len(ins) > 1:
            axis = next((node.Attributes(a).I() for a in range(node.AttributesLength())
                         if node.Attributes(a).Name() == b"axis"), 0)
            events.append(Gather(ins[1], _axis_length(dims.get(ins[0]), axis)))
        if op in _ONNX_CARRY and ins:
            events.append(Carry(ins[0], outs))
    inputs = [graph.Inputs(i) for i in range(graph.InputsLength())]
    return {n.decode(): n for n in inputs}, events


def _ort_shape(arg: object) -> list[int | None] | None:
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import TensorTypeAndShape, TypeInfoValue

    info = arg.Type()
    if info is None or info.ValueType() != TypeInfoValue.TypeInfoValue.tensor_type:
        return None
    tt = TensorTypeAndShape.TensorTypeAndShape()
    tt.Init(info.Value().Bytes, info.Value().Pos)
    shape = tt.Shape()
    if shape is None:
        return None
    out: list[int | None] = []
    for k in range(shape.DimLength()):
        value = shape.Dim(k).Value()
        out.append(int(value.DimValue()) if value is not None and value.DimValue() > 0 else None)
    return out


def _axis_length(shape: list[int | None] | None, axis: int) -> int | None:
    if not shape or not -len(shape) <= axis < len(shape):
        return None
    return shape[axis] or None


# TFLite ops that move ids without changing them (input 0 is the ids)
_TFLITE_CARRY = ("CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "TILE", "BROADCAST_TO", "SLICE",
                 "STRIDED_SLICE", "GATHER")


def _tflite_graph(path: Path) -> tuple[dict[str, Hashable], list[Gather | Carry]]:
    try:
        from ai_edge_litert import schema_py_generated as fb
    except ImportError:
        from tflite_runtime import schema_py_generated as fb  # type: ignore[no-redef]

    model = fb.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.subgraphs[0]

    def shape(t: int) -> list[int | None]:
        return [int(d) if d > 0 else None for d in (sg.tensors[t].shape if sg.tensors[t].shape is not None else [])]

    events: list[Gather | Carry] = []
    for op in sg.operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        ins = [int(t) for t in op.inputs]
        outs = tuple(int(t) for t in op.outputs if t >= 0)
        if kind == "GATHER" and len(ins) > 1 and ins[1] >= 0:
            axis = int(getattr(op.builtinOptions, "axis", 0) or 0)
            events.append(Gather(ins[1], _axis_length(shape(ins[0]), axis)))
        elif kind == "EMBEDDING_LOOKUP" and len(ins) > 1:  # inputs: ids, table
            events.append(Gather(ins[0], _axis_length(shape(ins[1]), 0)))
        if kind in _TFLITE_CARRY and ins and ins[0] >= 0:
            events.append(Carry(ins[0], outs))
    inputs = {}
    for t in sg.inputs:
        name = sg.tensors[t].name
        inputs[name.decode() if isinstance(name, bytes) else str(name)] = int(t)
    return inputs, events


# OpenVINO ops that move ids without changing them (input 0 is the ids)
_OV_CARRY = ("Convert", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Tile", "Broadcast", "Slice",
             "StridedSlice", "Gather")


def _openvino_graph(path: Path) -> tuple[dict[str, Hashable], list[Gather | Carry]]:
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def key(output: object) -> tuple[str, int]:
        return output.get_node().get_name(), output.get_index()

    events: list[Gather | Carry] = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        ins = [op.input_value(i) for i in range(op.get_input_size())]
        if kind == "Gather" and len(ins) > 2:
            axis_node = ins[2].get_node()
            data = ins[0].get_partial_shape()
            length = None
            if axis_node.get_type_name() == "Constant" and data.rank.is_static:
                axis = int(axis_node.get_data().reshape(-1)[0])
                dims = [d.get_length() if d.is_static else None for d in data]
                length = _axis_length(dims, axis)
            events.append(Gather(key(ins[1]), length))
        if kind in _OV_CARRY and ins:
            events.append(Carry(key(ins[0]), tuple(key(o) for o in op.outputs())))
    return {port.get_any_name(): key(port) for port in model.inputs}, events

