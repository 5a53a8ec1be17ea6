"""LSTM and GRU (ONNX layout 0, default activations, no clip or peepholes), unrolled over the static sequence
length: one FULLY_CONNECTED projects every step's input at once, then each step runs a recurrent
FULLY_CONNECTED and elementwise gates. Forward, reverse and bidirectional; float (int8 graphs keep RNNs in
float). TFLite has no GRU kernel, and its fused LSTM wants another weight layout per gate; the unrolled
form runs on every interpreter and delegate, at a graph size that grows with the sequence length.
"""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite.context import identity
from edgekit.backends.tflite.ops.common import sattr, unsupported
from edgekit.backends.tflite.ops.registry import register

DEFAULT_ACTIVATIONS = {"GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}


class _Steps:
    """Emits the float ops of one unrolled recurrence (tensor names derived from the node's first output)."""

    def __init__(self, ctx, node, batch: int, hidden: int) -> None:
        self.ctx, self.base, self.batch, self.hidden = ctx, node.output[0] or node.name, batch, hidden
        self.n = 0

    def tensor(self, width: int | None = None, shape: tuple[int, ...] | None = None) -> int:
        self.n += 1
        shape = shape or (self.batch, width or self.hidden)
        return self.ctx.tensor(f"{self.base}/rnn{self.n}", shape, np.float32)

    def fc(self, x: int, w: np.ndarray, b: np.ndarray, tag: str, shape: tuple[int, ...] | None = None) -> int:
        y = self.tensor(w.shape[0], shape)
        wi = self.ctx.const_tensor(np.ascontiguousarray(w, np.float32), f"{self.base}/{tag}")
        bi = self.ctx.const_tensor(np.ascontiguousarray(b, np.float32), f"{self.base}/{tag}_bias")
        self.ctx.op("FULLY_CONNECTED", [x, wi, bi], [y], "FullyConnectedOptions", keepNumDims=shape is not None)
        return y

    def binary(self, op: str, a: int, b: int) -> int:
        y = self.tensor()
        self.ctx.op(op, [a, b], [y], {"ADD": "AddOptions", "MUL": "MulOptions", "SUB": "SubOptions"}[op])
        return y

    def unary(self, op: str, a: int) -> int:
        y = self.tensor()
        self.ctx.op(op, [a], [y])
        return y

    def split(self, x: int, parts: int) -> list[int]:
        outs = [self.tensor() for _ in range(parts)]
        axis = self.ctx.const_tensor(np.asarray(1, np.int32), "axis")
        self.ctx.op("SPLIT", [axis, x], outs, "SplitOptions", numSplits=parts)
        return outs

    def unpack(self, x: int, count: int, width: int) -> list[int]:
        outs = [self.tensor(width) for _ in range(count)]
        self.ctx.op("UNPACK", [x], outs, "UnpackOptions", num=count, axis=0)
        return outs


def _check(ctx, node, kind: str) -> dict:
    a = ctx.attrs(node)
    if int(a.get("layout", 0)) != 0:
        raise unsupported(node, "layout=1 (batch-first tensors)")
    if "clip" in a:
        raise unsupported(node, "cell clipping")
    acts = [v.decode() if isinstance(v, bytes) else str(v) for v in a.get("activations", [])]
    dirs = 2 if sattr(a, "direction", "forward") == "bidirectional" else 1
    if acts and [x.lower() for x in acts] != DEFAULT_ACTIVATIONS[kind] * dirs:
        raise unsupported(node, f"activations {acts}")
    for i in (1, 2):
        if not ctx.is_const(node.input[i]):
            raise unsupported(node, "weights must be constant")
    seq = ctx.shape(node.input[0])[0]
    if len(node.input) > 4 and node.input[4]:
        if not ctx.is_const(node.input[4]) or not np.all(ctx.const(node.input[4]) == seq):
            raise unsupported(node, "sequence_lens shorter than the sequence")
    if kind == "LSTM" and len(node.input) > 7 and node.input[7]:
        raise unsupported(node, "peephole weights")
    return a


def _initial(ctx, node, index: int, steps: _Steps, dirs: int) -> list[int]:
    """Per direction, the (batch, hidden) initial state from input `index` (zeros when absent)."""
    name = node.input[index] if len(node.input) > index else ""
    if not name:
        zero = ctx.const_tensor(np.zeros((steps.batch, steps.hidden), np.float32), f"{steps.base}/zeros")
        return [zero] * dirs
    if ctx.is_const(name):
        v = ctx.const(name).astype(np.float32)
        return [ctx.const_tensor(v[d], f"{steps.base}/init{index}_{d}") for d in range(dirs)]
    return steps.unpack(ctx.x(name, identity(3)).idx, dirs, steps.hidden)


def _rnn(ctx, node, kind: str) -> None:
    a = _check(ctx, node, kind)
    x = ctx.x(node.input[0], identity(3))
    seq, batch, _ = ctx.shape(node.input[0])
    w_all, r_all = ctx.const(node.input[1]).astype(np.float32), ctx.const(node.input[2]).astype(np.float32)
    dirs, gates = w_all.shape[0], 3 if kind == "GRU" else 4
    hidden = int(a.get("hidden_size", r_all.shape[-1]))
    has_b = len(node.input) > 3 and node.input[3]
    b_all = ctx.const(node.input[3]).astype(np.float32) if has_b else np.zeros((dirs, 2 * gates * hidden), np.float32)
    direction = sattr(a, "direction", "forward")
    lbr = int(a.get("linear_before_reset", 0))
    st = _Steps(ctx, node, batch, hidden)
    h0 = _initial(ctx, node, 5, st, dirs)
    c0 = _initial(ctx, node, 6, st, dirs) if kind == "LSTM" else [None] * dirs
    ys, hs, cs = [], [], []
    for d in range(dirs):
        w, r = w_all[d], r_all[d]
        wb, rb = b_all[d, : gates * hidden], b_all[d, gates * hidden:]
        if kind == "GRU":  # the h gate's recurrent bias stays inside r * (...) (or with Rh, lbr=0)
            xb = wb + np.concatenate([rb[: 2 * hidden], np.zeros(hidden, np.float32)])
            hb = np.concatenate([np.zeros(2 * hidden, np.float32), rb[2 * hidden:]])
        else:
            xb, hb = wb + rb, np.zeros(gates * hidden, np.float32)
        xw = st.fc(x.idx, w, xb, f"W{d}", shape=(seq, batch, gates * hidden))
        per_step = st.unpack(xw, seq, gates * hidden)
        h, c = h0[d], c0[d]
        out = [None] * seq
        reverse = direction == "reverse" or d == 1
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            if kind == "GRU":
                xz, xr, xh = st.split(per_step[t], 3)
                if lbr:
                    hz, hr, hh = st.split(st.fc(h, r, hb, f"R{d}"), 3)
                    n = st.unary("TANH", st.binary("ADD", xh, st.binary("MUL", st.unary("LOGISTIC", st.binary("ADD", xr, hr)), hh)))
                    z = st.unary("LOGISTIC", st.binary("ADD", xz, hz))
                else:
                    hz, hr = st.split(st.fc(h, r[: 2 * hidden], hb[: 2 * hidden], f"Rzr{d}"), 2)
                    rr = st.unary("LOGISTIC", st.binary("ADD", xr, hr))
                    rh = st.fc(st.binary("MUL", rr, h), r[2 * hidden:], rb[2 * hidden:], f"Rh{d}")
                    n = st.unary("TANH", st.binary("ADD", xh, rh))
                    z = st.unary("LOGISTIC", st.binary("ADD", xz, hz))
                h = st.binary("ADD", n, st.binary("MUL", z, st.binary("SUB", h, n)))  # (1 - z) n + z h
            else:
                pre = st.binary("ADD", per_step[t], st.fc(h, r, hb, f"R{d}"))
                i, o, f, cc = st.split(pre, 4)
                c = st.binary("ADD", st.binary("MUL", st.unary("LOGISTIC", f), c),
                              st.binary("MUL", st.unary("LOGISTIC", i), st.unary("TANH", cc)))
                h = st.binary("MUL", st.unary("LOGISTIC", o), st.unary("TANH", c))
            out[t] = h
        ys.append(out)
        hs.append(h)
        cs.append(c)
    _outputs(ctx, node, st, ys, hs, cs, seq, batch, hidden)


def _pack(ctx, items: list[int], axis: int, y: int) -> None:
    ctx.op("PACK", items, [y], "PackOptions", valuesCount=len(items), axis=axis)


def _outputs(ctx, node, st: _Steps, ys, hs, cs, seq: int, batch: int, hidden: int) -> None:
    dirs = len(ys)
    if len(node.output) > 0 and node.output[0]:
        per_dir = []
        for d in range(dirs):
            t = st.tensor(shape=(seq, batch, hidden))
            _pack(ctx, ys[d], 0, t)
            per_dir.append(t)
        _pack(ctx, per_dir, 1, ctx.out(node.output[0], identity(4)))
    if len(node.output) > 1 and node.output[1]:
        _pack(ctx, hs, 0, ctx.out(node.output[1], identity(3)))
    if len(node.output) > 2 and node.output[2]:
        _pack(ctx, cs, 0, ctx.out(node.output[2], identity(3)))


@register("GRU")
def gru(ctx, node) -> None:
    _rnn(ctx, node, "GRU")


@register("LSTM")
def lstm(ctx, node) -> None:
    _rnn(ctx, node, "LSTM")
