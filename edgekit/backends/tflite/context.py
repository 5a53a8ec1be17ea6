"""The converter context: maps ONNX tensors to TFLite tensors and tracks each one's layout and dtype.

Layout: every value carries `perm`, the axis order it is stored in relative to the ONNX tensor
(stored = onnx.transpose(perm)); NHWC for a rank-4 NCHW tensor is (0, 2, 3, 1). Ops ask for the layout
they need (`ctx.x(name, perm)`); a TRANSPOSE is emitted only when a consumer needs a layout the value is
not yet in, and each conversion is made once and cached. A RESHAPE replaces the TRANSPOSE when only
size-1 axes move (the bytes are the same).

Quantization: a node is lowered in int8 when its op supports it and every float activation it reads or
writes carries QDQ parameters (`Graph.act_quant`). Values convert lazily between float and int8
(QUANTIZE / DEQUANTIZE), and between int8 parameter sets (QUANTIZE requantizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edgekit.backends.tflite.prepare import Graph, attrs
from edgekit.backends.tflite.writer import ModelWriter, Quant

NCHW_TO_NHWC = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def channels_last(rank: int) -> tuple[int, ...]:
    return NCHW_TO_NHWC.get(rank, identity(rank))


def permute(shape: tuple[int, ...] | list[int], perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(shape[p]) for p in perm)


def stored_axis(perm: tuple[int, ...], onnx_axis: int) -> int:
    return perm.index(onnx_axis % len(perm))


def drop_axes(perm: tuple[int, ...], axes: set[int]) -> tuple[int, ...]:
    """The perm left after removing `axes` (ONNX axes) from a tensor stored with `perm`."""
    kept = [p for p in perm if p not in axes]
    order = sorted(kept)
    return tuple(order.index(p) for p in kept)


def memory_trivial(shape: tuple[int, ...], perm: tuple[int, ...]) -> bool:
    """True when transposing `shape` by `perm` only moves size-1 axes (same bytes, a reshape suffices)."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


@dataclass
class Val:
    idx: int
    perm: tuple[int, ...]
    dtype: np.dtype
    q: Quant | None = None


def np_float(dtype: Any) -> bool:
    return np.dtype(dtype).kind == "f"


FP16_MIN_ELEMENTS = 64  # smaller float constants (scalars, short vectors) stay float32: no size to win


def _halvable(arr: np.ndarray) -> bool:
    """A float32 constant worth storing as float16 and representable there (a -1e9 mask fill would be -inf)."""
    return (arr.dtype == np.float32 and arr.size >= FP16_MIN_ELEMENTS and bool(np.isfinite(arr).all())
            and float(np.abs(arr).max()) <= float(np.finfo(np.float16).max))


