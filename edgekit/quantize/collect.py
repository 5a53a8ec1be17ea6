"""Streaming activation statistics: one sample at a time, so memory stays bounded whatever N is.

ONNX Runtime's own calibrators keep every intermediate output of every sample in a list before
reducing it (HistogramCalibrater.collect_data), i.e. O(N x activations) memory. Here the float
activations are exposed as extra graph outputs, each sample is run alone, and its tensors are folded
at once into a running min/max and a fixed-size histogram per tensor (`TensorStats`); the sample's
activations are then dropped. Memory: one sample's activations + BINS counters per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.data import SampleSet
from edgekit.errors import DataError
from edgekit.progress import Progress

BINS = 2048  # histogram bins over [-T, T]; T doubles (merging bin pairs exactly) when a sample exceeds it
FLOAT_TYPES = (1, 10, 16)  # onnx TensorProto FLOAT, FLOAT16, BFLOAT16


@dataclass
class TensorStats:
    """Running min/max and a symmetric histogram over [-limit, limit] of one activation tensor."""

    lo: float = np.inf
    hi: float = -np.inf
    limit: float = 0.0
    hist: np.ndarray | None = field(default=None, repr=False)
    count: int = 0
    channel_sum: np.ndarray | None = field(default=None, repr=False)  # per-channel sums (bias correction)
    channel_n: int = 0

    def update_channels(self, arr: np.ndarray, axis: int) -> None:
        a = np.asarray(arr, dtype=np.float64)
        axis = axis % a.ndim
        moved = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
        s = moved.sum(axis=0)
        if self.channel_sum is None or self.channel_sum.shape != s.shape:
            self.channel_sum, self.channel_n = s, moved.shape[0]
        else:
            self.channel_sum += s
            self.channel_n += moved.shape[0]

    def channel_mean(self) -> np.ndarray | None:
        return None if self.channel_sum is None else self.channel_sum / max(self.channel_n, 1)

    def update(self, arr: np.ndarray, histogram: bool) -> None:
        x = np.asarray(arr, dtype=np.float32).ravel()
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            x = x[np.isfinite(x)]
            if x.size == 0:
                return
            lo, hi = float(x.min()), float(x.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.count += x.size
        if not histogram:
            return
        amax = max(abs(lo), abs(hi))
        if self.hist is None:
            self.limit = amax if amax > 0 else 1e-8
            self.hist = np.zeros(BINS, np.int64)
        elif amax > self.limit:
            self._grow(amax)
        idx = (x * np.float32(BINS / (2 * self.limit)) + np.float32(BINS / 2)).astype(np.int64)
        np.clip(idx, 0, BINS - 1, out=idx)
        self.hist += np.bincount(idx, minlength=BINS)

    def _grow(self, amax: float) -> None:
        """Double the limit until amax fits; bin pairs merge exactly, the old range moves to the centre."""
        hist, limit = self.hist, self.limit
        while amax > limit:
            merged = hist.reshape(-1, 2).sum(axis=1)  # BINS/2 bins of twice the width
            hist = np.zeros(BINS, np.int64)
            hist[BINS // 4 : BINS // 4 + BINS // 2] = merged
            limit *= 2
        self.hist, self.limit = hist, limit

    def centers(self) -> np.ndarray:
        width = 2 * self.limit / BINS
        return (np.arange(BINS) + 0.5) * width - self.limit


def float_activations(model: Any) -> list[str]:
    """Names of the float tensors computed by the graph (graph inputs and node outputs, no initializers)."""
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*graph.value_info, *graph.input, *graph.output)}
    inits = {t.name for t in graph.initializer}
    names: list[str] = []
    seen: set[str] = set()
    for vi in graph.input:
        if vi.name not in inits and types.get(vi.name) in FLOAT_TYPES:
            names.append(vi.name)
            seen.add(vi.name)
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        for out in node.output:
            if out and out not in seen and types.get(out) in FLOAT_TYPES:
                names.append(out)
                seen.add(out)
    return names


def exposed_model(model: Any, tensors: list[str]) -> Any:
    """A copy of the model that also outputs `tensors` (types from value_info)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    infos = {vi.name: vi for vi in (*m.graph.value_info, *m.graph.input)}
    for name in tensors:
        if name in have:
            continue
        if name in infos:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(infos[name])
        else:
            vi = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        m.graph.output.append(vi)
    return m


def session(model_or_path: Any, threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # FATAL only: a failing run raises with its message; ORT also logged it in red
    if threads:
        so.intra_op_num_threads = threads
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_checked(sess: Any, feed: dict[str, np.ndarray], where: str, names: list[str] | None = None) -> list[np.ndarray]:
    try:
        return sess.run(names, feed)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad feeds
        msg = str(exc).splitlines()[0][:300]
        expect = ", ".join(f"{i.name}{tuple(i.shape)} {i.type}" for i in sess.get_inputs())
        got = ", ".join(f"{k}{tuple(v.shape)} {v.dtype}" for k, v in feed.items())
        raise DataError(f"{where}: the model rejects a sample ({msg}); model expects {expect}, sample has {got}",
                        hint="give data matching the model inputs") from exc


def collect(model: Any, samples: SampleSet, *, histogram: bool, label: str = "calibrating",
            channel_axes: dict[str, int] | None = None) -> dict[str, TensorStats]:
    """Run every sample through the model, folding each float activation into its TensorStats.

    channel_axes: tensors whose per-channel mean is also kept (name -> channel axis).
    """
    channel_axes = channel_axes or {}
    tensors = float_activations(model)
    sess = session(exposed_model(model, tensors))
    stats = {name: TensorStats() for name in tensors}
    with Progress(label, total=len(samples)) as progress:
        for feed in samples:
            outs = run_checked(sess, feed, samples.description, tensors)
            for name, arr in zip(tensors, outs):
                stats[name].update(arr, histogram)
                if name in channel_axes and np.ndim(arr) > 0:
                    stats[name].update_channels(arr, channel_axes[name])
            del outs
            progress.update()
    return stats
