#!/usr/bin/env python3
"""edgekit's self-contained latency runner. It needs only the standard library, numpy and the runtime
that loads the artifact (onnxruntime, openvino, or ai-edge-litert / tflite-runtime): it is copied as
is to remote devices and run there with the device's Python, and run the same way, in a fresh
process, on this host (so peak memory is that of one clean process).

    python3 runner.py --model model.onnx [--feeds feeds.npz] [--runs 50] [--warmup 5] [--threads N]
                      [--unit CPU|GPU|NPU] [--provider NAME] [--no-xnnpack] [--delegate LIB.so]
                      [--hint latency|throughput] [--per-layer N]

It prints one JSON object per line on stdout, flushed as soon as it is known, so a run that dies
midway (a device that disconnects) still leaves the runs already measured:
    {"event": "meta", "runtime": {...}, "device": "...", "inputs": [...], "load_ms": ...}
    {"event": "first", "ms": ...}
    {"event": "run", "i": 0, "ms": ...}            one per timed run
    {"event": "layers", "rows": [...], "runs": k}  with --per-layer (rows: name, op_type, ms, unit)
    {"event": "done", "peak_memory_mb": ..., "rss_before_load_mb": ...}
    {"event": "error", "kind": "...", "message": "...", "available": [...]}   then exit code 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time

try:
    import numpy as np
except ImportError:  # report it in the protocol rather than as a traceback
    sys.stdout.write(json.dumps({"event": "error", "kind": "missing_runtime",
                                 "message": f"numpy is not installed for {sys.executable}"}) + "\n")
    sys.exit(3)

UNAVAILABLE = "device_unavailable"
BAD_MODEL = "bad_model"
MISSING_RUNTIME = "missing_runtime"
BAD_INPUT = "bad_input"
RUN_FAILED = "run_failed"  # the runtime loaded the artifact but failed running it on the feeds


class RunnerError(Exception):
    def __init__(self, kind: str, message: str, available: list | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.available = kind, message, available


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def memory_mb() -> tuple[float | None, float | None]:
    """(current RSS, RSS high-water mark) of this process in MiB."""
    rss = hwm = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024.0
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if hwm is None:
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            hwm = peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
        except Exception:  # noqa: BLE001
            pass
    return rss, hwm


# ------------------------------------------------------------------ feeds

def adapt(arr: np.ndarray, shape: list, dtype: str, quant: dict | None) -> np.ndarray:
    """Bring a feed given in the source model's convention (NCHW float) to the artifact's own input:
    NCHW -> NHWC when only that matches, float -> int8/uint8 with the input's scale/zero point."""
    want = [d if isinstance(d, int) and d > 0 else None for d in shape]

    def fits(a: np.ndarray) -> bool:
        return len(a.shape) == len(want) and all(w is None or w == s for w, s in zip(want, a.shape))

    if not fits(arr) and arr.ndim == 4 and fits(arr.transpose(0, 2, 3, 1)):
        arr = arr.transpose(0, 2, 3, 1)
    if not fits(arr):
        raise RunnerError(BAD_INPUT, f"feed of shape {list(arr.shape)} does not fit the input shape {shape}")
    target = np.dtype(dtype)
    if target.kind in "iu" and arr.dtype.kind == "f" and quant and quant.get("scale"):
        scale, zp = float(quant["scale"][0]), int(quant["zero_point"][0])
        info = np.iinfo(target)
        arr = np.clip(np.round(arr / scale) + zp, info.min, info.max)
    return np.ascontiguousarray(arr.astype(target, copy=False))


def synthetic(specs: list[dict], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feed = {}
    for s in specs:
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 16) for i, d in enumerate(s["shape"])]
        dt = np.dtype(s["dtype"])
        if dt.kind in "iu":
            feed[s["name"]] = rng.integers(0, 100, size=shape).astype(dt)
        elif dt.kind == "b":
            feed[s["name"]] = np.ones(shape, dtype=dt)
        else:
            feed[s["name"]] = rng.standard_normal(shape).astype(dt)
    return feed


def load_feeds(path: str | None, specs: list[dict]) -> list[dict]:
    if not path:
        return [synthetic(specs)]
    data = np.load(path)
    count = int(data["__count__"]) if "__count__" in data.files else 1
    order = [str(x) for x in data["__order__"]] if "__order__" in data.files else []
    feeds = []
    for i in range(count):
        feed = {}
        for j, s in enumerate(specs):
            key = f"{i}/{s['name']}"
            if key not in data.files and len(order) == len(specs):
                key = f"{i}/{order[j]}"  # the artifact renamed its inputs (e.g. serving_default_x:0): by position
            if key not in data.files:
                raise RunnerError(BAD_INPUT, f"feeds file has no array for input '{s['name']}'")
            feed[s["name"]] = adapt(data[key], s["shape"], s["dtype"], s.get("quantization"))
        feeds.append(feed)
    return feeds


