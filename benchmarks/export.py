"""Pick the exporter and the clean-up by measuring: torch.onnx.export dynamo=False vs dynamo=True, and
clean-up none vs onnxslim vs onnxscript's optimizer, on the zoo models.

    python benchmarks/export.py [--models mobilenet_v2,minilm]

Columns: export seconds, node count, max abs error vs torch in ONNX Runtime, ORT latency (ms, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, table  # noqa: E402


def _cleanups():
    import onnxslim
    from onnxscript import optimizer

    return {"none": lambda m: m, "onnxslim": onnxslim.slim, "onnxscript": lambda m: optimizer.optimize(m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,minilm")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    from edgekit.data import synthetic_samples
    from edgekit.sources import load_model

    rows = []
    for name in args.models.split(","):
        model = load_model(f"zoo:{name}")
        feed = next(iter(synthetic_samples(model.inputs, count=1, dims={"seq": 64})))
        targs = tuple(torch.from_numpy(feed[i.name]) for i in model.inputs)
        with torch.no_grad():
            ref = model.module(*targs).numpy()
        names = [i.name for i in model.inputs]
        dyn = {i.name: {ax: d for ax, d in enumerate(i.shape) if isinstance(d, str)} for i in model.inputs}
        for dynamo in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.onnx"
                t0 = time.perf_counter()
                kw = {"dynamic_axes": dyn} if not dynamo else {"external_data": False}
                torch.onnx.export(model.module, targs, str(path), dynamo=dynamo, input_names=names,
                                  output_names=list(model.output_names), opset_version=17 if not dynamo else 18, **kw)
                t_export = time.perf_counter() - t0
                raw = onnx.load(str(path))
                for cname, clean in _cleanups().items():
                    t1 = time.perf_counter()
                    cleaned = clean(onnx.load(str(path)))
                    t_clean = time.perf_counter() - t1
                    cpath = Path(tmp) / f"{cname}.onnx"
                    onnx.save(cleaned, str(cpath))
                    so = ort.SessionOptions()
                    so.intra_op_num_threads = 2
                    sess = ort.InferenceSession(str(cpath), so, providers=["CPUExecutionProvider"])
                    out = sess.run(None, feed)[0]
                    rows.append({"model": name, "exporter": "dynamo" if dynamo else "torchscript",
                                 "cleanup": cname, "export_s": t_export, "clean_s": t_clean,
                                 "nodes_raw": len(raw.graph.node), "nodes": len(cleaned.graph.node),
                                 "max_abs_err": float(np.abs(out - ref).max()),
                                 "ort_ms": median_ms(lambda s=sess, f=feed: s.run(None, f), runs=20)})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows, ["model", "exporter", "cleanup", "export_s", "clean_s", "nodes_raw", "nodes", "max_abs_err", "ort_ms"]))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "export.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
