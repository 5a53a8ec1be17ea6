"""Roofline latency estimate for a device that is not attached: always labelled "estimate": true.

Per layer, from the graph: MACs (Conv, ConvTranspose, Gemm/MatMul and their quantized forms) and bytes
moved (inputs incl. weights + outputs, at their stored width). A layer takes
    max(2 * MACs / peak_ops(precision), bytes / memory bandwidth)
with the device profile's peak fp32 / int8 rate of the chosen unit (scaled by threads / cores) and
its bandwidth. In a QDQ graph Quantize/DequantizeLinear are folded into their neighbours (as the
runtimes do): a layer whose weights come through DequantizeLinear of an int8 tensor runs at the int8
rate and moves 1-byte tensors. The sum is an ideal lower bound (`roofline_ms`); `estimate_ms` divides it
by the profile's `[roofline] efficiency` (the fraction of the roofline real runtimes reach, calibrated
on this host by benchmarks/profile.py), 1.0 when the profile has none.

Result: artifact, device, device_kind="estimate", estimate=true, estimate_ms (also in p50_ms and mean_ms),
roofline_ms, efficiency, unit, threads, macs, bytes, peak_gops {fp32, int8}, memory_bandwidth_gbs,
bound_by {compute, memory}, layers (per-layer summary, unit = compute-bound | memory-bound), and null
for the measured-only figures (load_ms, first_ms, std_ms, min_ms, p90_ms, p99_ms, peak_memory_mb).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, DeviceError, ModelLoadError, UsageError
from edgekit.profile.devices import DeviceProfile
from edgekit.profile.layers import summarize_layers

_FUSED_ACT = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "BatchNormalization"}
# op -> index of (activation input, weight input); MACs = output elements x reduction size
_CONV = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_MATMUL = {"MatMul": (0, 1), "Gemm": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "QGemm": (0, 3)}
_FREE = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",
         "Shape", "Constant"}


def _shapes(model: Any) -> tuple[dict[str, tuple[list[int], int]], dict[str, Any]]:
    """name -> (shape, element size in bytes), after shape inference on concrete input shapes."""
    from onnx import helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = 1 if i == 0 else 16
    try:
        from edgekit.onnx_shapes import infer_shapes

        model = infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"shape inference failed, cannot estimate: {exc}") from exc
    out: dict[str, tuple[list[int], int]] = {}

    def add(name: str, elem_type: int, dims: list[int]) -> None:
        try:
            size = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
        except Exception:  # noqa: BLE001
            size = 4
        out[name] = (dims, size)

    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            add(vi.name, tt.elem_type, [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim])
    for t in model.graph.initializer:
        add(t.name, t.data_type, list(t.dims))
    return out, {"inits": inits, "model": model}


def analyze_onnx(path: Path) -> list[dict[str, Any]]:
    """Per-node rows: name, op_type, macs, bytes, precision (fp32 | int8)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: not a readable ONNX model: {exc}") from exc
    shapes, ctx = _shapes(model)
    graph = ctx["model"].graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def nbytes(name: str) -> int:
        """Bytes of a tensor as stored; a DequantizeLinear output counts at its quantized input's width."""
        if not name or name not in shapes:
            return 0
        src = producer.get(name)
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in shapes:
            name = src.input[0]
        dims, size = shapes[name]
        outs = consumers.get(name, [])
        if outs and all(c.op_type == "QuantizeLinear" for c in outs) and src is not None \
                and src.op_type not in ("DequantizeLinear",):
            size = 1  # written once, fused with its QuantizeLinear
        return int(np.prod(dims, dtype=np.int64)) * size

    def quantized(name: str) -> bool:
        src = producer.get(name)
        if src is not None and src.op_type == "DequantizeLinear":
            return True
        return name in shapes and shapes[name][1] == 1

    def real_producer(name: str) -> Any:
        src = producer.get(name)
        while src is not None and src.op_type in ("QuantizeLinear", "DequantizeLinear"):
            src = producer.get(src.input[0])
        return src

    rows = []
    for n in graph.node:
        if n.op_type in _FREE:
            continue
        src = real_producer(n.input[0]) if n.input else None
        if n.op_type in _FUSED_ACT and src is not None and \
                (src.op_type in _CONV or src.op_type in _MATMUL or src.op_type == "ConvTranspose"):
            continue  # runtimes fuse the activation into the conv / gemm before it
        macs = 0
        precision = "fp32"
        if n.op_type in _CONV or n.op_type in _MATMUL or n.op_type == "ConvTranspose":
            a_idx, w_idx = (_CONV.get(n.op_type) or _MATMUL.get(n.op_type) or (0, 1))
            out_dims = shapes.get(n.output[0], ([], 4))[0]
            w_dims = shapes.get(n.input[w_idx], ([], 4))[0] if len(n.input) > w_idx else []
            a_dims = shapes.get(n.input[a_idx], ([], 4))[0]
            out_elems = int(np.prod(out_dims, dtype=np.int64)) if out_dims else 0
            if n.op_type in _CONV and len(w_dims) >= 3:
                macs = out_elems * int(np.prod(w_dims[1:], dtype=np.int64))  # Cin/group x kernel
            elif n.op_type == "ConvTranspose" and len(w_dims) >= 3:
                macs = int(np.prod(a_dims, dtype=np.int64)) * int(np.prod(w_dims[1:], dtype=np.int64))
            elif a_dims:
                k = a_dims[-1]
                if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
                    k = a_dims[0]
                macs = out_elems * int(k)
            if n.op_type in ("ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul", "QGemm") or \
                    (len(n.input) > w_idx and quantized(n.input[w_idx]) and quantized(n.input[a_idx])):
                precision = "int8"
        elif n.op_type not in _MATMUL and all(quantized(i) for i in n.input if i and i in shapes):
            precision = "int8"
        moved = sum(nbytes(i) for i in n.input if i) + sum(nbytes(o) for o in n.output if o)
        ops = 2 * macs if macs else int(sum(np.prod(shapes[o][0], dtype=np.int64) for o in n.output if o in shapes))
        rows.append({"name": n.name or f"{n.op_type}_{len(rows)}", "op_type": n.op_type, "macs": int(macs),
                     "ops": int(ops), "bytes": int(moved), "precision": precision})
    return rows