# ------------------------------------------------------------------ ONNX Runtime

ORT_UNIT_PROVIDERS = {
    "NPU": ["QNNExecutionProvider", "OpenVINOExecutionProvider", "VitisAIExecutionProvider"],
    "GPU": ["CUDAExecutionProvider", "DmlExecutionProvider", "ROCMExecutionProvider", "OpenVINOExecutionProvider",
            "CoreMLExecutionProvider"],
    "CPU": ["CPUExecutionProvider"],
}


class OrtRunner:
    name = "onnxruntime"

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError(MISSING_RUNTIME, f"onnxruntime is not installed for {sys.executable}") from exc
        self.ort, self.args = ort, args
        available = ort.get_available_providers()
        self.providers = self._pick_providers(args, available)
        self.sess = self._session(profiling=False)
        used = self.sess.get_providers()
        if self.providers[0][0] not in used:
            raise RunnerError(UNAVAILABLE, f"{self.providers[0][0]} did not initialise", available)
        self.inputs = [{"name": i.name, "shape": list(i.shape), "dtype": _ort_dtype(i.type)}
                       for i in self.sess.get_inputs()]

    def _pick_providers(self, args: argparse.Namespace, available: list[str]) -> list[tuple[str, dict]]:
        unit = (args.unit or "CPU").upper()
        if args.provider:
            want = args.provider if args.provider.endswith("ExecutionProvider") else args.provider + "ExecutionProvider"
            match = [p for p in available if p.lower() == want.lower()]
            if not match:
                raise RunnerError(UNAVAILABLE, f"execution provider {want} is not available in this onnxruntime",
                                  available)
            chosen = match[0]
        else:
            cands = [p for p in ORT_UNIT_PROVIDERS.get(unit, []) if p in available]
            if not cands:
                raise RunnerError(UNAVAILABLE, f"no onnxruntime execution provider for {unit} here "
                                  f"(looked for {', '.join(ORT_UNIT_PROVIDERS.get(unit, []))})", available)
            chosen = cands[0]
        opts: dict = {}
        if chosen == "OpenVINOExecutionProvider":
            opts = {"device_type": unit if unit in ("CPU", "GPU", "NPU") else "CPU"}
        elif chosen == "QNNExecutionProvider":
            opts = {"backend_path": "QnnHtp.dll" if os.name == "nt" else "libQnnHtp.so"}
        out = [(chosen, opts)]
        if chosen != "CPUExecutionProvider":
            out.append(("CPUExecutionProvider", {}))
        return out

    def _session(self, profiling: bool):
        so = self.ort.SessionOptions()
        if self.args.threads:
            so.intra_op_num_threads = self.args.threads
        if profiling:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="edgekit-ortprof-"), "ort")
        try:
            return self.ort.InferenceSession(self.args.model, sess_options=so,
                                             providers=[p for p, _ in self.providers],
                                             provider_options=[o for _, o in self.providers])
        except Exception as exc:  # noqa: BLE001
            # the version: a device's older runtime (a board's onnxruntime 1.16 and an opset-21 model) is the usual cause
            raise RunnerError(BAD_MODEL, f"onnxruntime {self.ort.__version__} cannot load "
                              f"{os.path.basename(self.args.model)}: {exc}") from exc

    def info(self) -> dict:
        return {"name": "onnxruntime", "version": self.ort.__version__,
                "providers": self.sess.get_providers(),
                "options": {"intra_op_num_threads": self.args.threads or 0,
                            "graph_optimization_level": "ORT_ENABLE_ALL",
                            "provider_options": {p: o for p, o in self.providers if o}},
                "unit": (self.args.unit or "CPU").upper()}

    def device_name(self) -> str:
        return self.providers[0][0]

    def prepare(self, feed: dict):
        return feed

    def bind(self, prepared) -> None:
        self.feed = prepared  # ORT takes the feeds in the call itself (no copy for CPU numpy arrays)

    def run(self) -> None:
        self.sess.run(None, self.feed)

    def layers(self, feeds: list, runs: int) -> dict:
        sess = self._session(profiling=True)
        for i in range(runs + 1):
            sess.run(None, feeds[i % len(feeds)])
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
        shutil.rmtree(os.path.dirname(os.path.abspath(path)), ignore_errors=True)
        # ORT names per-node kernel events "<node>_kernel_time"; the first run (index 0) is skipped as warm-up.
        per_node: dict[str, dict] = {}
        run_idx = -1
        for ev in events:
            if ev.get("cat") == "Session" and ev.get("name") == "model_run":
                run_idx += 1
            if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
                continue
            a = ev.get("args", {})
            name = ev["name"][: -len("_kernel_time")]
            row = per_node.setdefault(name, {"name": name, "op_type": a.get("op_name", "?"),
                                             "unit": a.get("provider", "?"), "us": [], "order": len(per_node)})
            row["us"].append(float(ev.get("dur", 0)))
        rows = []
        for row in per_node.values():
            us = row.pop("us")
            kept = us[1:] if len(us) > 1 else us
            rows.append({**row, "ms": sum(kept) / len(kept) / 1000.0})
        return {"rows": rows, "runs": runs, "source": "onnxruntime session profiling (enable_profiling)"}


