"""Build a .tflite flatbuffer with the schema's object API (schema v3, identifier TFL3).

Buffer 0 is the empty sentinel, constant data is 16-byte aligned and deduplicated, a `serving_default`
signature maps the model's I/O names to tensors. The same calls give the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

_TYPES = {
    np.dtype("float32"): fb.TensorType.FLOAT32,
    np.dtype("float16"): fb.TensorType.FLOAT16,
    np.dtype("int32"): fb.TensorType.INT32,
    np.dtype("int64"): fb.TensorType.INT64,
    np.dtype("int16"): fb.TensorType.INT16,
    np.dtype("int8"): fb.TensorType.INT8,
    np.dtype("uint8"): fb.TensorType.UINT8,
    np.dtype("bool"): fb.TensorType.BOOL,
}
_CODES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
ALIGN = 16


def tensor_type(dtype: np.dtype) -> int:
    dt = np.dtype(dtype)
    if dt not in _TYPES:  # a uint16 input: was a TypeError, an internal error (exit 1)
        from edgekit.errors import UnsupportedModelError

        raise UnsupportedModelError(f"TFLite: a {dt} tensor is not supported by edgekit's TFLite backend",
                                    hint=f"cast it in the model (to {', '.join(str(t) for t in _TYPES)}), or choose "
                                         "-t onnxruntime / -t openvino")
    return _TYPES[dt]


def op_name(code: int) -> str:
    return _CODES.get(code, str(code))


class _AlignedBuffer(fb.BufferT):
    """A BufferT whose data vector starts on a 16-byte boundary."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.raw = data

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - flatbuffers API name
        n = len(self.raw)
        builder.StartVector(1, n, ALIGN)
        builder.head -= n
        builder.Bytes[builder.head : builder.head + n] = self.raw
        vec = builder.EndVector(n)
        fb.BufferStart(builder)
        fb.BufferAddData(builder, vec)
        return fb.BufferEnd(builder)


class Quant:
    """Affine quantization parameters of one tensor (per-tensor or per-axis)."""

    __slots__ = ("scale", "zero_point", "axis")

    def __init__(self, scale: Any, zero_point: Any, axis: int = 0) -> None:
        self.scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
        if self.zero_point.size == 1 and self.scale.size > 1:
            self.zero_point = np.repeat(self.zero_point, self.scale.size)
        self.axis = int(axis)

    def key(self) -> tuple:
        return (tuple(self.scale.tolist()), tuple(self.zero_point.tolist()), self.axis)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quant) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"Quant(scale={self.scale.tolist()[:4]}, zp={self.zero_point.tolist()[:4]}, axis={self.axis})"


