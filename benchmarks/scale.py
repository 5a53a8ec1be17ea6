"""edgekit's own cost on models bigger than the zoo's: wall time, peak RSS and the artifacts' sha256 of
`edgekit convert` on a ResNet-50-like CNN, an EfficientNet-B0-like net, a 24-layer hidden-768 encoder and a wide
UNet (random weights, tests/fixtures/sweep10_scale_models.py), fp32 or int8 for onnxruntime, openvino and arm.

    python benchmarks/scale.py [--models resnet50,efficientnet_b0,bert,unet] [--precision int8] [--samples 32]
                               [--profile DIR]   # also writes DIR/<model>.<precision>.prof (python -m cProfile)

One line per run: model, precision, seconds, peak RSS (MB), sha256 prefix per target. Slow (minutes per model on
2 cores) and memory-hungry (the encoder peaks at several GB): run it alone. The sha256s are what a speed change
must leave as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHAPES = {"resnet50": {"x": (3, 224, 224)}, "efficientnet_b0": {"x": (3, 224, 224)}, "unet": {"x": (3, 256, 256)},
          "bert": {"input_ids": (128,), "attention_mask": (128,)}}


def samples(model: str, n: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    if model == "bert":
        mask = np.ones((n, 128), np.int64)
        for i in range(n):
            mask[i, rng.integers(40, 128):] = 0
        np.savez(path, input_ids=rng.integers(1, 8000, (n, 128)).astype(np.int64), attention_mask=mask)
    else:
        np.savez(path, x=rng.standard_normal((n, *SHAPES[model]["x"])).astype(np.float32))


def run(model: str, precision: str, n: int, work: Path, profile: Path | None) -> dict:
    data = work / f"{model}.npz"
    samples(model, n, data)
    shapes = []
    for name, shape in SHAPES[model].items():
        suffix = ":int64" if model == "bert" else ""
        shapes += ["--input-shape", f"{name}=1x" + "x".join(map(str, shape)) + suffix]
    prof = ["-m", "cProfile", "-o", str(profile / f"{model}.{precision}.prof")] if profile else []
    cmd = ["/usr/bin/time", "-v", sys.executable, *prof, "-m", "edgekit", "convert", f"sweep10_scale_models:{model}",
           *shapes, "--calibration", str(data), "--calibration-size", str(n), "--precision", precision,
           "-t", "onnxruntime", "-t", "openvino", "-t", "arm", "-o", str(work / f"{model}.{precision}"), "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(FIXTURES), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall[1].split(":")))) if wall else None
    out = {"model": model, "precision": precision, "exit": proc.returncode, "seconds": seconds,
           "peak_rss_mb": int(rss[1]) // 1024 if rss else None}
    if proc.returncode == 0:
        out["sha256"] = {a["target"]: a["sha256"][:16] for a in json.loads(proc.stdout)["artifacts"]}
    else:
        out["error"] = proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else ""
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,efficientnet_b0,bert,unet")
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-scale-") as tmp:
        for model in args.models.split(","):
            print(json.dumps(run(model, args.precision, args.samples, Path(tmp), args.profile)), flush=True)


if __name__ == "__main__":
    main()
