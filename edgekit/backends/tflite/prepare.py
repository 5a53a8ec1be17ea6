"""Turn the hub ONNX model into a static, folded graph the lowering walks once.

Passes, in order: fix input shapes (static batch 1 unless told otherwise), strip QDQ pairs into per-tensor
quantization annotations, fold constant subgraphs (including Shape of static tensors), fuse the erf-GELU
pattern, infer every tensor's static shape. Each pass returns a new `Graph`; the ONNX file is not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.backends.tflite.writer import Quant
from edgekit.errors import ModelLoadError, UnsupportedModelError, UsageError
from edgekit.onnx_shapes import infer_shapes as onnx_infer_shapes

FOLD_LIMIT = 1 << 24  # don't materialize constants with more elements than this


@dataclass
class Graph:
    nodes: list[onnx.NodeProto]
    consts: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, np.dtype] = field(default_factory=dict)
    act_quant: dict[str, Quant] = field(default_factory=dict)  # activation params, int8 domain
    weight_quant: dict[str, Quant] = field(default_factory=dict)  # params of DQ'd constants
    opset: int = 17
    notes: list[str] = field(default_factory=list)

    @property
    def quantized(self) -> bool:
        return bool(self.act_quant)


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_domains(g: Graph) -> None:
    """An op of another domain (com.microsoft's Attention, SkipLayerNormalization ... from ONNX Runtime's
    transformer optimizer) without a lowering is named before shape derivation, which cannot type its outputs."""
    from edgekit.backends.tflite.ops import OPS
    from edgekit.backends.tflite.ops.common import OTHER_TARGETS

    for n in g.nodes:
        if n.domain not in ("", "ai.onnx") and f"{n.domain}.{n.op_type}" not in OPS:
            raise UnsupportedModelError(f"op {n.domain}.{n.op_type} (node '{n.name or n.output[0]}') has no TFLite "
                                        "lowering", hint=f"{OTHER_TARGETS}; or convert the model as exported, "
                                        "before an optimizer fused it into runtime-specific ops")


def load_graph(onnx_path: Path, input_shapes: dict | None = None) -> Graph:
    from edgekit.onnx_size import PROTOBUF_LIMIT, file_tensor_bytes

    size = file_tensor_bytes(onnx_path)
    if size >= PROTOBUF_LIMIT:  # FlatBuffers' 32-bit offsets; the writer failed with 'Failed to serialize proto'
        raise UnsupportedModelError(f"TFLite: the model's weights take {size / 2**30:.2f} GB; a TFLite file holds at "
                                    "most 2 GB", hint="-t onnxruntime or -t openvino keep the weights in a file "
                                    "beside the model")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{onnx_path}: not a readable ONNX model: {exc}") from exc
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    model, notes = _fix_inputs(model, input_shapes or {})
    g = _to_graph(model, opset)
    g.notes.extend(notes)
    g = strip_qdq(g)
    _check_domains(g)
    for k in range(6):
        # each static round resolves one level of shape-dependent ops (a Shape of a Slice whose bounds came from a
        # Shape ...); a deeper chain (opset-13 chunk in every block) gets its remaining shapes from one run
        g = infer_shapes(g, allow_run=k >= 3)
        g, changed = fold_constants(g)
        if not changed:
            break
    g = fuse_gelu(g)
    g = infer_shapes(g)
    from edgekit.backends.tflite.decompose import decompose

    g, changed = decompose(g)
    if changed:
        g = infer_shapes(g)
    _check_static(g)
    from edgekit.backends.tflite.fuse_graph import fuse_matmul_bias, propagate_through_moves

    g = fuse_matmul_bias(g)
    g = propagate_through_moves(g)
    return g


# --- input shapes ----------------------------------------------------------------------------
def _fix_inputs(model: onnx.ModelProto, input_shapes: dict) -> tuple[onnx.ModelProto, list[str]]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    notes = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        given = input_shapes.get(inp.name)
        if given is not None:
            # an int fixes that axis; a str/None entry (a symbolic name such as "seq") leaves it dynamic
            given = tuple(int(d) if _is_dim(d) else None for d in given)
            if len(given) != len(dims):
                raise UsageError(
                    f"input_shapes['{inp.name}'] has rank {len(given)} but the model input has rank {len(dims)}"
                )
            for d, v in zip(dims, given):
                if v is not None:
                    d.ClearField("dim_param")
                    d.dim_value = v
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if i == 0:
                notes.append(f"input '{inp.name}': dynamic batch '{d.dim_param or '?'}' fixed to 1 (TFLite is static)")
                d.ClearField("dim_param")
                d.dim_value = 1
            else:
                shape = [x.dim_value if x.HasField("dim_value") else (x.dim_param or "?") for x in dims]
                example = "x".join(str(x) if isinstance(x, int) and x > 0 else ("1" if k == 0 else "N")
                                   for k, x in enumerate(shape))
                raise UsageError(
                    f"input '{inp.name}' has dynamic dimension {i} ('{d.dim_param or '?'}') in shape {shape}; "
                    "TFLite models have static shapes",
                    hint=f"fix it at conversion with --input-shape {inp.name}={example} (N = the size to build for; "
                    "inputs are then fed at exactly that shape, e.g. text padded to N tokens)",
                )
    return model, notes


def _is_dim(d) -> bool:
    return isinstance(d, (int, np.integer)) and int(d) > 0


def _to_graph(model: onnx.ModelProto, opset: int) -> Graph:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            a = n.attribute[0]
            if a.name == "value":
                consts[n.output[0]] = numpy_helper.to_array(a.t)
            else:
                consts[n.output[0]] = np.asarray(helper.get_attribute_value(a))
            continue
        nodes.append(n)
    inputs = [i.name for i in model.graph.input if i.name not in consts]
    g = Graph(nodes=nodes, consts=consts, inputs=inputs, outputs=[o.name for o in model.graph.output], opset=opset)
    for vi in list(model.graph.input) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            g.dtypes[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            g.shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    return g


def to_model(g: Graph, data: bool = True) -> onnx.ModelProto:
    """The graph as an ONNX model; data=False: large float constants carry their type and dims without their
    bytes (enough for shape inference, which reads no float weight: onnx_shapes.py)."""
    used = {i for n in g.nodes for i in n.input} | set(g.outputs)
    inits = [numpy_helper.from_array(np.asarray(v), k) if data or not _bulky(v) else _typed_only(k, np.asarray(v))
             for k, v in g.consts.items() if k in used]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(g.dtypes[n]), g.shapes[n]) for n in g.inputs]
    outputs = [helper.make_tensor_value_info(n, 0, None) for n in g.outputs]
    graph = helper.make_graph(g.nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset)], ir_version=8)


def _bulky(v: np.ndarray) -> bool:
    from edgekit.onnx_shapes import LIGHT_MIN_ELEMENTS

    return np.asarray(v).dtype.kind == "f" and np.size(v) >= LIGHT_MIN_ELEMENTS


def _typed_only(name: str, v: np.ndarray) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(v.dtype))
    t.dims.extend(v.shape)
    return t


# --- shape inference -------------------------------------------------------------------------
def infer_shapes(g: Graph, allow_run: bool = True) -> Graph:
    model = to_model(g, data=False)
    try:
        inferred = onnx_infer_shapes(model, keep_data=False, data_prop=True)  # shapes only (onnx_shapes.py)
    except Exception:  # noqa: BLE001 - fall back to what we have
        inferred = model
    shapes, dtypes = dict(g.shapes), dict(g.dtypes)
    for name, v in g.consts.items():
        shapes[name] = tuple(np.shape(v))
        dtypes[name] = np.asarray(v).dtype
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    missing = [o for n in g.nodes for o in n.output if o and o not in shapes]
    if missing and allow_run:
        shapes, dtypes = _run_for_shapes(g, shapes, dtypes, missing)
    g.shapes, g.dtypes = shapes, dtypes
    return g


def _run_for_shapes(g: Graph, shapes: dict, dtypes: dict, missing: list[str]) -> tuple[dict, dict]:
    """Shapes that static inference could not derive: run the graph once on zeros (shapes are static)."""
    import onnxruntime as ort

    model = to_model(g)
    if g.opset < 20 and any(n.op_type == "Gelu" and n.domain == "" and not n.attribute for n in model.graph.node):
        # fuse_gelu's node is ONNX Gelu-20; an older graph runs it as ONNX Runtime's Gelu (the same erf form)
        for n in model.graph.node:
            if n.op_type == "Gelu" and n.domain == "" and not n.attribute:
                n.domain = "com.microsoft"
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.graph.ClearField("output")
    for name in list(g.outputs) + missing:
        dt = dtypes.get(name, np.dtype(np.float32))
        model.graph.output.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dt), None))
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {n: np.zeros(g.shapes[n], dtype=g.dtypes[n]) for n in g.inputs}
        names = [o.name for o in sess.get_outputs()]
        for name, val in zip(names, sess.run(names, feeds)):
            shapes[name] = tuple(val.shape)
            dtypes[name] = val.dtype
    except Exception as exc:  # noqa: BLE001
        # ONNX Runtime fails on a graph this pass rebuilt without its value types (a Loop body reading an outer
        # initializer, sequence values): an op with no TFLite lowering is the problem to name, not the shapes
        from dataclasses import replace

        from edgekit.backends.tflite.converter import _check_supported
        from edgekit.backends.tflite.decompose import RULES

        _check_supported(replace(g, nodes=[n for n in g.nodes if n.op_type not in RULES]))
        raise UnsupportedModelError(
            f"could not derive static shapes for {missing[:5]}: {exc}",
            hint="pass static input_shapes for every dynamic input",
        ) from exc
    return shapes, dtypes


def _check_static(g: Graph) -> None:
    for n in g.nodes:
        for o in n.output:
            if o and o not in g.shapes:
                raise UnsupportedModelError(
                    f"tensor '{o}' of node '{n.name}' ({n.op_type}) has no static shape",
                    hint="TFLite needs static shapes; pass input_shapes",
                )


# --- QDQ -------------------------------------------------------------------------------------
def _qparams(g: Graph, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int, np.dtype]:
    scale = np.asarray(g.consts[node.input[1]], dtype=np.float32)
    if len(node.input) > 2 and node.input[2]:
        zp_arr = np.asarray(g.consts[node.input[2]])
    else:
        zp_arr = np.zeros_like(scale, dtype=np.asarray(g.consts[node.input[0]]).dtype if node.op_type == "DequantizeLinear" and node.input[0] in g.consts else np.uint8)  # absent zp: the quantized input's type (Q: uint8)
    axis = attrs(node).get("axis", 1)
    return scale, zp_arr, axis, zp_arr.dtype


def strip_qdq(g: Graph) -> Graph:
    """DQ(const) -> float constant + weight params; Q->DQ pairs on activations -> activation params."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop: set[int] = set()
    rename: dict[str, str] = {}
    consts = dict(g.consts)
    for n in g.nodes:
        if n.op_type != "DequantizeLinear" or n.input[0] not in consts:
            continue
        if not all(i in consts for i in n.input[1:] if i):
            continue
        scale, zp, axis, zdt = _qparams(g, n)
        q = np.asarray(consts[n.input[0]])
        axis = axis % max(q.ndim, 1)
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        value = (q.astype(np.float64) - zp.astype(np.float64).reshape(shape if zp.size > 1 else [])) * scale.reshape(
            shape if scale.size > 1 else []
        )
        consts[n.output[0]] = value.astype(np.float32)
        if q.dtype in (np.int8, np.uint8):
            shift = 128 if zdt == np.uint8 else 0
            g.weight_quant[n.output[0]] = Quant(scale, zp.astype(np.int64) - shift, axis if scale.size > 1 else 0)
        drop.add(id(n))
    for n in g.nodes:
        if n.op_type != "QuantizeLinear" or id(n) in drop:
            continue
        if not all(i in consts for i in n.input[1:] if i):
            continue
        users = consumers.get(n.output[0], [])
        if not users or any(u.op_type != "DequantizeLinear" for u in users) or n.output[0] in g.outputs:
            continue
        scale, zp, _, zdt = _qparams(g, n)
        if scale.size != 1:
            continue
        shift = 128 if zdt == np.uint8 else 0
        src = n.input[0]
        outs = [u.output[0] for u in users]
        canonical = next((o for o in outs if o in g.outputs), None)
        target = canonical or src
        if canonical is not None:
            rename[src] = canonical
        for o in outs:
            if o != target:
                rename[o] = target
        if np.isfinite(scale).all() and (scale > 0).all():
            g.act_quant[target] = Quant(scale.reshape(1), zp.reshape(1).astype(np.int64) - shift)
        else:  # a range reaching -inf (a -inf attention mask): no int8 grid holds it (LiteRT aborts on it); stays float
            g.notes.append(f"tensor '{target}': quantization scale {float(scale.reshape(-1)[0])} is not a finite "
                           "positive number; it stays float")
        drop.add(id(n))
        drop.update(id(u) for u in users)

    def r(name: str) -> str:
        seen = set()
        while name in rename and name not in seen:
            seen.add(name)
            name = rename[name]
        return name

    nodes = []
    for n in g.nodes:
        if id(n) in drop:
            continue
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.ClearField("input")
        m.input.extend(r(i) if i else i for i in n.input)
        m.ClearField("output")
        m.output.extend(r(o) if o else o for o in n.output)
        nodes.append(m)
    inputs = [r(i) for i in g.inputs]
    for i, orig in zip(inputs, g.inputs):
        if i != orig:
            g.shapes[i], g.dtypes[i] = g.shapes[orig], g.dtypes[orig]
    act = {r(k): v for k, v in g.act_quant.items()}
    out = Graph(nodes, consts, inputs, list(g.outputs), dict(g.shapes), dict(g.dtypes), act, g.weight_quant, g.opset, g.notes)
    return out