class ModelWriter:
    def __init__(self, description: str = "edgekit") -> None:
        self.description = description
        self.tensors: list[fb.TensorT] = []
        self.operators: list[fb.OperatorT] = []
        self.op_codes: list[tuple[int, int]] = []
        self._op_code_index: dict[tuple[int, int], int] = {}
        self.buffers: list[bytes | None] = [None]
        self._buffer_index: dict[bytes, int] = {}
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.signature_inputs: list[tuple[str, int]] = []
        self.signature_outputs: list[tuple[str, int]] = []
        self.metadata: dict[str, bytes] = {}

    # --- tensors -----------------------------------------------------------------------------
    def _buffer(self, data: bytes) -> int:
        idx = self._buffer_index.get(data)
        if idx is None:
            idx = len(self.buffers)
            self.buffers.append(data)
            self._buffer_index[data] = idx
        return idx

    def tensor(
        self,
        name: str,
        shape: tuple[int, ...] | list[int],
        dtype: Any,
        data: np.ndarray | None = None,
        quant: Quant | None = None,
    ) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = np.asarray(list(shape), dtype=np.int32)
        t.type = tensor_type(dtype)
        t.buffer = 0
        if data is not None:
            arr = np.asarray(data, dtype=dtype, order="C")
            if tuple(arr.shape) != tuple(shape):
                raise ValueError(f"constant {name}: data shape {arr.shape} != {tuple(shape)}")
            t.buffer = self._buffer(arr.tobytes())
        if quant is not None:
            q = fb.QuantizationParametersT()
            q.scale = quant.scale.astype(np.float32)
            q.zeroPoint = quant.zero_point.astype(np.int64)
            q.quantizedDimension = quant.axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def shape_of(self, idx: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[idx].shape)

    # --- operators ---------------------------------------------------------------------------
    def op(
        self,
        name: str,
        inputs: list[int],
        outputs: list[int],
        options: str | None = None,
        version: int = 1,
        **fields: Any,
    ) -> fb.OperatorT:
        code = getattr(fb.BuiltinOperator, name)
        key = (code, version)
        if key not in self._op_code_index:
            self._op_code_index[key] = len(self.op_codes)
            self.op_codes.append(key)
        o = fb.OperatorT()
        o.opcodeIndex = self._op_code_index[key]
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray(outputs, dtype=np.int32)
        if options is not None:
            opt = getattr(fb, options + "T")()
            for k, v in fields.items():
                if not hasattr(opt, k):
                    raise AttributeError(f"{options} has no field {k}")
                setattr(opt, k, v)
            o.builtinOptionsType = getattr(fb.BuiltinOptions, options)
            o.builtinOptions = opt
        self.operators.append(o)
        return o

    # --- output ------------------------------------------------------------------------------
    def compact(self) -> None:
        """Drop tensors nothing reads or writes, and buffers no tensor uses (renumbering both)."""
        used = set(self.inputs) | set(self.outputs)
        for op in self.operators:
            used.update(int(i) for i in op.inputs if i >= 0)
            used.update(int(i) for i in op.outputs if i >= 0)
        order = sorted(used)
        remap = {old: new for new, old in enumerate(order)}
        self.tensors = [self.tensors[i] for i in order]
        for op in self.operators:
            op.inputs = np.asarray([remap[int(i)] if i >= 0 else -1 for i in op.inputs], dtype=np.int32)
            op.outputs = np.asarray([remap[int(i)] for i in op.outputs], dtype=np.int32)
        self.inputs = [remap[i] for i in self.inputs]
        self.outputs = [remap[i] for i in self.outputs]
        self.signature_inputs = [(n, remap[i]) for n, i in self.signature_inputs]
        self.signature_outputs = [(n, remap[i]) for n, i in self.signature_outputs]
        bufs = sorted({t.buffer for t in self.tensors if t.buffer})
        bmap = {old: new + 1 for new, old in enumerate(bufs)}
        self.buffers = [None] + [self.buffers[b] for b in bufs]
        for t in self.tensors:
            t.buffer = bmap.get(t.buffer, 0)
        self._buffer_index = {d: i for i, d in enumerate(self.buffers) if d is not None}

    def finish(self) -> bytes:
        self.compact()
        model = fb.ModelT()
        model.version = 3
        model.description = self.description
        codes = []
        for code, version in self.op_codes:
            c = fb.OperatorCodeT()
            c.builtinCode = code
            c.deprecatedBuiltinCode = min(code, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            c.version = version
            codes.append(c)
        model.operatorCodes = codes
        sg = fb.SubGraphT()
        sg.name = "main"
        sg.tensors = self.tensors
        sg.inputs = np.asarray(self.inputs, dtype=np.int32)
        sg.outputs = np.asarray(self.outputs, dtype=np.int32)
        sg.operators = self.operators
        model.subgraphs = [sg]
        buffers: list[fb.BufferT] = []
        for data in self.buffers:
            buffers.append(fb.BufferT() if data is None else _AlignedBuffer(data))
        metadata = []
        for name, blob in sorted(self.metadata.items()):
            m = fb.MetadataT()
            m.name = name
            m.buffer = len(buffers)
            buffers.append(_AlignedBuffer(blob))
            metadata.append(m)
        model.buffers = buffers
        model.metadata = metadata or None
        sig = fb.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs = [_tensor_map(n, i) for n, i in self.signature_inputs]
        sig.outputs = [_tensor_map(n, i) for n, i in self.signature_outputs]
        model.signatureDefs = [sig]
        size_hint = sum(len(b) for b in self.buffers if b) + 1024 * 1024
        builder = flatbuffers.Builder(min(size_hint, 1 << 30))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _tensor_map(name: str, idx: int) -> fb.TensorMapT:
    m = fb.TensorMapT()
    m.name = name
    m.tensorIndex = idx
    return m


def read_model(data: bytes) -> fb.ModelT:
    return fb.ModelT.InitFromPackedBuf(bytearray(data), 0)


def read_metadata(model: fb.ModelT, name: str = "edgekit") -> dict:
    for m in model.metadata or []:
        if (m.name.decode() if isinstance(m.name, bytes) else m.name) == name:
            data = model.buffers[m.buffer].data
            return json.loads(bytes(np.asarray(data, dtype=np.uint8)).decode())
    return {}
