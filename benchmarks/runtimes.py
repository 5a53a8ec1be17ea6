"""fp32 latency: torch eager vs ONNX Runtime vs OpenVINO on the zoo models, batch 1, 1 and 2 threads.

    python benchmarks/runtimes.py [--models mobilenet_v2,minilm] [--runs 30]

Prints a table of medians (ms) and the ratio of each runtime to torch eager measured in the same run;
writes benchmarks/results/runtimes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_ms, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,minilm")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    import torch

    from edgekit import api
    from edgekit.backends import get_backend
    from edgekit.backends.base import LoadOptions
    from edgekit.data import synthetic_samples
    from edgekit.sources import load_model

    rows = []
    for name in args.models.split(","):
        model = load_model(f"zoo:{name}")
        dims = {"seq": 128} if name == "minilm" else None
        feed = next(iter(synthetic_samples(model.inputs, count=1, dims=dims)))
        with tempfile.TemporaryDirectory() as tmp:
            res = api.convert(f"zoo:{name}", ["onnxruntime", "openvino"], tmp, verify=True)
            paths = {a["target"]: Path(a["path"]) for a in res["artifacts"]}
            for threads in (1, 2):
                torch.set_num_threads(threads)
                tensors = [torch.from_numpy(feed[i.name]) for i in model.inputs]
                with torch.inference_mode():
                    t_torch = median_ms(lambda m=model.module, t=tensors: m(*t), runs=args.runs)
                row = {"model": name, "threads": threads, "torch_ms": t_torch}
                for target, path in paths.items():
                    sess = get_backend(target).load(path, LoadOptions(threads=threads))
                    t = median_ms(lambda s=sess, f=feed: s.run(f), runs=args.runs)
                    row[f"{target}_ms"] = t
                    row[f"{target}/torch"] = t / t_torch
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    cols = ["model", "threads", "torch_ms", "onnxruntime_ms", "openvino_ms", "onnxruntime/torch", "openvino/torch"]
    print(table(rows, cols))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "runtimes.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