def _ort_dtype(t: str) -> str:
    table = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
             "tensor(bool)": "bool"}
    return table.get(t, "float32")


# ------------------------------------------------------------------ OpenVINO

class OvRunner:
    name = "openvino"

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RunnerError(MISSING_RUNTIME, f"openvino is not installed for {sys.executable}") from exc
        self.ov, self.args = ov, args
        self.core = ov.Core()
        available = list(self.core.available_devices)
        unit = (args.unit or "CPU").upper()
        match = [d for d in available if d == unit or d.split(".")[0] == unit]
        if not match:
            raise RunnerError(UNAVAILABLE, f"OpenVINO device {unit} is not available here", available)
        self.device = match[0]
        try:
            self.model = self.core.read_model(args.model)
        except Exception as exc:  # noqa: BLE001
            raise RunnerError(BAD_MODEL, f"openvino {ov.get_version()} cannot read {os.path.basename(args.model)}: "
                              f"{exc}") from exc
        self.static_shapes = self._static_shapes(args.feeds)
        self.compiled = self._compile(profiling=False)
        self.request = self.compiled.create_infer_request()
        self.inputs = []
        for port in self.model.inputs:
            ps = port.get_partial_shape()
            shape = [d.get_length() if d.is_static else None for d in ps]
            self.inputs.append({"name": port.get_any_name(), "shape": shape,
                                "dtype": np.dtype(port.get_element_type().to_dtype()).name})

    def _static_shapes(self, feeds: str | None) -> dict | None:
        """Dynamic inputs are fixed to the feeds' shapes before compiling, as a deployment (and benchmark_app
        -shape) would: OpenVINO picks better kernels for static shapes."""
        if not feeds or all(p.get_partial_shape().is_static for p in self.model.inputs):
            return None
        data = np.load(feeds)
        shapes = {}
        for port in self.model.inputs:
            name = port.get_any_name()
            arr = data[f"0/{name}"] if f"0/{name}" in data.files else None
            if arr is not None and arr.ndim == port.get_partial_shape().rank.get_length():
                shapes[name] = list(arr.shape)
        if shapes:
            self.model.reshape(shapes)
        return shapes or None

    def _compile(self, profiling: bool):
        config: dict = {"PERFORMANCE_HINT": (self.args.hint or "latency").upper()}
        if self.args.threads and self.device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = int(self.args.threads)
        if self.args.pin is not None and self.device.startswith("CPU"):
            config["ENABLE_CPU_PINNING"] = self.args.pin == "yes"
        if self.device.startswith("CPU"):  # the precision verification ran at: a bf16-capable CPU would otherwise
            config["INFERENCE_PRECISION_HINT"] = "f32"  # time bf16 kernels whose numbers nobody checked
        if profiling:
            config["PERF_COUNT"] = True
        self.config = config
        try:
            return self.core.compile_model(self.model, self.device, config)
        except Exception as exc:  # noqa: BLE001
            raise RunnerError(BAD_MODEL, f"openvino {self.ov.get_version()} cannot compile for {self.device}: "
                              f"{exc}") from exc

    def info(self) -> dict:
        opts = {k: str(v) for k, v in self.config.items() if k != "PERF_COUNT"}
        if self.static_shapes:
            opts["reshaped_to"] = str(self.static_shapes)
        for key in ("INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "NUM_STREAMS", "ENABLE_CPU_PINNING"):
            try:
                val = self.compiled.get_property(key)
                opts[key] = val.get_type_name() if hasattr(val, "get_type_name") else str(val)
            except Exception:  # noqa: BLE001
                pass
        return {"name": "openvino", "version": self.ov.get_version(), "device": self.device, "options": opts,
                "unit": self.device.split(".")[0]}

    def device_name(self) -> str:
        try:
            return f"{self.device}: {self.core.get_property(self.device, 'FULL_DEVICE_NAME')}"
        except Exception:  # noqa: BLE001
            return self.device

    def prepare(self, feed: dict):
        return [(name, self.ov.Tensor(arr)) for name, arr in feed.items()]

    def bind(self, prepared) -> None:
        for name, tensor in prepared:
            self.request.set_tensor(name, tensor)  # shares the numpy memory

    def run(self) -> None:
        self.request.infer()

    def layers(self, feeds: list, runs: int) -> dict:
        compiled = self._compile(profiling=True)
        req = compiled.create_infer_request()
        acc: dict[str, dict] = {}
        for i in range(runs + 1):
            for name, arr in feeds[i % len(feeds)].items():
                req.set_tensor(name, self.ov.Tensor(arr))
            req.infer()
            if i == 0:
                continue  # warm-up
            for p in req.profiling_info:
                if str(p.status).split(".")[-1] != "EXECUTED":
                    continue
                row = acc.setdefault(p.node_name, {"name": p.node_name, "op_type": p.node_type,
                                                   "unit": p.exec_type, "us": 0.0, "order": len(acc)})
                row["us"] += p.real_time.total_seconds() * 1e6
        rows = [{"name": r["name"], "op_type": r["op_type"], "unit": r["unit"], "order": r["order"],
                 "ms": r["us"] / max(runs, 1) / 1000.0} for r in acc.values()]
        return {"rows": rows, "runs": runs, "source": "OpenVINO performance counters (PERF_COUNT)"}


# ------------------------------------------------------------------ LiteRT / TFLite

class TfliteRunner:
    name = "litert"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mod, self.pkg = _import_tflite()
        unit = (args.unit or "CPU").upper()
        delegates = []
        if args.delegate:
            try:
                delegates.append(self.mod.load_delegate(args.delegate))
            except Exception as exc:  # noqa: BLE001
                raise RunnerError(UNAVAILABLE, f"cannot load the TFLite delegate {args.delegate}: {exc}") from exc
        elif unit != "CPU":
            raise RunnerError(UNAVAILABLE, f"LiteRT reaches a {unit} only through a delegate library: give "
                              "--delegate PATH (e.g. libQnnTFLiteDelegate.so, libvx_delegate.so), or profile over "
                              "adb with --nnapi / --gpu", ["CPU (XNNPACK)" if args.xnnpack else "CPU"])
        kwargs: dict = {"model_path": args.model, "experimental_delegates": delegates or None}
        if args.threads:
            kwargs["num_threads"] = int(args.threads)
        if not args.xnnpack:
            kwargs["experimental_op_resolver_type"] = self.mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interp = self.mod.Interpreter(**kwargs)
            self.interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            raise RunnerError(BAD_MODEL, f"LiteRT ({self.pkg} {_pkg_version(self.pkg) or '?'}) cannot load "
                              f"{os.path.basename(args.model)}: {exc}") from exc
        self.details = self.interp.get_input_details()
        self.inputs = []
        for d in self.details:
            q = d.get("quantization_parameters") or {}
            quant = None
            if len(q.get("scales", [])):
                quant = {"scale": [float(x) for x in q["scales"]], "zero_point": [int(x) for x in q["zero_points"]]}
            self.inputs.append({"name": d["name"], "shape": [int(x) for x in d["shape"]],
                                "dtype": np.dtype(d["dtype"]).name, "quantization": quant})
        self.index = {d["name"]: d["index"] for d in self.details}

    def info(self) -> dict:
        return {"name": "litert", "package": self.pkg, "version": _pkg_version(self.pkg),
                "options": {"num_threads": self.args.threads or None, "xnnpack": bool(self.args.xnnpack),
                            "delegate": self.args.delegate or None},
                "unit": "delegate" if self.args.delegate else "CPU"}

    def device_name(self) -> str:
        return f"delegate {os.path.basename(self.args.delegate)}" if self.args.delegate else "CPU"

    def prepare(self, feed: dict):
        return feed

    def bind(self, prepared) -> None:
        for name, arr in prepared.items():
            self.interp.set_tensor(self.index[name], arr)  # copies into the interpreter's input buffer

    def run(self) -> None:
        self.interp.invoke()

    def layers(self, feeds: list, runs: int) -> dict:
        """The LiteRT Python API has no op profiler: each operator is rebuilt as a one-op model fed the
        values it saw in the whole model, and timed alone (same threads and XNNPACK setting). Fusion across
        ops and cache effects are absent, so the sum differs from the whole model's time (both reported)."""
        if self.args.delegate:
            return {"rows": [], "runs": 0, "source": None,
                    "note": "per-op timing through a delegate needs benchmark_model --enable_op_profiling=true"}
        try:
            rows = _isolated_ops(self, feeds, max(1, min(runs, 20)))
        except Exception as exc:  # noqa: BLE001 - a model this cannot take apart keeps its whole-model figures
            return {"rows": [], "runs": 0, "source": None,
                    "note": f"per-op timing unavailable ({type(exc).__name__}: {str(exc)[:160]}); use benchmark_model "
                            "--enable_op_profiling=true (edgekit does this for adb devices)"}
        return {"rows": rows, "runs": max(1, min(runs, 20)), "statistic": "median",
                "source": "LiteRT, each operator timed alone as a one-op model on its recorded inputs"
                          + (" (a zero PAD with the convolution it feeds, as XNNPACK runs them)" if self.args.xnnpack else "")}


def _one_op_model(fb, flatbuffers, model, sg, ops: list, codes: list) -> tuple[bytes, list[int]]:
    """A .tflite holding only `ops` (one operator, or a chain XNNPACK runs as one: a zero PAD and the convolution
    it feeds): their constant operands copied, their other inputs as model inputs; returns the bytes and the
    original tensor indices to feed, in input order."""
    import copy

    def const(ti: int) -> bool:
        return _constant(model, sg, ti)

    sub, tensors, remap = fb.ModelT(), [], {}
    sub.version, sub.operatorCodes, sub.buffers = model.version, list(codes), [fb.BufferT()]

    def add(ti: int) -> int:
        if ti < 0:
            return ti
        if ti not in remap:
            t = copy.copy(sg.tensors[ti])
            if const(ti):
                sub.buffers.append(model.buffers[t.buffer])
                t.buffer = len(sub.buffers) - 1
            else:
                t.buffer = 0
            remap[ti] = len(tensors)
            tensors.append(t)
        return remap[ti]

    made: set[int] = set()
    fed: list[int] = []
    copies = []
    for k, op in enumerate(ops):
        one = copy.copy(op)
        one.opcodeIndex = k
        fed += [t for t in op.inputs if t >= 0 and not const(t) and t not in made and t not in fed]
        one.inputs, one.outputs, one.intermediates = [add(t) for t in op.inputs], [add(t) for t in op.outputs], []
        made.update(op.outputs)
        copies.append(one)
    g = fb.SubGraphT()
    g.tensors, g.operators, g.inputs, g.outputs = tensors, copies, [remap[t] for t in fed], list(copies[-1].outputs)
    sub.subgraphs = [g]
    builder = flatbuffers.Builder(1024)
    builder.Finish(sub.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), fed


def _constant(model, sg, ti: int) -> bool:
    if ti < 0:
        return False
    buf = model.buffers[sg.tensors[ti].buffer]
    return buf.data is not None and len(buf.data) > 0


_FUSED_AFTER_PAD = ("CONV_2D", "DEPTHWISE_CONV_2D")  # XNNPACK folds a preceding zero PAD into their padding


def _zero_pad(model, sg, op, op_type: str) -> bool:
    """A PAD/PADV2 whose padding value is zero (or absent): one XNNPACK merges into the next convolution. For
    int8 tensors zero means the zero point (what PAD writes when PADV2 has no value)."""
    if op_type == "PAD":
        return True
    if op_type != "PADV2" or len(op.inputs) < 3 or op.inputs[2] < 0:
        return op_type == "PADV2"
    t = sg.tensors[op.inputs[2]]
    data = model.buffers[t.buffer].data
    if data is None or len(data) == 0:
        return False
    zero = t.quantization.zeroPoint[0] if t.quantization is not None and t.quantization.zeroPoint is not None \
        and len(t.quantization.zeroPoint) else 0
    return all(b == (zero & 0xFF) for b in bytes(data)) if len(data) <= 4 else False


_SKIP_OPS = ("WHILE", "IF", "CALL_ONCE", "CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES")


def op_plan(model_path: str, fuse_pad: bool = True) -> list[dict]:
    """One entry per operator of the model's main graph that can run alone: {content (the one-op .tflite),
    fed (tensor indices of the whole model that feed it, in input order), op_type, name (its output tensor),
    order}. fuse_pad (XNNPACK): a zero PAD feeding only a convolution is timed with it, as one row
    "PAD+CONV_2D" (XNNPACK merges them; alone, the PAD showed ~15% of a small CNN's time that the whole model
    never spends). Needs the TFLite flatbuffer schema, which ai-edge-litert ships and tflite-runtime /
    tensorflow do not: edgekit builds the plan on the host and sends it (--op-models) to devices it profiles
    remotely."""
    import flatbuffers

    try:
        from ai_edge_litert import schema_py_generated as fb
    except ImportError:
        from tflite_runtime import schema_py_generated as fb  # type: ignore[no-redef]
    with open(model_path, "rb") as f:
        model = fb.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    sg = model.subgraphs[0]

    def kind(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")

    readers: dict[int, int] = {}
    for op in sg.operators:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    outputs = set(sg.outputs)
    # a DEQUANTIZE of a constant (float16 weights) is computed once, when the model is prepared: not a row; it
    # goes into each reader's one-op model, where the weight stays static as in the whole model
    static = {op.outputs[0]: op for op in sg.operators if kind(op) == "DEQUANTIZE" and _constant(model, sg, op.inputs[0])}
    plan, absorbed = [], set()
    for k, op in enumerate(sg.operators):
        op_type = kind(op)
        if k in absorbed or op_type in _SKIP_OPS or any(t >= 0 and sg.tensors[t].isVariable for t in op.inputs) \
                or (op_type == "DEQUANTIZE" and op.outputs[0] in static):
            continue
        group, label = [op], op_type
        nxt = next((j for j in range(k + 1, len(sg.operators)) if op.outputs[0] in sg.operators[j].inputs), None)
        if (fuse_pad and nxt is not None and _zero_pad(model, sg, op, op_type) and readers.get(op.outputs[0]) == 1
                and op.outputs[0] not in outputs and kind(sg.operators[nxt]) in _FUSED_AFTER_PAD
                and sg.operators[nxt].inputs[0] == op.outputs[0]):
            group, label = [op, sg.operators[nxt]], f"{op_type}+{kind(sg.operators[nxt])}"
            absorbed.add(nxt)
        weights = list({id(d): d for o in group for t in o.inputs if (d := static.get(t)) is not None}.values())
        group = weights + group
        content, fed = _one_op_model(fb, flatbuffers, model, sg, group,
                                     [model.operatorCodes[o.opcodeIndex] for o in group])
        out_name = sg.tensors[group[-1].outputs[0]].name
        plan.append({"content": content, "fed": [int(t) for t in fed], "op_type": label,
                     "name": out_name.decode() if isinstance(out_name, bytes) else str(out_name), "order": k})
    return plan


def save_op_plan(plan: list[dict], path: str) -> None:
    """The plan as an .npz (no pickle): "<k>/model" bytes, "<k>/fed" indices, "__meta__" JSON."""
    arrays = {"__meta__": np.array(json.dumps([{k: v for k, v in e.items() if k not in ("content", "fed")}
                                               for e in plan]))}
    for k, e in enumerate(plan):
        arrays[f"{k}/model"] = np.frombuffer(e["content"], dtype=np.uint8)
        arrays[f"{k}/fed"] = np.array(e["fed"], dtype=np.int64)
    np.savez(path, **arrays)


def load_op_plan(path: str) -> list[dict]:
    data = np.load(path)
    meta = json.loads(str(data["__meta__"]))
    return [{**m, "content": data[f"{k}/model"].tobytes(), "fed": [int(t) for t in data[f"{k}/fed"]]}
            for k, m in enumerate(meta)]


def _isolated_ops(runner: TfliteRunner, feeds: list, runs: int) -> list[dict]:
    plan = load_op_plan(runner.args.op_models) if runner.args.op_models else \
        op_plan(runner.args.model, fuse_pad=bool(runner.args.xnnpack))
    kwargs: dict = {"experimental_preserve_all_tensors": True}
    if runner.args.threads:
        kwargs["num_threads"] = int(runner.args.threads)
    if not runner.args.xnnpack:
        kwargs["experimental_op_resolver_type"] = runner.mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    full = runner.mod.Interpreter(model_path=runner.args.model, **kwargs)
    full.allocate_tensors()
    for d in full.get_input_details():
        full.set_tensor(d["index"], feeds[0][d["name"]])
    full.invoke()

    rows = []
    kw = {key: v for key, v in kwargs.items() if key != "experimental_preserve_all_tensors"}
    for entry in plan:
        interp = runner.mod.Interpreter(model_content=entry["content"], **kw)
        interp.allocate_tensors()
        for d, ti in zip(interp.get_input_details(), entry["fed"]):
            interp.set_tensor(d["index"], full.get_tensor(ti))
        interp.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - t0) * 1000.0)
        times.sort()
        mid = len(times) // 2
        median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
        rows.append({"name": entry["name"], "op_type": entry["op_type"],
                     "unit": "XNNPACK" if runner.args.xnnpack else "CPU", "ms": median, "order": entry["order"]})
    return rows


