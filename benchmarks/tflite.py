"""LiteRT latency of edgekit's own .tflite files next to ONNX Runtime and OpenVINO, same run, batch 1.

    python benchmarks/tflite.py [--model mobilenet_v2] [--runs 30] [--threads 1,2]

fp32: the exported hub ONNX; int8: one QDQ model (ORT quantize_static, U8S8 per-channel, 16 calibration
samples; latency does not depend on calibration quality) lowered by each backend. LiteRT runs with XNNPACK.
Prints medians (ms) and writes benchmarks/results/tflite.json.
"""

from __future__ import annotations

import argparse
import json
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
            for threads in [int(t) for t in args.threads.split(",")]:
                sess = backend.load(files[0], LoadOptions(threads=threads))
                ms = median_ms(lambda s=sess: s.run(x), runs=args.runs)
                rows.append({"runtime": backend_name, "precision": precision, "threads": threads, "median_ms": ms,
                             "size_mb": size / 1e6, "file": files[0].name})
                print(f"{backend_name} {precision} {threads}t: {ms:.2f} ms", file=sys.stderr)
    print(table(rows, ["runtime", "precision", "threads", "median_ms", "size_mb"]))
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "tflite.json").write_text(json.dumps({"model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
