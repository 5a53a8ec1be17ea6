"""ONNX files (with external data too)."""

from __future__ import annotations

from pathlib import Path

from edgekit.data import InputSpec
from edgekit.errors import ModelLoadError
from edgekit.hashing import sha256_file as file_sha256
from edgekit.onnx_size import uses_external_data
from edgekit.sources.model import LoadedModel
from edgekit.sources.shapes import apply_overrides

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
           10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}



def read_onnx(path: Path):
    """onnx.ModelProto of the graph (external data left on disk: the checker reads the file itself, so a model over
    protobuf's 2 GB limit is checked too; it was 'invalid ONNX model: Failed to serialize proto'); ModelLoadError
    with the reason otherwise."""
    import onnx

    if not path.is_file():
        raise ModelLoadError(f"model not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: the file is empty", hint="re-export the model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelLoadError(f"{path}: not a valid ONNX file ({type(exc).__name__}: {exc})",
                             hint="the file is corrupt or truncated; re-export it") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{path}: not a valid ONNX model (the graph has no nodes)",
                             hint="the file is corrupt, truncated or not ONNX; re-export it")
    moved = topo_sort(model)
    try:  # with external data, the file itself (the checker then finds the data files beside it)
        onnx.checker.check_model(str(path) if uses_external_data(model) else model)
        _check_external_lengths(model, path)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0]
        data = _external_data_error(path, exc)
        if data is not None:
            raise data from exc
        if moved and "topologically sorted" in first:
            return model  # the file's node order, which topo_sort fixed in `model`
        if "Field 'shape' of 'type' is required" in first and _shapeless(model):
            return model  # inputs/outputs without any shape: the runtimes take them; load() asks --input-shape
        if "is deprecated in domain_version" not in first:
            raise ModelLoadError(f"{path}: invalid ONNX model: {first}", hint="re-export the model") from exc
        # an op version later withdrawn (GroupNormalization-18) is still a valid model the runtimes run
        from edgekit.progress import warn

        warn(f"{path.name}: {first} (converting it as it is)")
    return model


def _check_external_lengths(model, path: Path) -> None:
    """Every external tensor's bytes lie inside its data file: a truncated copy (an interrupted download) was an
    internal error when the hub loaded it ('External data length (432) exceeds available data', exit 1)."""
    from onnx import TensorProto

    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        data = path.parent / info.get("location", "")
        if not info.get("length") or not data.is_file():
            continue
        end, size = int(info.get("offset") or 0) + int(info["length"]), data.stat().st_size
        if end > size:
            raise ModelLoadError(f"{path}: its external data file {info['location']} is truncated (tensor '{t.name}' "
                                 f"ends at byte {end}, the file has {size})", hint="copy the data file again")


def _external_data_error(path: Path, exc: Exception) -> ModelLoadError | None:
    """The checker's complaint about external data as the user's problem: a missing data file, or one outside the
    model's folder (onnx reads none there: a safety rule, not corruption)."""
    import re

    gone = re.search(r"should be stored in (.+?), but it is not regular file", str(exc))
    if gone:
        return ModelLoadError(f"{path}: its external data file is missing ({gone.group(1)})",
                              hint="keep the .onnx.data/.bin file next to the .onnx")
    outside = re.search(r"but '(.+?)' points outside the directory", str(exc))
    if outside:
        return ModelLoadError(f"{path}: its external data '{outside.group(1)}' lies outside the model's folder, where "
                              "ONNX refuses to read", hint="keep the data file in the model's folder (or a subfolder) "
                              "and save the model with that location")
    return None


def topo_sort(model) -> bool:
    """Reorder the graph's nodes so that each follows the producers of its inputs (some converters, e.g. a
    float16 conversion that keeps float32 inputs, write them out of order; ONNX Runtime accepts that, the
    ONNX checker does not). Returns whether anything moved; nodes whose inputs never appear keep their order
    at the end (the checker then names them)."""
    g = model.graph
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            ordered.extend(rest)
            break
        pending = rest
    if [id(n) for n in ordered] == [id(n) for n in g.node]:
        return False
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
    return True


def unique_node_names(model) -> int:
    """Rename nodes whose name another node of the graph already has (`name_1`, ...; some exporters and hand-made
    graphs repeat them): ONNX Runtime refuses such a model ('two nodes with same node name'), the ONNX checker
    does not. Unnamed nodes stay unnamed. Returns how many were renamed."""
    seen = {n.name for n in model.graph.node}
    taken: set[str] = set()
    renamed = 0
    for node in model.graph.node:
        if not node.name:
            continue
        if node.name in taken:
            k = 1
            while f"{node.name}_{k}" in seen:
                k += 1
            node.name = f"{node.name}_{k}"
            seen.add(node.name)
            renamed += 1
        taken.add(node.name)
    return renamed