class LitertCompiledRunner:
    """LiteRT's CompiledModel API (ai-edge-litert >= 2): accelerators CPU / GPU / NPU (NPU through a vendor
    dispatch library given with --delegate). A GPU/NPU run must be fully accelerated, else it is refused:
    a partial CPU fallback would be reported as an accelerator run."""

    name = "litert"

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.environment import Environment, EnvironmentOptions
            from ai_edge_litert.hardware_accelerator import HardwareAccelerator as HA
            from ai_edge_litert.options import CpuOptions, Options
        except ImportError as exc:
            raise RunnerError(MISSING_RUNTIME, "the LiteRT CompiledModel API needs ai-edge-litert >= 2") from exc
        self.args = args
        self.unit = (args.unit or "CPU").upper()
        # GPU / NPU alone, no CPU fallback: a model that loads is then really placed on that unit
        accel = {"CPU": HA.CPU, "GPU": HA.GPU, "NPU": HA.NPU}[self.unit]
        env_kwargs = {}
        if args.delegate:
            path = args.delegate
            env_kwargs["dispatch_library_path"] = os.path.dirname(path) if os.path.isfile(path) else path
        try:
            env = Environment.create(options=EnvironmentOptions(**env_kwargs))
            cpu = CpuOptions(num_threads=int(args.threads)) if args.threads else CpuOptions()
            self.model = CompiledModel.from_file(args.model, environment=env,
                                                 options=Options(hardware_accelerators=accel, cpu_options=cpu))
        except Exception as exc:  # noqa: BLE001
            kind = UNAVAILABLE if self.unit != "CPU" else BAD_MODEL
            raise RunnerError(kind, f"LiteRT CompiledModel cannot load {os.path.basename(args.model)} for "
                              f"{self.unit}: {exc}", ["CPU"]) from exc
        self.fully = bool(self.model.is_fully_accelerated())
        if self.unit != "CPU" and not self.fully:
            raise RunnerError(UNAVAILABLE, f"LiteRT did not place the whole model on the {self.unit} (no such "
                              "accelerator here, or unsupported ops); refusing to report a CPU fallback as a "
                              f"{self.unit} run", ["CPU"])
        sigs = self.model.get_signature_list()
        self.sig = list(sigs)[0] if sigs else "serving_default"
        details = self.model.get_input_tensor_details(self.sig)
        self.inputs = [{"name": n, "shape": [int(x) for x in d.get("shape", [])], "dtype": str(d.get("dtype", "float32"))}
                       for n, d in details.items()]
        self.in_bufs = {n: self.model.create_input_buffer_by_name(self.sig, n) for n in details}
        self.out_bufs = {n: self.model.create_output_buffer_by_name(self.sig, n)
                         for n in self.model.get_output_tensor_details(self.sig)}

    def info(self) -> dict:
        return {"name": "litert", "api": "CompiledModel", "package": "ai-edge-litert",
                "version": _pkg_version("ai-edge-litert"),
                "options": {"num_threads": self.args.threads or None, "accelerator": self.unit,
                            "dispatch_library": self.args.delegate or None, "fully_accelerated": self.fully},
                "unit": self.unit}

    def device_name(self) -> str:
        return self.unit

    def prepare(self, feed: dict):
        return feed

    def bind(self, prepared) -> None:
        for name, arr in prepared.items():
            self.in_bufs[name].write(arr)

    def run(self) -> None:
        self.model.run_by_name(self.sig, self.in_bufs, self.out_bufs)

    def layers(self, feeds: list, runs: int) -> dict:
        return {"rows": [], "runs": 0, "source": None,
                "note": "per-op timing is not exposed by the LiteRT CompiledModel Python API"}