# --- constant folding ------------------------------------------------------------------------
_NEVER_FOLD = {"QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"}


def _eval_node(node: onnx.NodeProto, values: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [i for i in node.input]
    inputs = [helper.make_tensor_value_info(f"in{k}", 0, None) for k, n in enumerate(names) if n]
    m = onnx.NodeProto()
    m.CopyFrom(node)
    m.ClearField("input")
    m.input.extend(f"in{k}" if n else "" for k, n in enumerate(names))
    m.ClearField("output")
    m.output.extend(f"out{k}" if o else "" for k, o in enumerate(node.output))
    outs = [helper.make_tensor_value_info(f"out{k}", 0, None) for k, o in enumerate(node.output) if o]
    model = helper.make_model(helper.make_graph([m], "fold", inputs, outs), opset_imports=[helper.make_opsetid("", opset)])
    ev = ReferenceEvaluator(model)
    feeds = {f"in{k}": v for k, (n, v) in enumerate(zip(names, values)) if n}
    return ev.run(None, feeds)


def fold_constants(g: Graph) -> tuple[Graph, bool]:
    consts = dict(g.consts)
    nodes, changed = [], False
    for n in g.nodes:
        value: list[np.ndarray] | None = None
        if n.op_type == "Shape" and n.input[0] in g.shapes:
            shp = np.asarray(g.shapes[n.input[0]], dtype=np.int64)
            a = attrs(n)
            value = [shp[a.get("start", 0) : a.get("end", len(shp))]]
        elif n.op_type == "Size" and n.input[0] in g.shapes:
            value = [np.asarray(int(np.prod(g.shapes[n.input[0]])), dtype=np.int64)]
        elif n.op_type not in _NEVER_FOLD and n.domain in ("", "ai.onnx") and all(i in consts for i in n.input if i):
            out_size = sum(int(np.prod(g.shapes.get(o, (FOLD_LIMIT + 1,)))) for o in n.output if o)
            if out_size <= FOLD_LIMIT:
                value = _eval_node(n, [consts.get(i) if i else None for i in n.input], g.opset)
        if value is None:
            nodes.append(n)
            continue
        changed = True
        for o, v in zip([o for o in n.output if o], value):
            consts[o] = np.asarray(v)
            if o in g.weight_quant:
                del g.weight_quant[o]
    g2 = Graph(nodes, consts, g.inputs, g.outputs, g.shapes, g.dtypes, g.act_quant, g.weight_quant, g.opset, g.notes)
    return g2, changed


# --- fusions ---------------------------------------------------------------------------------
def _scalar(g: Graph, name: str) -> float | None:
    v = g.consts.get(name)
    if v is None or np.size(v) != 1:
        return None
    return float(np.asarray(v).reshape(()))


def fuse_gelu(g: Graph) -> Graph:
    """x * 0.5 * (1 + erf(x / sqrt(2))) in any of torch's exported orders -> one Gelu node."""
    producer = {o: n for n in g.nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only_user(name: str, op: str) -> onnx.NodeProto | None:
        us = consumers.get(name, [])
        return us[0] if len(us) == 1 and us[0].op_type == op and name not in g.outputs else None

    def other(node: onnx.NodeProto, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    remove: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    for erf in g.nodes:
        if erf.op_type != "Erf":
            continue
        pre = producer.get(erf.input[0])
        if pre is None or pre.op_type not in ("Div", "Mul"):
            continue
        c = _scalar(g, pre.input[1])
        if c is None:
            continue
        if not np.isclose(c if pre.op_type == "Div" else 1.0 / c, np.sqrt(2.0), rtol=1e-4):
            continue
        x = pre.input[0]
        add = only_user(erf.output[0], "Add")
        if add is None or _scalar(g, other(add, erf.output[0])) != 1.0:
            continue
        m1 = only_user(add.output[0], "Mul")
        if m1 is None:
            continue
        o1 = other(m1, add.output[0])
        if o1 == x:  # (x * (1+erf)) * 0.5
            m2 = only_user(m1.output[0], "Mul")
            if m2 is None or _scalar(g, other(m2, m1.output[0])) != 0.5:
                continue
            chain, out = [pre, erf, add, m1, m2], m2.output[0]
        else:  # (x * 0.5) * (1+erf)
            half = producer.get(o1)
            if half is None or half.op_type != "Mul" or x not in half.input or _scalar(g, other(half, x)) != 0.5:
                continue
            if len(consumers.get(half.output[0], [])) != 1:
                continue
            chain, out = [pre, erf, add, half, m1], m1.output[0]
        if len(consumers.get(pre.output[0], [])) != 1:
            continue
        gelu = helper.make_node("Gelu", [x], [out], name=(erf.name or out) + "/gelu")
        for n in chain:
            remove.add(id(n))
        replace[id(chain[-1])] = gelu
    if not remove:
        return g
    nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in remove or id(n) in replace]
    return Graph(nodes, g.consts, g.inputs, g.outputs, g.shapes, g.dtypes, g.act_quant, g.weight_quant, g.opset, g.notes)
