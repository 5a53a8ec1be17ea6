"""A differentiable torch evaluator of an ONNX graph, QDQ included, for end-to-end int8 fine-tuning.

Each node runs through one entry of OPS (ONNX semantics on torch tensors). QuantizeLinear/DequantizeLinear
pairs on activations become fake quantization with a straight-through gradient (zero outside the range, as
the int8 kernels clip). Weights (int8 initializers under a DequantizeLinear that feed Conv/Gemm/MatMul) and
their int32 biases can be made trainable: `QLayer` keeps the fp32 value as the base and learns a bounded
offset in quantization steps, so a weight can only move to a neighbouring int8 level (AdaRound's search
space, trained end to end with a straight-through estimator instead of a per-layer soft relaxation).
An op outside OPS raises NotImplementedError naming it; callers fall back to no fine-tuning.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch  # this module is imported only when fine-tuning runs (finetune.py is imported lazily)
import torch.nn.functional as F
from onnx import helper, numpy_helper

WEIGHTED = ("Conv", "Gemm", "MatMul")
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
           11: "float64", 12: "uint32", 13: "uint64"}


def _attrs(node: Any) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ste_round(x: Any) -> Any:
    return x + (torch.round(x) - x).detach()


def _qrange(zp: Any) -> tuple[int, int]:
    if zp is None or zp.dtype == torch.uint8:
        return 0, 255
    if zp.dtype == torch.int8:
        return -128, 127
    if zp.dtype == torch.int16:
        return -32768, 32767
    if zp.dtype == torch.uint16:
        return 0, 65535
    return -(2 ** 31), 2 ** 31 - 1


def _per_axis(t: Any, rank: int, axis: int) -> Any:
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(())
    shape = [1] * rank
    shape[axis % rank] = t.numel()
    return t.reshape(shape)


# ---- ops: f(inputs: list[Tensor | None], attrs) -> Tensor | list[Tensor]
def _conv(x, a):
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    pads = list(a.get("pads", [0] * (2 * nd)))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    if pads[:nd] != pads[nd:]:
        pad = []
        for i in reversed(range(nd)):
            pad += [pads[i], pads[i + nd]]
        inp, pads = F.pad(inp, pad), [0] * (2 * nd)
    return conv(inp, w, b, stride=a.get("strides", 1), padding=pads[:nd], dilation=a.get("dilations", 1),
                groups=a.get("group", 1))


def _conv_transpose(x, a):
    inp, w = x[0], x[1]
    b = x[2] if len(x) > 2 else None
    nd = w.dim() - 2
    pads = list(a.get("pads", [0] * (2 * nd)))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or "output_shape" in a or pads[:nd] != pads[nd:]:
        raise NotImplementedError("ConvTranspose auto_pad, output_shape or asymmetric pads")
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    return conv(inp, w, b, stride=a.get("strides", 1), padding=pads[:nd],
                output_padding=a.get("output_padding", 0), groups=a.get("group", 1), dilation=a.get("dilations", 1))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _resize(x, a):
    """ONNX Resize over the spatial axes, in the variants F.interpolate computes exactly."""
    inp = x[0]
    nd = inp.dim() - 2
    scales = x[2] if len(x) > 2 and x[2] is not None and x[2].numel() else None
    sizes = x[3] if len(x) > 3 and x[3] is not None and x[3].numel() else None
    lead = (sizes[:2].tolist() == list(inp.shape[:2])) if sizes is not None else (scales[:2].tolist() == [1.0, 1.0])
    mode, ctm = _text(a.get("mode", "nearest")), _text(a.get("coordinate_transformation_mode", "half_pixel"))
    nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
    if not lead or a.get("antialias", 0) or "axes" in a or nd not in (1, 2, 3):
        raise NotImplementedError("Resize of the batch or channel axis, antialias or axes")
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        how, corners = ("linear", "bilinear", "trilinear")[nd - 1], ctm == "align_corners"
    elif mode == "cubic" and nd == 2 and ctm in ("half_pixel", "align_corners") and \
            float(a.get("cubic_coeff_a", -0.75)) == -0.75 and not a.get("exclude_outside", 0):
        how, corners = "bicubic", ctm == "align_corners"
    elif mode == "nearest" and ctm == "asymmetric" and nearest == "floor":
        how, corners = "nearest", None
    elif mode == "nearest" and ctm == "half_pixel" and nearest == "round_prefer_ceil":
        how, corners = "nearest-exact", None
    else:
        raise NotImplementedError(f"Resize mode {mode}, coordinate_transformation_mode {ctm}, nearest_mode {nearest}")
    if sizes is not None:
        return F.interpolate(inp, size=[int(v) for v in sizes[2:]], mode=how, align_corners=corners)
    return F.interpolate(inp, scale_factor=[float(v) for v in scales[2:]], mode=how, align_corners=corners,
                         recompute_scale_factor=False)


def _depth_to_space(x, a):
    n, c, h, w = x[0].shape
    b = int(a["blocksize"])
    if _text(a.get("mode", "DCR")) == "CRD":
        return F.pixel_shuffle(x[0], b)
    return x[0].reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)


def _space_to_depth(x, a):
    n, c, h, w = x[0].shape
    b = int(a["blocksize"])
    return x[0].reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4).reshape(n, c * b * b, h // b, w // b)


def _arg(fn):
    def f(x, a):
        if a.get("select_last_index", 0):
            raise NotImplementedError("ArgMax/ArgMin select_last_index")
        return fn(x[0], dim=a.get("axis", 0), keepdim=bool(a.get("keepdims", 1)))
    return f


def _gemm(x, a):
    A = x[0].transpose(-1, -2) if a.get("transA", 0) else x[0]
    B = x[1].transpose(-1, -2) if a.get("transB", 0) else x[1]
    y = a.get("alpha", 1.0) * (A @ B)
    return y + a.get("beta", 1.0) * x[2] if len(x) > 2 and x[2] is not None else y


def _clip(x, a):
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    return torch.clamp(x[0], min=None if lo is None else float(lo), max=None if hi is None else float(hi))


def _pool(kind):
    def f(x, a):
        k = a["kernel_shape"]
        nd = len(k)
        pads = list(a.get("pads", [0] * (2 * nd)))
        if pads[:nd] != pads[nd:] or a.get("ceil_mode", 0):
            raise NotImplementedError(f"{kind}Pool with asymmetric pads or ceil_mode")
        s = a.get("strides", [1] * nd)
        if kind == "Max":
            return (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1](x[0], k, s, pads[:nd])
        return (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1](
            x[0], k, s, pads[:nd], count_include_pad=bool(a.get("count_include_pad", 0)))
    return f


def _axes(x, a, i=1):
    if len(x) > i and x[i] is not None:
        return [int(v) for v in x[i].reshape(-1).tolist()]
    return a.get("axes")


def _reduce(fn):
    def f(x, a):
        axes = _axes(x, a)
        if axes is None:
            axes = list(range(x[0].dim()))
        return fn(x[0], dim=axes, keepdim=bool(a.get("keepdims", 1)))
    return f


def _reshape(x, a):
    shape = [int(v) for v in x[1].tolist()]
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x[0].reshape(shape)


def _unsqueeze(x, a):
    y = x[0]
    axes = sorted(v % (y.dim() + len(_axes(x, a))) for v in _axes(x, a))
    for ax in axes:
        y = y.unsqueeze(ax)
    return y


def _squeeze(x, a):
    axes = _axes(x, a)
    if axes is None:
        return x[0].squeeze()
    y = x[0]
    for ax in sorted((v % y.dim() for v in axes), reverse=True):
        y = y.squeeze(ax)
    return y


def _slice(x, a):
    y = x[0]
    starts, ends = x[1].tolist(), x[2].tolist()
    axes = x[3].tolist() if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = x[4].tolist() if len(x) > 4 and x[4] is not None else [1] * len(starts)
    idx = [slice(None)] * y.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st < 0:
            raise NotImplementedError("Slice with negative steps")
        n = y.shape[ax]
        idx[ax] = slice(max(min(s + n if s < 0 else s, n), 0), max(min(e + n if e < 0 else e, n), 0), st)
    return y[tuple(idx)]


def _gather(x, a):
    axis = a.get("axis", 0) % x[0].dim()
    idx = x[1].long()
    idx = torch.where(idx < 0, idx + x[0].shape[axis], idx)
    out = x[0].index_select(axis, idx.reshape(-1))
    return out.reshape((*x[0].shape[:axis], *idx.shape, *x[0].shape[axis + 1:]))


def _cast(x, a):
    return x[0].to(getattr(torch, _DTYPES[a["to"]]))


def _layernorm(x, a):
    axis = a.get("axis", -1) % x[0].dim()
    shape = x[0].shape[axis:]
    return F.layer_norm(x[0], shape, x[1] if len(x) > 1 else None, x[2] if len(x) > 2 else None,
                        a.get("epsilon", 1e-5))


def _batchnorm(x, a):
    return F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5))


def _quantize(x, a):
    zp = x[2] if len(x) > 2 and x[2] is not None else None
    lo, hi = _qrange(zp)
    rank, axis = x[0].dim(), a.get("axis", 1)
    s = _per_axis(x[1], rank, axis)
    z = _per_axis(zp.float(), rank, axis) if zp is not None else 0.0
    q = torch.clamp(_ste_round(x[0] / s) + z, lo, hi)
    return q  # float carrier of the integer value; DequantizeLinear reads it


def _dequantize(x, a):
    rank, axis = x[0].dim(), a.get("axis", 1)
    zp = x[2] if len(x) > 2 and x[2] is not None else None
    z = _per_axis(zp.float(), rank, axis) if zp is not None else 0.0
    return (x[0].float() - z) * _per_axis(x[1], rank, axis)


def _gru(x, a):
    """ONNX GRU (gates z, r, h; forward / reverse / bidirectional; layout 0 or 1; linear_before_reset either way)
    with its default activations. Outputs Y (seq, dirs, batch, H) and Y_h (dirs, batch, H); sequence_lens and
    clip are not modelled (NotImplementedError when they would change the result)."""
    if a.get("activations") not in (None, [b"Sigmoid", b"Tanh"] * 2, [b"Sigmoid", b"Tanh"]) or "clip" in a:
        raise NotImplementedError("no differentiable kernel for GRU with custom activations or clip")
    if len(x) > 4 and x[4] is not None and x[4].numel() and int(x[4].min()) != x[0].shape[1 if a.get("layout") else 0]:
        raise NotImplementedError("no differentiable kernel for GRU with varying sequence_lens")
    seq = x[0].transpose(0, 1) if a.get("layout", 0) else x[0]  # (T, N, I)
    w, r = x[1], x[2]
    hidden = r.shape[-1]
    b = x[3] if len(x) > 3 and x[3] is not None else torch.zeros(w.shape[0], 6 * hidden, dtype=seq.dtype)
    h0 = x[5] if len(x) > 5 and x[5] is not None else None
    if h0 is not None and a.get("layout", 0):
        h0 = h0.transpose(0, 1)
    reverse = a.get("direction", b"forward")
    reverse = reverse.decode() if isinstance(reverse, bytes) else reverse
    linear_before_reset = bool(a.get("linear_before_reset", 0))
    ys, hs = [], []
    for d in range(w.shape[0]):
        backward = reverse == "reverse" or (reverse == "bidirectional" and d == 1)
        wz, wr, wh = w[d].split(hidden)
        rz, rr, rh = r[d].split(hidden)
        bwz, bwr, bwh, brz, brr, brh = b[d].split(hidden)
        h = h0[d] if h0 is not None else seq.new_zeros(seq.shape[1], hidden)
        steps = range(seq.shape[0] - 1, -1, -1) if backward else range(seq.shape[0])
        out = [None] * seq.shape[0]
        for t in steps:
            xt = seq[t]
            z = torch.sigmoid(xt @ wz.T + h @ rz.T + bwz + brz)
            rt = torch.sigmoid(xt @ wr.T + h @ rr.T + bwr + brr)
            if linear_before_reset:
                cand = torch.tanh(xt @ wh.T + rt * (h @ rh.T + brh) + bwh)
            else:
                cand = torch.tanh(xt @ wh.T + (rt * h) @ rh.T + brh + bwh)
            h = (1 - z) * cand + z * h
            out[t] = h
        ys.append(torch.stack(out))
        hs.append(h)
    y, y_h = torch.stack(ys, 1), torch.stack(hs)  # (T, D, N, H), (D, N, H)
    if a.get("layout", 0):
        return [y.permute(2, 0, 1, 3), y_h.transpose(0, 1)]
    return [y, y_h]


OPS: dict[str, Any] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": lambda x, a: x[0] @ x[1],
    "Add": lambda x, a: x[0] + x[1], "Sub": lambda x, a: x[0] - x[1], "Mul": lambda x, a: x[0] * x[1],
    "Div": lambda x, a: x[0] / x[1], "Pow": lambda x, a: x[0] ** x[1],
    "Relu": lambda x, a: x[0].clamp(min=0), "Clip": _clip,
    "LeakyRelu": lambda x, a: torch.nn.functional.leaky_relu(x[0], a.get("alpha", 0.01)),
    "Sigmoid": lambda x, a: x[0].sigmoid(), "Tanh": lambda x, a: x[0].tanh(), "Erf": lambda x, a: x[0].erf(),
    "Sqrt": lambda x, a: x[0].sqrt(), "Exp": lambda x, a: x[0].exp(), "Neg": lambda x, a: -x[0],
    "HardSigmoid": lambda x, a: (a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5)).clamp(0, 1),
    "HardSwish": lambda x, a: x[0] * (x[0] / 6 + 0.5).clamp(0, 1),
    "Softmax": lambda x, a: x[0].softmax(a.get("axis", -1)),
    "LogSoftmax": lambda x, a: x[0].log_softmax(a.get("axis", -1)),
    "ConvTranspose": _conv_transpose, "Resize": _resize,
    "DepthToSpace": _depth_to_space, "SpaceToDepth": _space_to_depth,
    "ArgMax": _arg(torch.argmax), "ArgMin": _arg(torch.argmin),
    "GlobalAveragePool": lambda x, a: x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda x, a: x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True),
    "AveragePool": _pool("Average"), "MaxPool": _pool("Max"),
    "Flatten": lambda x, a: x[0].reshape(int(np.prod(x[0].shape[:a.get("axis", 1)])), -1),
    "Reshape": _reshape, "Transpose": lambda x, a: x[0].permute(*a.get("perm", range(x[0].dim() - 1, -1, -1))),
    "Concat": lambda x, a: torch.cat(x, a["axis"]),
    "ReduceMean": _reduce(lambda t, dim, keepdim: t.mean(dim=dim, keepdim=keepdim)),
    "ReduceSum": _reduce(lambda t, dim, keepdim: t.sum(dim=dim, keepdim=keepdim)),
    "Identity": lambda x, a: x[0], "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Slice": _slice, "Cast": _cast,
    "Shape": lambda x, a: torch.tensor(list(x[0].shape), dtype=torch.int64),
    "Gather": _gather,
    "Where": lambda x, a: torch.where(x[0].bool(), x[1], x[2]),
    "Equal": lambda x, a: x[0] == x[1],
    "Expand": lambda x, a: x[0].broadcast_to(torch.broadcast_shapes(
        x[0].shape, tuple(int(v) for v in x[1].tolist()))),
    "ReduceL2": _reduce(lambda t, dim, keepdim: (t * t).sum(dim=dim, keepdim=keepdim).sqrt()),
    "ReduceMax": _reduce(lambda t, dim, keepdim: t.amax(dim=dim, keepdim=keepdim)),
    "Max": lambda x, a: functools.reduce(torch.maximum, x),
    "Min": lambda x, a: functools.reduce(torch.minimum, x),
    "Abs": lambda x, a: x[0].abs(), "Log": lambda x, a: x[0].log(), "Reciprocal": lambda x, a: 1 / x[0],
    "Not": lambda x, a: ~x[0], "Less": lambda x, a: x[0] < x[1], "Greater": lambda x, a: x[0] > x[1],
    "ConstantOfShape": lambda x, a: torch.full(
        tuple(int(v) for v in x[0].tolist()), float(np.array(numpy_helper.to_array(a["value"])).
                                                   reshape(-1)[0]) if "value" in a else 0.0),
    "LayerNormalization": _layernorm, "BatchNormalization": _batchnorm, "GRU": _gru,
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
}


@dataclass
class QLayer:
    """A trainable int8 weight (and its int32 bias) of the QDQ graph."""

    node: str  # the Conv/Gemm/MatMul reading it
    q_name: str  # int8 weight initializer
    dq_out: str  # the weight DequantizeLinear's output
    scale: np.ndarray  # broadcastable to the weight
    zero: np.ndarray
    qmin: int
    qmax: int
    base: np.ndarray  # fp32 weight / scale + zero (continuous int8 coordinate)
    bias_name: str | None = None  # int32 bias initializer under a DequantizeLinear
    bias_out: str | None = None
    bias_scale: np.ndarray | None = None
    bias_base: np.ndarray | None = None  # the QDQ graph's bias, float
    bias_unit: np.ndarray | None = None  # step of the learned bias offset


class TorchGraph:
    """Evaluate an ONNX graph with torch; `params()` are the learned offsets of the trainable layers."""

    def __init__(self, model: Any, layers: list[QLayer], learn_ranges: bool = False, levels: float = 1.0) -> None:
        self.levels = float(levels)  # how far (in int8 levels) a weight may move from its fp32 value
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in model.graph.node]
        missing = sorted({op for op, *_ in self.nodes if op not in OPS} - {"Constant"})
        if missing:
            raise NotImplementedError(f"no differentiable kernel for {', '.join(missing)}")
        self.consts: dict[str, Any] = {}
        for t in model.graph.initializer:
            self.consts[t.name] = torch.as_tensor(np.array(numpy_helper.to_array(t)))
        for op, _, outs, a in self.nodes:
            if op == "Constant":
                self.consts[outs[0]] = torch.as_tensor(np.array(numpy_helper.to_array(a["value"])))
        self.outputs = [o.name for o in model.graph.output]
        self.fused = self._fusable()
        q_input = {outs[0]: ins[0] for op, ins, outs, _ in self.nodes if op == "QuantizeLinear"}
        # learned activation scales (LSQ, Esser et al. 2020): scale = calibrated scale * exp(rho)
        self.rho = {q_input[o]: torch.zeros((), requires_grad=True) for o in self.fused} if learn_ranges else {}
        self._act = {o: q_input[o] for o in self.fused}
        self.layers = layers
        self.delta = {la.dq_out: torch.zeros(la.base.shape, requires_grad=True) for la in layers}
        self.beta = {la.bias_out: torch.zeros(la.bias_base.shape, requires_grad=True)
                     for la in layers if la.bias_out is not None}
        self._w = {la.dq_out: la for la in layers}
        self._b = {la.bias_out: la for la in layers if la.bias_out is not None}
        self._t = {la.dq_out: (torch.as_tensor(la.base, dtype=torch.float32),
                               torch.as_tensor(la.scale, dtype=torch.float32),
                               torch.as_tensor(la.zero, dtype=torch.float32)) for la in layers}

    def _fusable(self) -> dict[str, tuple[float, int, int, int]]:
        """Per-tensor QuantizeLinear outputs read only by DequantizeLinear nodes with the same constant scale
        and zero point: out -> (scale, zero point, qmin, qmax), run as one fused fake-quantization."""
        readers: dict[str, list[tuple]] = {}
        for node in self.nodes:
            for i in node[1]:
                readers.setdefault(i, []).append(node)
        fused = {}
        for op, ins, outs, _ in self.nodes:
            if op != "QuantizeLinear" or len(ins) < 2 or ins[1] not in self.consts:
                continue
            zp = self.consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
            if self.consts[ins[1]].numel() != 1 or (len(ins) > 2 and ins[2] and zp is None):
                continue
            rs = readers.get(outs[0], [])
            if rs and outs[0] not in self.outputs and all(r[0] == "DequantizeLinear" and r[1][1:] == ins[1:] for r in rs):
                lo, hi = _qrange(zp)
                fused[outs[0]] = (float(self.consts[ins[1]]), int(zp) if zp is not None else 0, lo, hi)
        return fused

    def params(self) -> list[Any]:
        return [*self.delta.values(), *self.beta.values()]

    def project(self) -> None:
        """Keep every weight offset within one int8 level of the fp32 value (after each optimizer step)."""
        with torch.no_grad():
            for d in self.delta.values():
                d.clamp_(-self.levels, self.levels)

    def scales(self) -> dict[str, float]:
        """Activation tensor -> its learned scale (empty unless learn_ranges)."""
        return {self._act[o]: v[0] * math.exp(float(self.rho[self._act[o]].detach())) for o, v in self.fused.items()
                if self._act[o] in self.rho}

    def weight(self, la: QLayer) -> Any:
        base, s, z = self._t[la.dq_out]
        q = torch.clamp(_ste_round(base + self.delta[la.dq_out].clamp(-self.levels, self.levels)), la.qmin, la.qmax)
        return (q - z) * s

    def bias(self, la: QLayer) -> Any:
        return torch.as_tensor(la.bias_base, dtype=torch.float32) + self.beta[la.bias_out] * torch.as_tensor(
            la.bias_unit, dtype=torch.float32)

    def __call__(self, feeds: dict[str, Any]) -> list[Any]:
        env: dict[str, Any] = dict(self.consts)
        env.update(feeds)
        for op, ins, outs, a in self.nodes:
            if op == "Constant":
                continue
            if outs[0] in self._w:
                env[outs[0]] = self.weight(self._w[outs[0]])
                continue
            if outs[0] in self._b:
                env[outs[0]] = self.bias(self._b[outs[0]])
                continue
            if op == "QuantizeLinear" and outs[0] in self.fused:
                env[outs[0]] = env[ins[0]]  # DequantizeLinear applies the fused fake-quantization
                continue
            if op == "DequantizeLinear" and ins[0] in self.fused:
                s, z, lo, hi = self.fused[ins[0]]
                rho = self.rho.get(self._act[ins[0]])
                if rho is None:
                    env[outs[0]] = torch.fake_quantize_per_tensor_affine(env[ins[0]], s, z, lo, hi)
                else:
                    x = env[ins[0]]
                    env[outs[0]] = torch._fake_quantize_learnable_per_tensor_affine(
                        x, (s * rho.exp()).reshape(1), torch.tensor([float(z)]), lo, hi,
                        1.0 / math.sqrt(x.numel() * hi))
                continue
            y = OPS[op]([env[i] if i else None for i in ins], a)
            if isinstance(y, (list, tuple)):
                env.update(zip(outs, y))
            else:
                env[outs[0]] = y
        return [env[o] for o in self.outputs]

    def learned(self) -> dict[str, tuple[QLayer, np.ndarray, np.ndarray | None]]:
        """node -> (layer, int8 weights, float bias) at the current offsets."""
        out = {}
        with torch.no_grad():
            for la in self.layers:
                base, _, _ = self._t[la.dq_out]
                q = torch.clamp(torch.round(base + self.delta[la.dq_out].clamp(-self.levels, self.levels)), la.qmin, la.qmax)
                b = self.bias(la).numpy().astype(np.float64) if la.bias_out is not None else None
                out[la.node] = (la, q.numpy(), b)
        return out