def _import_tflite():
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            mod = __import__(name, fromlist=["Interpreter"])
            return mod, name.split(".")[0].replace("_", "-")
        except ImportError:
            continue
    try:
        import tensorflow as tf  # noqa: F401

        return tf.lite, "tensorflow"
    except ImportError as exc:
        raise RunnerError(MISSING_RUNTIME, f"no LiteRT runtime for {sys.executable} "
                          "(pip install ai-edge-litert, or tflite-runtime)") from exc


def _pkg_version(pkg: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return None


RUNNERS = {".onnx": OrtRunner, ".ort": OrtRunner, ".xml": OvRunner, ".tflite": TfliteRunner}


# ------------------------------------------------------------------ main

ORPHANED = 129  # exit code of a runner whose caller went away (stdin closed)


def exit_when_stdin_closes() -> None:
    """Exit as soon as stdin reaches end of file. The caller keeps a pipe open on our stdin and never writes to
    it; it closes when the caller (edgekit, killed or interrupted) or the ssh connection to it is gone, so a run
    stuck in a long warm-up or inference does not go on burning the device's cores (and skewing the next
    profile) with nobody left to read its figures."""
    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        os._exit(ORPHANED)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="edgekit latency runner")
    p.add_argument("--model", required=True)
    p.add_argument("--feeds")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int)
    p.add_argument("--unit", default="CPU")
    p.add_argument("--provider")
    p.add_argument("--hint", default="latency")
    p.add_argument("--pin", choices=["yes", "no"], help="OpenVINO CPU thread pinning (default: the runtime's)")
    p.add_argument("--no-xnnpack", dest="xnnpack", action="store_false")
    p.add_argument("--delegate")
    p.add_argument("--litert-api", choices=["interpreter", "compiled"], default="interpreter")
    p.add_argument("--per-layer", type=int, default=0, help="runs of the per-layer pass (0 = off)")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (the caller is gone)")
    p.add_argument("--op-models", help="LiteRT per-layer: the one-op models (.npz of op_plan), made where the "
                   "TFLite schema is installed")
    args = p.parse_args(argv)
    if args.exit_on_stdin_eof:
        exit_when_stdin_closes()
    try:
        ext = os.path.splitext(args.model)[1].lower()
        if ext not in RUNNERS:
            raise RunnerError(BAD_MODEL, f"no runner for '{ext}' files")
        rss_before, _ = memory_mb()
        t0 = time.perf_counter()
        cls = LitertCompiledRunner if ext == ".tflite" and args.litert_api == "compiled" else RUNNERS[ext]
        runner = cls(args)
        load_ms = (time.perf_counter() - t0) * 1e3
        feeds = load_feeds(args.feeds, runner.inputs)
        emit({"event": "meta", "runtime": runner.info(), "device": runner.device_name(), "inputs": runner.inputs,
              "load_ms": load_ms, "rss_before_load_mb": rss_before, "pid": os.getpid(),
              "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "samples": len(feeds)})
        try:  # a runtime error on the inputs (ids out of the table, a shape the graph refuses): one clear record
            prepared = [runner.prepare(f) for f in feeds]
            runner.bind(prepared[0])
            t0 = time.perf_counter()
            runner.run()
            emit({"event": "first", "ms": (time.perf_counter() - t0) * 1e3})
            for i in range(args.warmup):
                runner.bind(prepared[i % len(prepared)])
                runner.run()
            # Timed: the inference call only, inputs already in place (as the runtimes' own benchmark tools do).
            # Run records are written at once but flushed at most every 0.25 s, so the reader on the other end
            # of the pipe does not wake up (and compete for the cores) between runs; a dying run loses <= 0.25 s.
            clock = time.perf_counter_ns
            last_flush = clock()
            rebind = len(prepared) > 1
            cpu_clock = time.process_time_ns
            for i in range(args.runs):
                if rebind:
                    runner.bind(prepared[i % len(prepared)])
                c0 = cpu_clock()
                t0 = clock()
                runner.run()
                t1 = clock()
                c1 = cpu_clock()
                # cpu_ms: CPU time of all the process's threads during the run; on a machine shared with other work
                # wall time >> cpu time / threads shows the runs waited for a core
                sys.stdout.write(f'{{"event": "run", "i": {i}, "ms": {(t1 - t0) / 1e6!r}, "cpu_ms": {(c1 - c0) / 1e6!r}}}\n')
                if t1 - last_flush > 250_000_000:
                    sys.stdout.flush()
                    last_flush = t1
            sys.stdout.flush()
        except Exception as exc:  # noqa: BLE001
            raise RunnerError(RUN_FAILED, f"{runner.name} failed running it on its inputs: {type(exc).__name__}: "
                              f"{str(exc).strip()[:400]}") from exc
        _, hwm = memory_mb()  # before the per-layer pass, which opens a second session
        if args.per_layer:
            emit({"event": "layers", **runner.layers(feeds, args.per_layer)})
        emit({"event": "done", "peak_memory_mb": hwm})
        return 0
    except RunnerError as exc:
        emit({"event": "error", "kind": exc.kind, "message": exc.message, "available": exc.available})
        return 3


if __name__ == "__main__":
    sys.exit(main())