class Context:
    def __init__(self, graph: Graph, options: dict[str, Any]) -> None:
        self.g = graph
        self.options = options
        self.w = ModelWriter()
        self.vals: dict[str, dict[tuple, Val]] = {}
        self.primary: dict[str, tuple] = {}
        self.qmode = False
        self.node: onnx.NodeProto | None = None
        self._names: dict[str, int] = {}
        self._const_cache: dict[tuple, int] = {}
        self._pending: list[tuple[int, int]] = []  # (tensor, requantized copy) awaiting the tensor's producer
        self.fp16 = options.get("precision") == "fp16"  # float weights stored float16 (const_tensor)

    # --- graph facts -------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.g.shapes[name])

    def rank(self, name: str) -> int:
        return len(self.g.shapes[name])

    def dtype(self, name: str) -> np.dtype:
        """The tensor's type in the TFLite graph: ONNX's, except that float64 (a Cast to double, e.g. around a
        numpy-exported constant) is computed in float32, as its constants already are: TFLite kernels have no float64."""
        dt = np.dtype(self.g.dtypes.get(name, np.float32))
        return np.dtype(np.float32) if dt == np.float64 else dt

    def is_const(self, name: str) -> bool:
        return name in self.g.consts

    def const(self, name: str) -> np.ndarray:
        return np.asarray(self.g.consts[name])

    def attrs(self, node: onnx.NodeProto) -> dict:
        return attrs(node)

    def act_q(self, name: str) -> Quant | None:
        return self.g.act_quant.get(name)

    def unique(self, base: str) -> str:
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    # --- emitting ----------------------------------------------------------------------------
    def op(self, name: str, inputs: list[int], outputs: list[int], options: str | None = None, **fields: Any) -> None:
        self.w.op(name, inputs, outputs, options, **fields)
        if self._pending:  # requantizes of this op's outputs go right after it (ops run in list order)
            ready = [p for p in self._pending if p[0] in outputs]
            self._pending = [p for p in self._pending if p[0] not in outputs]
            for src, dst in ready:
                self.w.op("QUANTIZE", [src], [dst])

    def tensor(self, name: str, shape: tuple[int, ...], dtype: Any, q: Quant | None = None) -> int:
        return self.w.tensor(self.unique(name), shape, dtype, quant=q)

    def const_tensor(self, value: np.ndarray, name: str, dtype: Any = None, q: Quant | None = None) -> int:
        arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if arr.dtype == np.int64 and dtype is None:
            arr = arr.astype(np.int64)
        key = (arr.dtype.str, arr.shape, arr.tobytes(), q.key() if q else None)
        if key not in self._const_cache:
            if self.fp16 and q is None and _halvable(arr):
                # TFLite's float16 weights: a FLOAT16 constant and a DEQUANTIZE to float32, which the runtime
                # (XNNPACK, or the kernel's cached constant output) computes once, not per run
                half = self.w.tensor(self.unique(f"{name}/fp16"), arr.shape, np.float16, data=arr.astype(np.float16))
                out = self.w.tensor(self.unique(name), arr.shape, np.float32)
                self.w.op("DEQUANTIZE", [half], [out])
                self._const_cache[key] = out
            else:
                self._const_cache[key] = self.w.tensor(self.unique(name), arr.shape, arr.dtype, data=arr, quant=q)
        return self._const_cache[key]

    def i32(self, values: Any, name: str = "shape") -> int:
        return self.const_tensor(np.asarray(values, dtype=np.int32), name)

    # --- quantized constants -----------------------------------------------------------------
    @staticmethod
    def _asym_params(arr: np.ndarray) -> Quant:
        lo, hi = min(float(arr.min()), 0.0), max(float(arr.max()), 0.0)
        scale = (hi - lo) / 255.0 or 1.0
        zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
        return Quant(scale, zp)

    @staticmethod
    def quantize(arr: np.ndarray, q: Quant, dtype: Any = np.int8) -> np.ndarray:
        info = np.iinfo(dtype)
        shape = [1] * arr.ndim
        if q.scale.size > 1:
            shape[q.axis] = q.scale.size
        s = q.scale.reshape(shape) if q.scale.size > 1 else q.scale[0]
        z = q.zero_point.reshape(shape) if q.zero_point.size > 1 else q.zero_point[0]
        return np.clip(np.round(arr / s) + z, info.min, info.max).astype(dtype)

    def weight(
        self, name: str, value: np.ndarray, onnx_axes: tuple[int, ...] | None, axis: int | None, channels: slice | None = None
    ) -> tuple[int, Quant | None]:
        """A weight constant already transposed to its TFLite layout (`onnx_axes[i]` = ONNX axis of stored axis i).
        In int8 mode it is quantized symmetric per-channel on stored `axis` (per-tensor when axis is None),
        reusing the QDQ scales when they sit on that axis."""
        value = np.asarray(value, dtype=np.float32)
        if not self.qmode:
            return self.const_tensor(value, name), None
        wq = self.g.weight_quant.get(name)
        q = None
        if wq is not None and not wq.zero_point.any():
            if wq.scale.size > 1 and axis is not None and onnx_axes is not None and onnx_axes[axis] == wq.axis:
                scale = wq.scale[channels] if channels is not None else wq.scale
                q = Quant(scale, 0, axis) if scale.size == value.shape[axis] else None
            elif wq.scale.size == 1:
                q = Quant(wq.scale, 0, 0)
        if q is None:
            if axis is None:
                amax = float(np.abs(value).max()) or 1.0
                q = Quant(amax / 127.0, 0, 0)
            else:
                red = tuple(i for i in range(value.ndim) if i != axis)
                amax = np.abs(value).max(axis=red) if red else np.abs(value)
                q = Quant(np.where(amax > 0, amax / 127.0, 1.0), 0, axis)
        return self.const_tensor(self.quantize(value, q), name, q=q), q

    def bias(self, name: str, value: np.ndarray, in_q: Quant | None, w_q: Quant | None) -> int:
        value = np.asarray(value, dtype=np.float32)
        if not self.qmode:
            return self.const_tensor(value, name)
        scale = (in_q.scale[0] * w_q.scale).astype(np.float64)
        # per-tensor weights take a per-tensor bias: XNNPACK refuses a conv whose bias has one scale per channel
        # when its filter has one scale (ONNX Runtime's quantize_static is per-tensor by default)
        q = Quant(scale.astype(np.float32), 0, 0)
        data = np.clip(np.round(value / scale), -(2**31), 2**31 - 1).astype(np.int32)
        return self.const_tensor(data, name, q=q)

    # --- values ------------------------------------------------------------------------------
    def _kind(self, dtype: np.dtype, q: Quant | None) -> tuple:
        return ("q", q.key()) if q is not None else (np.dtype(dtype).str,)

    def register(self, name: str, val: Val, primary: bool = True) -> Val:
        key = (val.perm, *self._kind(val.dtype, val.q))
        self.vals.setdefault(name, {})[key] = val
        if primary or name not in self.primary:
            self.primary[name] = key
        return val

    def wants_int8(self, name: str) -> bool:
        return self.qmode and np_float(self.dtype(name)) and self.act_q(name) is not None

    def x(self, name: str, perm: tuple[int, ...] | None = None, q: Quant | None = None, float_: bool | None = None) -> Val:
        """The value of ONNX tensor `name` stored with `perm` (None = as it is), int8 in int8 mode (with params
        `q`, default the tensor's own), float otherwise. Conversions are emitted once and cached."""
        if self.is_const(name):
            return self._const_val(name, perm, q)
        if name not in self.vals:
            raise KeyError(f"tensor '{name}' has no value yet")
        onnx_dtype = self.dtype(name)
        want_q: Quant | None = None
        if np_float(onnx_dtype) and float_ is not True and (q is not None or self.wants_int8(name)):
            want_q = q or self.act_q(name)
        cur = self.vals[name][self.primary[name]]
        perm = cur.perm if perm is None else tuple(perm)
        kind = ("q", want_q.key()) if want_q is not None else (np.dtype(np.float32).str,) if np_float(onnx_dtype) else None
        if kind is None:
            kind = self._kind(cur.dtype, None)
        hit = self.vals[name].get((perm, *kind))
        if hit is not None:
            return hit
        src = next((v for k, v in self.vals[name].items() if k[1:] == kind), None)
        if src is None and cur.q is not None and want_q is None and cur.perm != perm:
            # int8 -> float in another layout: move the (4x smaller) int8 bytes, then dequantize
            moved = self.vals[name].get((perm, *self._kind(cur.dtype, cur.q))) or self._transpose(name, cur, perm)
            return self._convert_dtype(name, moved, None)
        if src is None:  # float -> int8 (or requantize): convert first, then move int8 bytes
            src = self._convert_dtype(name, cur, want_q)
        if src.perm != perm:
            src = self.vals[name].get((perm, *self._kind(src.dtype, src.q))) or self._transpose(name, src, perm)
        return src

    def _convert_dtype(self, name: str, cur: Val, want_q: Quant | None) -> Val:
        shape = permute(self.shape(name), cur.perm)
        if want_q is None:
            idx = self.tensor(name + "/float", shape, np.float32)
            self.op("DEQUANTIZE", [cur.idx], [idx])
            return self.register(name, Val(idx, cur.perm, np.dtype(np.float32), None), primary=False)
        if cur.q is None and not np_float(cur.dtype):
            raise TypeError(f"cannot quantize non-float tensor {name}")
        idx = self.tensor(name + "/int8", shape, np.int8, q=want_q)
        self.op("QUANTIZE", [cur.idx], [idx])
        return self.register(name, Val(idx, cur.perm, np.dtype(np.int8), want_q), primary=False)

    def _transpose(self, name: str, src: Val, perm: tuple[int, ...]) -> Val:
        onnx_shape = self.shape(name)
        rel = tuple(src.perm.index(p) for p in perm)
        out_shape = permute(onnx_shape, perm)
        src_shape = permute(onnx_shape, src.perm)
        idx = self.tensor(f"{name}/perm{''.join(map(str, perm))}", out_shape, src.dtype, q=src.q)
        if memory_trivial(src_shape, rel):
            self.op("RESHAPE", [src.idx, self.i32(out_shape)], [idx], "ReshapeOptions", newShape=list(out_shape))
        else:
            self.op("TRANSPOSE", [src.idx, self.i32(rel, "perm")], [idx])
        return self.register(name, Val(idx, perm, src.dtype, src.q), primary=False)

    def _const_val(self, name: str, perm: tuple[int, ...] | None, q: Quant | None) -> Val:
        arr = self.const(name)
        perm = identity(arr.ndim) if perm is None else tuple(perm)
        arr = np.transpose(arr, perm) if arr.ndim > 1 else arr
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if self.qmode and np_float(arr.dtype):
            wq = self.g.weight_quant.get(name)
            if q is None:
                if wq is not None and wq.scale.size == 1:
                    q = wq
                else:
                    q = self._asym_params(arr)
            return Val(self.const_tensor(self.quantize(arr, q), name, q=q), perm, np.dtype(np.int8), q)
        return Val(self.const_tensor(arr, name), perm, arr.dtype, None)

    def const_like(self, arr: np.ndarray, name: str, rank: int, perm: tuple[int, ...], q: Quant | None = None) -> Val:
        """A constant operand broadcast against a value of `rank` stored with `perm`."""
        arr = np.asarray(arr)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
        arr = np.transpose(arr, perm)
        if self.qmode and np_float(arr.dtype):
            q = q or self._asym_params(arr)
            return Val(self.const_tensor(self.quantize(arr, q), name, q=q), perm, np.dtype(np.int8), q)
        return Val(self.const_tensor(arr, name), perm, arr.dtype, None)

    def out(self, name: str, perm: tuple[int, ...] | None = None, q: Quant | None = None, dtype: Any = None) -> int:
        """Create the TFLite tensor for ONNX output `name` stored with `perm`. In int8 mode it takes the
        tensor's QDQ params; `q` forces other params (fixed-output ops), followed by a requantize."""
        shape = self.shape(name)
        perm = identity(len(shape)) if perm is None else tuple(perm)
        onnx_dtype = self.dtype(name)
        stored = permute(shape, perm)
        if self.wants_int8(name):
            target = self.act_q(name)
            own = q or target
            idx = self.tensor(name, stored, np.int8, q=own)
            if own == target:
                self.register(name, Val(idx, perm, np.dtype(np.int8), target))
                return idx
            self.register(name, Val(idx, perm, np.dtype(np.int8), own), primary=False)
            req = self.tensor(name + "/requant", stored, np.int8, q=target)
            self._pending.append((idx, req))  # emitted once the caller has emitted idx's producer
            self.register(name, Val(req, perm, np.dtype(np.int8), target))
            return idx
        dt = np.dtype(dtype) if dtype is not None else (np.dtype(np.float32) if np_float(onnx_dtype) else onnx_dtype)
        idx = self.tensor(name, stored, dt)
        self.register(name, Val(idx, perm, dt, None))
        return idx

    def alias(self, name: str, val: Val) -> None:
        """ONNX tensor `name` is the same TFLite tensor as `val` (Identity, layout-only Transpose)."""
        if self.qmode and val.q is not None and self.act_q(name) is not None and val.q != self.act_q(name):
            shape = permute(self.shape(name), val.perm)
            idx = self.tensor(name, shape, np.int8, q=self.act_q(name))
            self.op("QUANTIZE", [val.idx], [idx])
            self.register(name, Val(idx, val.perm, np.dtype(np.int8), self.act_q(name)))
            return
        self.register(name, Val(val.idx, val.perm, val.dtype, val.q))

    def out_q_of(self, name: str) -> Quant | None:
        return self.act_q(name) if self.wants_int8(name) else None

    def first_perm(self, names: list[str], rank: int) -> tuple[int, ...]:
        """The layout to compute an elementwise op in: that of its first full-rank non-constant input."""
        for n in names:
            if n and not self.is_const(n) and self.rank(n) == rank and n in self.primary:
                return self.primary[n][0]
        return identity(rank)

    def broadcast_operand(self, name: str, rank: int, perm: tuple[int, ...], q: Quant | None = None) -> Val:
        """Operand `name` of an elementwise op computed at `rank` in layout `perm`."""
        if self.is_const(name):
            wq = self.g.weight_quant.get(name)
            return self.const_like(self.const(name), name, rank, perm, q or (wq if wq is not None and wq.scale.size == 1 else None))
        r = self.rank(name)
        if r == rank:
            return self.x(name, perm, q=q)
        src = self.x(name, identity(r), q=q)
        full = (1,) * (rank - r) + self.shape(name)
        shape = permute(full, perm)
        trivial = memory_trivial(full, perm)
        first = shape if trivial else full
        idx = self.tensor(name + f"/rank{rank}", first, src.dtype, q=src.q)
        self.op("RESHAPE", [src.idx, self.i32(first)], [idx], "ReshapeOptions", newShape=list(first))
        if not trivial:
            t = self.tensor(name + f"/rank{rank}/t", shape, src.dtype, q=src.q)
            self.op("TRANSPOSE", [idx, self.i32(perm, "perm")], [t])
            idx = t
        return Val(idx, perm, src.dtype, src.q)
