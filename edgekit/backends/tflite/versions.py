"""Operator versions: each emitted builtin gets the lowest version whose kernel supports how it is used.

A runtime refuses a model whose (op, version) it has no kernel for, and an older runtime (an app's pinned
LiteRT, an NPU delegate) may only know low versions, so a version that is too low fails to load and one
that is too high needlessly excludes runtimes. The rules follow TFLite's op versioning (what each kernel
version added: int8 kernels, keep_num_dims, per-channel dequantize, rank-5 broadcasting ...), restricted
to the tensor types this backend emits (float32, int8, int32, int64, bool).

RULES maps a builtin name to (version, condition) pairs tried in order; the first that holds wins,
else the op's base version (1, or BASE for ops whose version 1 was withdrawn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ai_edge_litert import schema_py_generated as fb

T = fb.TensorType


@dataclass
class Sig:
    """What versioning looks at: input/output tensors (None for an omitted optional input) and the options."""

    ins: list[Any]
    outs: list[Any]
    opts: Any

    def type(self, i: int, out: bool = False) -> int | None:
        ts = self.outs if out else self.ins
        return ts[i].type if i < len(ts) and ts[i] is not None else None

    def rank(self, i: int) -> int:
        t = self.ins[i] if i < len(self.ins) else None
        return len(t.shape) if t is not None and t.shape is not None else 0

    def opt(self, name: str, default: Any = None) -> Any:
        return getattr(self.opts, name, default) if self.opts is not None else default

    def scale(self, i: int, out: bool = False) -> float | None:
        t = (self.outs if out else self.ins)[i]
        q = t.quantization if t is not None else None
        if q is None or q.scale is None or len(q.scale) != 1:
            return None
        return float(q.scale[0])

    def per_channel(self, i: int, out: bool = False) -> bool:
        t = (self.outs if out else self.ins)[i]
        q = t.quantization if t is not None else None
        return q is not None and q.scale is not None and len(q.scale) > 1


# --- conditions --------------------------------------------------------------------------------
def in_is(t: int, i: int = 0) -> Callable[[Sig], bool]:
    return lambda s: s.type(i) == t


def int8_in(s: Sig) -> bool:
    return s.type(0) == T.INT8


def int8_io(s: Sig) -> bool:
    """int8 activations in and out and int8 weights (the full-integer kernels)."""
    return s.type(0) == T.INT8 and s.type(1) == T.INT8 and s.type(0, out=True) == T.INT8


def rank_above(n: int, i: int = 0) -> Callable[[Sig], bool]:
    return lambda s: s.rank(i) > n


def broadcast_above_4d(s: Sig) -> bool:
    """Two inputs of different shapes and one of rank 5+ (the rank-5 broadcasting kernels)."""
    shapes = [tuple(t.shape) for t in s.ins[:2] if t is not None]
    return len(shapes) == 2 and shapes[0] != shapes[1] and max(len(x) for x in shapes) > 4


def option(name: str) -> Callable[[Sig], bool]:
    return lambda s: bool(s.opt(name, False))


def mul_rescale_at_least_one(s: Sig) -> bool:
    a, b, o = s.scale(0), s.scale(1), s.scale(0, out=True)
    return s.type(0) == T.INT8 and bool(a and b and o) and a * b / o >= 1.0


def fc_without_bias(s: Sig) -> bool:
    return len(s.ins) < 3 or s.ins[2] is None


def hybrid_asymmetric(s: Sig) -> bool:
    """float input and output, int8 weights, inputs quantized per run with a zero point (the hybrid kernel's
    asymmetric_quantize_inputs, version 9; TFLite's own converter ranks keep_num_dims first and writes 5)."""
    return (s.type(0) == T.FLOAT32 and s.type(1) == T.INT8 and s.type(0, out=True) == T.FLOAT32
            and bool(s.opt("asymmetricQuantizeInputs", False)))


def depthwise_dilated(s: Sig) -> bool:
    return s.opt("dilationHFactor", 1) != 1 or s.opt("dilationWFactor", 1) != 1


def grouped_conv(s: Sig) -> bool:
    x, w = s.ins[0], s.ins[1]
    return x is not None and w is not None and len(x.shape) == 4 and len(w.shape) == 4 and x.shape[3] != w.shape[3]


def resize_modes(s: Sig) -> bool:
    return bool(s.opt("halfPixelCenters", False) or s.opt("alignCorners", False))


def int8_either_side(s: Sig) -> bool:
    return s.type(0) == T.INT8 or s.type(0, out=True) == T.INT8


INT8_2 = [(2, int8_in)]

RULES: dict[str, list[tuple[int, Callable[[Sig], bool]]]] = {
    "CONV_2D": [(6, grouped_conv), (3, int8_io)],
    "DEPTHWISE_CONV_2D": [(3, int8_io), (2, depthwise_dilated)],
    "FULLY_CONNECTED": [(9, hybrid_asymmetric), (6, fc_without_bias), (5, option("keepNumDims")), (4, int8_io)],
    "TRANSPOSE_CONV": [(4, lambda s: s.opt("fusedActivationFunction", 0) != 0),
                       (3, lambda s: len(s.ins) == 4 and s.ins[3] is not None), (2, in_is(T.INT8, 1))],
    "BATCH_MATMUL": INT8_2,
    "ADD": [(4, in_is(T.INT64)), (2, int8_in)],
    "SUB": [(4, in_is(T.INT64)), (3, broadcast_above_4d), (2, int8_in)],
    "MUL": [(5, in_is(T.INT64)), (3, mul_rescale_at_least_one), (2, int8_in)],
    "DIV": [(2, broadcast_above_4d)],
    "MAXIMUM": [(3, broadcast_above_4d), (2, int8_in)],
    "MINIMUM": [(3, broadcast_above_4d), (2, int8_in)],
    "ABS": [(5, in_is(T.INT32)), (2, int8_in)],
    "SIGN": [(2, in_is(T.INT32))],
    "RELU": INT8_2,
    "RELU6": INT8_2,
    "LOGISTIC": INT8_2,
    "TANH": INT8_2,
    "GELU": INT8_2,
    "SOFTMAX": INT8_2,
    "LOG_SOFTMAX": INT8_2,
    "RSQRT": INT8_2,
    "EXP": INT8_2,
    "LOG": INT8_2,
    "MAX_POOL_2D": INT8_2,
    "AVERAGE_POOL_2D": INT8_2,
    "MEAN": INT8_2,
    "SUM": INT8_2,
    "REDUCE_MAX": INT8_2,
    "REDUCE_MIN": INT8_2,
    "REDUCE_PROD": INT8_2,
    "ARG_MAX": [(3, in_is(T.BOOL)), (2, int8_in)],
    "ARG_MIN": [(3, in_is(T.BOOL)), (2, int8_in)],
    "CONCATENATION": INT8_2,
    "SPLIT": [(3, in_is(T.INT32, 1)), (2, in_is(T.INT8, 1))],
    "SPLIT_V": INT8_2,
    "SLICE": [(5, rank_above(4)), (2, int8_in)],
    "STRIDED_SLICE": [(6, lambda s: bool(s.opt("ellipsisMask", 0) or s.opt("newAxisMask", 0))),
                      (4, rank_above(4)), (3, in_is(T.BOOL)), (2, int8_in)],
    "TRANSPOSE": [(6, rank_above(5)), (4, rank_above(4)), (3, in_is(T.BOOL)), (2, int8_in)],
    "PAD": [(4, rank_above(4)), (2, int8_in)],
    "PADV2": [(4, rank_above(4)), (2, int8_in)],
    "MIRROR_PAD": INT8_2,
    "GATHER": [(5, lambda s: s.opt("batchDims", 0) != 0), (3, in_is(T.BOOL)), (2, int8_in)],
    "TILE": [(3, int8_in)],
    "BROADCAST_TO": [(3, int8_in)],
    "RESIZE_BILINEAR": [(3, option("halfPixelCenters")), (2, int8_in)],
    "RESIZE_NEAREST_NEIGHBOR": [(3, resize_modes), (2, int8_in)],
    "DEPTH_TO_SPACE": INT8_2,
    "SPACE_TO_DEPTH": INT8_2,
    "EQUAL": INT8_2,
    "NOT_EQUAL": INT8_2,
    "LESS": INT8_2,
    "GREATER": INT8_2,
    "LESS_EQUAL": INT8_2,
    "GREATER_EQUAL": INT8_2,
    "FLOOR_MOD": INT8_2,
    "SELECT": [(3, lambda s: any(s.rank(i) == 5 for i in range(3))), (2, int8_in)],
    "CAST": [(5, lambda s: T.FLOAT16 in (s.type(0), s.type(0, out=True))), (3, int8_either_side)],
    "QUANTIZE": [(3, lambda s: s.per_channel(0, out=True))],
    "DEQUANTIZE": [(3, in_is(T.FLOAT16)), (5, lambda s: s.type(0) == T.INT8 and s.per_channel(0)), (2, int8_in)],
}
BASE = {"BROADCAST_TO": 2}  # version 1 was withdrawn


def required_version(name: str, sig: Sig) -> int:
    for version, cond in RULES.get(name, []):
        if cond(sig):
            return version
    return BASE.get(name, 1)


def signature(op: Any, tensors: list[Any]) -> Sig:
    ins = [tensors[int(i)] if int(i) >= 0 else None for i in (op.inputs if op.inputs is not None else [])]
    outs = [tensors[int(i)] for i in (op.outputs if op.outputs is not None else [])]
    return Sig(ins, outs, op.builtinOptions)


def assign_versions(w: Any) -> dict[str, list[int]]:
    """Set every operator's code to (builtin, required version) in a ModelWriter; returns {op: versions}."""
    from edgekit.backends.tflite.writer import op_name

    codes: list[tuple[int, int]] = []
    index: dict[tuple[int, int], int] = {}
    used: dict[str, set[int]] = {}
    for op in w.operators:
        code = w.op_codes[op.opcodeIndex][0]
        name = op_name(code)
        key = (code, required_version(name, signature(op, w.tensors)))
        if key not in index:
            index[key] = len(codes)
            codes.append(key)
        op.opcodeIndex = index[key]
        used.setdefault(name, set()).add(key[1])
    w.op_codes = codes
    w._op_code_index = index
    return {k: sorted(v) for k, v in sorted(used.items())}


def model_versions(model: fb.ModelT) -> list[tuple[str, int, int]]:
    """(op name, version written, version required) for every operator of a read-back model."""
    from edgekit.backends.tflite.writer import op_name

    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        c = model.operatorCodes[op.opcodeIndex]
        code = max(int(c.builtinCode), int(c.deprecatedBuiltinCode))
        name = op_name(code)
        out.append((name, int(c.version), required_version(name, signature(op, sg.tensors))))
    return out


__all__ = ["RULES", "Sig", "assign_versions", "model_versions", "required_version"]