def inline_functions(model):
    """The model with its model-local functions (FunctionProto: onnxscript and torch's dynamo exporter write them,
    and custom-domain ops defined in the file) replaced by their bodies. ONNX Runtime runs such a call; OpenVINO
    and the TFLite backend saw an unknown operator ('unsupported operator Swishy', exit 4). Unchanged when the model
    has none or the inliner fails."""
    if not model.functions:
        return model
    try:
        from onnx.inliner import inline_local_functions

        return inline_local_functions(model, convert_version=True)
    except Exception as exc:  # noqa: BLE001
        from edgekit.progress import log

        log(f"model-local functions kept as calls (the ONNX inliner failed: {exc})", verbose_only=True)
        return model


def _shapeless(model) -> list[str]:
    """Graph inputs/outputs whose tensor type has no shape field at all (rank unknown)."""
    inits = {i.name for i in model.graph.initializer}
    return [v.name for v in [*model.graph.input, *model.graph.output]
            if v.name not in inits and v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]


def fill_input_shapes(model, inputs: list[InputSpec]) -> int:
    """Write the shapes edgekit runs with (--input-shape) into graph inputs that have none in the file: OpenVINO's
    CPU plugin refuses an input of unknown rank. Dims the file leaves unnamed get the spec's ('batch' for a leading
    one, so the artifact names the axis as the JSON does). Returns how many inputs changed."""
    specs = {s.name: s for s in inputs}
    filled = 0
    for vi in model.graph.input:
        spec = specs.get(vi.name)
        if spec is None or not vi.type.HasField("tensor_type"):
            continue
        if vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            blank = [(dim, d) for dim, d in zip(dims, spec.shape) if len(dims) == len(spec.shape)
                     and not dim.dim_value and not dim.dim_param and isinstance(d, str)]  # dim_value 0 = unknown too
            for dim, d in blank:
                dim.dim_param = d  # (clears a dim_value 0, which ONNX Runtime took as a fixed size 0)
            filled += bool(blank)
            continue
        shape = vi.type.tensor_type.shape
        shape.SetInParent()
        for d in spec.shape:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
        filled += 1
    return filled


def graph_inputs(model) -> list[InputSpec]:
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(None)
        specs.append(InputSpec(vi.name, tuple(dims), _DTYPES.get(tt.elem_type, "float32")))
    return specs


def _check_input_types(model, path: Path) -> None:
    """Inputs edgekit can feed are numeric tensors: a string input (an in-graph tokenizer or label encoder), a
    bfloat16 one, or a sequence/map were read as float32 and the run ended in an internal error ("data type
    'tensor(string)' not understood", exit 1)."""
    from onnx import TensorProto

    from edgekit.errors import UnsupportedModelError

    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        kind = vi.type.WhichOneof("value")
        if kind not in (None, "tensor_type"):
            what = f"a {kind.replace('_type', '')}"
        elif vi.type.tensor_type.elem_type in _DTYPES or not vi.type.tensor_type.elem_type:
            continue
        else:
            what = f"a {TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()} tensor"
        raise UnsupportedModelError(f"{path}: input '{vi.name}' is {what}; edgekit feeds numeric tensors (float, int, "
                                    "bool)", hint="keep text processing (tokenizer, label encoding) outside the model "
                                                  "and feed its ids, or cast the input to float32 in the graph")


def guess_task(model) -> str:
    outs = model.graph.output
    if len(outs) == 1:
        dims = outs[0].type.tensor_type.shape.dim
        if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value > 1:
            return "classification"
    return "generic"


def load(path: Path, *, input_shapes: dict[str, tuple[int, ...]] | None = None) -> LoadedModel:
    model = read_onnx(path)
    no_rank = [n for n in _shapeless(model) if n in {i.name for i in model.graph.input}]
    missing = [n for n in no_rank if n not in (input_shapes or {}) and not ("" in (input_shapes or {}) and
                                                                              len(model.graph.input) == 1)]
    if missing:
        raise ModelLoadError(f"{path}: input '{missing[0]}' has no shape in the file (not even its rank)",
                             hint=f"give --input-shape {missing[0]}=1x3x224x224 (its full shape)")
    # a leading dim the file leaves unnamed (no dim_param, no dim_value) is a dynamic batch axis, as a named one is
    inputs = [InputSpec(s.name, ("batch", *s.shape[1:]), s.dtype) if s.shape and s.shape[0] is None else s
              for s in graph_inputs(model)]
    _check_input_types(model, path)
    inputs = apply_overrides(inputs, input_shapes, str(path))
    for spec in inputs:
        if any(d is None for d in spec.shape):
            unknown = [str(ax) for ax, d in enumerate(spec.shape) if d is None]
            example = "x".join("N" if d is None else "1" if isinstance(d, str) else str(d) for d in spec.shape)
            raise ModelLoadError(f"{path}: input '{spec.name}' has unknown dims {spec.shape} (axis "
                                 f"{', '.join(unknown)}: neither sized nor named in the file)",
                                 hint=f"give --input-shape {spec.name}={example} (N: your model's sizes)")
    return LoadedModel(
        name=path.stem, kind="onnx", inputs=inputs, output_names=[o.name for o in model.graph.output],
        task=guess_task(model), onnx_path=path, source_bytes_sha256=file_sha256(path),
        meta={"opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)},
    )
