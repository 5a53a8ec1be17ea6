"""LiteRT latency of edgekit's own .tflite files next to ONNX Runtime and OpenVINO, same run, batch 1,
and next to the peer converter litert-torch where it is installed.

    python benchmarks/tflite.py [--model mobilenet_v2] [--runs 30] [--threads 1,2] [--peer-python PY]

fp32: the exported hub ONNX; int8: one QDQ model (ORT quantize_static, U8S8 per-channel, 16 calibration
samples; latency does not depend on calibration quality) lowered by each backend. LiteRT runs with XNNPACK.
`cos` is the cosine of each artifact's output with torch fp32 on one input (a sanity check, not accuracy).

Peer: litert-torch converts the same torch module (fp32, and PT2E static int8 per-channel on the same 16
samples) in a separate venv (default /work/peer-venv/bin/python, or $EDGEKIT_PEER_PYTHON), made with
`python -m venv V && V/bin/pip install torch==2.13.0 && V/bin/pip install litert-torch`; it is never
installed next to edgekit. Its .tflite is timed in the same LiteRT as ours. Without the venv, or when it
fails, the peer rows say so and the rest still runs.
Prints medians (ms) and writes benchmarks/results/tflite.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, table  # noqa: E402


def _qdq(src: Path, dst: Path, name: str, shape: tuple) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    data = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(16)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(data, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--peer-python", default=os.environ.get("EDGEKIT_PEER_PYTHON", "/work/peer-venv/bin/python"))
    args = ap.parse_args()

    from edgekit.backends import get_backend
    from edgekit.backends.base import LoadOptions
    from edgekit.export import export_onnx
    from edgekit.targets import get_target
    from edgekit.zoo import ZOO

    entry = ZOO[args.model]
    spec = entry.inputs[0]
    shape = spec.concrete_shape()
    tmp = Path(tempfile.mkdtemp())
    hub = export_onnx(entry.build().eval(), list(entry.inputs), list(entry.output_names), tmp / "hub.onnx")
    qdq = _qdq(hub, tmp / "hub.int8.onnx", spec.name, shape)
    x = {spec.name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    ref = _torch_ref(entry, x[spec.name])
    threads_list = [int(t) for t in args.threads.split(",")]
    rows = []
    for backend_name, target_name in (("tflite", "tflite"), ("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        backend = get_backend(backend_name)
        target = get_target(target_name)
        for precision, src in (("fp32", hub), ("int8", qdq)):
            out = tmp / f"{backend_name}-{precision}"
            out.mkdir()
            opts = {"precision": precision, "input_shapes": {spec.name: shape}, "io_layout": "nchw", "io_dtype": "float"}
            files = backend.lower(src, target, out / "m", opts)
            size = sum(f.stat().st_size for f in files if f.suffix not in (".ort",))
            for threads in threads_list:
                sess = backend.load(files[0], LoadOptions(threads=threads))
                cos = _cos(sess.run(x)[0], ref)
                ms = median_ms(lambda s=sess: s.run(x), runs=args.runs)
                rows.append({"converter": "edgekit", "runtime": backend_name, "precision": precision, "threads": threads,
                             "median_ms": ms, "size_mb": size / 1e6, "cos": cos, "file": files[0].name})
                print(f"{backend_name} {precision} {threads}t: {ms:.2f} ms", file=sys.stderr)
    peer = _peer_rows(args, entry, tmp, x[spec.name], ref, threads_list)
    rows += peer["rows"]
    print(table(rows, ["converter", "runtime", "precision", "threads", "median_ms", "size_mb", "cos"]))
    for note in peer["notes"]:
        print(note)
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "tflite.json").write_text(json.dumps({"model": args.model, "rows": rows, "peer_notes": peer["notes"]},
                                                indent=2))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _torch_ref(entry, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return entry.build().eval()(torch.from_numpy(x)).numpy()


def _peer_rows(args, entry, tmp: Path, x: np.ndarray, ref: np.ndarray, threads_list: list[int]) -> dict:
    """litert-torch's .tflite for the same module, timed in the same LiteRT; notes say why a row is missing."""
    from edgekit.backends import get_backend
    from edgekit.backends.base import LoadOptions

    notes: list[str] = []
    rows: list[dict] = []
    peer_py = Path(args.peer_python)
    if not peer_py.is_file():
        return {"rows": rows, "notes": [f"litert-torch: skipped, no peer venv python at {peer_py} (see this file's docstring)"]}
    try:
        mod = __import__(f"edgekit.zoo.{entry.name}", fromlist=["weights_path"])
        weights = mod.weights_path()
    except Exception as exc:  # noqa: BLE001
        return {"rows": rows, "notes": [f"litert-torch: skipped, {entry.name} has no weights file to share: {exc}"]}
    calib = tmp / "peer_calib.npy"
    rng = np.random.default_rng(0)  # the same 16 samples the QDQ model above was calibrated on
    np.save(calib, np.stack([rng.standard_normal(x.shape).astype(np.float32) for _ in range(16)]))
    script = Path(__file__).resolve().parent / "_litert_torch_peer.py"
    root = Path(__file__).resolve().parent.parent
    tflite = get_backend("tflite")
    for precision in ("fp32", "int8"):
        out = tmp / f"litert_torch.{precision}.tflite"
        cmd = [str(peer_py), "-P", str(script), str(root), str(weights), entry.name, precision, str(out), str(calib)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            res = json.loads(last[-1]) if last else {"ok": False, "error": (proc.stderr or "no output")[-300:]}
        except (subprocess.TimeoutExpired, OSError, json.JSONDecodeError) as exc:
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not res.get("ok") or not out.is_file():
            notes.append(f"litert-torch {precision}: conversion failed here: {res.get('error')}")
            continue
        notes.append(f"litert-torch {precision}: converted in {res['seconds']:.1f} s")
        for threads in threads_list:
            sess = tflite.load(out, LoadOptions(threads=threads))
            feed = {sess.inputs[0].name: x}
            cos = _cos(sess.run(feed)[0], ref)
            ms = median_ms(lambda s=sess, f=feed: s.run(f), runs=args.runs)
            rows.append({"converter": "litert-torch", "runtime": "tflite", "precision": precision, "threads": threads,
                         "median_ms": ms, "size_mb": out.stat().st_size / 1e6, "cos": cos, "file": out.name})
            print(f"litert-torch {precision} {threads}t: {ms:.2f} ms", file=sys.stderr)
    return {"rows": rows, "notes": notes}


if __name__ == "__main__":
    main()