def estimate_rows(rows: list[dict[str, Any]], profile: DeviceProfile, unit: str, threads: int | None) -> dict:
    unit = unit.upper()
    where = f" ({profile.source})" if profile.source else ""
    fill = (f"for an estimate add memory_bandwidth_gbs and [units.{unit}] peak_fp32_gops to the profile; to measure "
            "on the device, an [access] host (ssh) or serial (adb)")
    if not profile.units:  # a profile that can be neither reached nor estimated: its file is incomplete
        raise ConfigError(f"device profile '{profile.name}'{where} has no rates and no access", hint=fill)
    if unit not in profile.units:
        raise DeviceError(f"device profile '{profile.name}' has no {unit} rates",
                          hint=f"its units: {', '.join(profile.units) or 'none'}")
    peaks = {p: profile.peak_gops(unit, p) for p in ("fp32", "int8")}
    bw = profile.memory_bandwidth_gbs
    if not peaks["fp32"] or not bw:
        raise ConfigError(f"device profile '{profile.name}'{where} lacks peak_fp32_gops or memory_bandwidth_gbs for "
                          f"{unit}", hint=fill)
    scale = 1.0
    if threads and profile.cores and unit == "CPU":
        scale = min(threads, profile.cores) / profile.cores
    bound = {"compute": 0, "memory": 0}
    out_rows = []
    for i, r in enumerate(rows):
        peak = (peaks[r["precision"]] or peaks["fp32"]) * 1e9 * scale
        t_compute = r["ops"] / peak
        t_mem = r["bytes"] / (bw * 1e9)
        kind = "compute" if t_compute >= t_mem else "memory"
        bound[kind] += 1
        out_rows.append({**r, "ms": max(t_compute, t_mem) * 1e3, "unit": f"{kind}-bound ({r['precision']})",
                         "order": i})
    return {"rows": out_rows, "peaks": peaks, "bandwidth": bw, "scale": scale, "bound": bound}


def estimate_artifact(path: Path, profile: DeviceProfile | None, *, unit: str = "CPU",
                      threads: int | None = None) -> dict[str, Any]:
    if profile is None:
        raise UsageError("an estimate needs a device profile", hint="use --device NAME (see `edgekit devices`)")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        rows = analyze_onnx(path)
    elif suffix == ".tflite":
        from edgekit.profile.roofline_tflite import analyze_tflite

        rows = analyze_tflite(path)
    elif suffix == ".xml":
        from edgekit.profile.roofline_openvino import analyze_openvino

        rows = analyze_openvino(path)
    else:
        raise UsageError(f"{path.name}: roofline estimates read ONNX, OpenVINO IR or TFLite graphs",
                         hint="estimate the .onnx, .xml or .tflite artifact of the same model")
    est = estimate_rows(rows, profile, unit, threads)
    roof_ms = sum(r["ms"] for r in est["rows"])
    efficiency = float(profile.extra.get("roofline", {}).get("efficiency", 1.0))
    estimate_ms = roof_ms / efficiency
    layers = summarize_layers({"rows": est["rows"], "runs": 0, "source": "roofline estimate (not measured)"})
    return {
        "artifact": str(path),
        "device": f"{profile.name} (not measured: roofline estimate)",
        "device_kind": "estimate",
        "device_profile": profile.name,
        "unit": unit.upper(),
        "estimate": True,
        "estimate_ms": estimate_ms,
        "roofline_ms": roof_ms,
        "efficiency": efficiency,
        "mean_ms": estimate_ms, "p50_ms": estimate_ms,
        "load_ms": None, "first_ms": None, "std_ms": None, "min_ms": None, "max_ms": None,
        "p90_ms": None, "p99_ms": None, "peak_memory_mb": None, "runs": 0,
        "threads": threads,
        "macs": int(sum(r["macs"] for r in rows)),
        "bytes": int(sum(r["bytes"] for r in rows)),
        "int8_macs_share": (sum(r["macs"] for r in rows if r["precision"] == "int8") /
                            max(sum(r["macs"] for r in rows), 1)),
        "peak_gops": est["peaks"], "peak_scale": est["scale"],
        "memory_bandwidth_gbs": est["bandwidth"],
        "bound_by": est["bound"],
        "runtime": {"name": "roofline", "version": None, "options": {"unit": unit.upper()}},
        "layers": layers,
        "complete": True,
    }
