"""How fragile is a held-out set's fp32 top-1? The floor under any top-1 agreement goal.

    PYTHONPATH=. python benchmarks/noise_floor.py [--models mobilenet_v2] [--samples 150] [--seeds 3]

For each classifier in the zoo, on the held-out samples that benchmarks/quantize.py and benchmarks/prune.py
judge agreement on, the fp32 model's top-1 agreement with itself when its input is perturbed far less
than int8 activations perturb it:
  uint8 rounding       the preprocessed image rounded back to 8-bit pixels (what a camera pipeline gives)
  noise N levels       Gaussian noise of N 8-bit intensity levels (std) added to every pixel
  int8 weights (RTN)   every Conv/Linear weight rounded to int8 per output channel (activations float)
plus the fp32 top-1 probability (median) and the share of samples where fp32 is confident (p >= 0.5),
and the agreement on confident and ambiguous samples apart. Writes benchmarks/results/noise_floor.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the imagenet preset the natural crops use


def held_out(name: str, n: int):
    """The held-out crops of benchmarks/quantize.py (mobilenet_v2: 150 of the shipped natural crops)."""
    from edgekit.data import load_samples
    from edgekit.distill import _stack
    from edgekit.sources import load_model

    lm = load_model(f"zoo:{name}")
    shipped = load_samples("natural_images", lm.inputs)
    _, held = shipped.split(held_out=0.25, seed=0)
    held = held.select(n, seed=1)
    return lm.module.eval(), _stack(list(held))["input"]


def int8_weights(model):
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                w = mod.weight
                s = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
                w.copy_((w / s).round().clamp(-127, 127) * s)
    return m


def measure(name: str, n: int, seeds: int) -> dict:
    import torch

    model, x = held_out(name, n)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    level = 1 / 255 / std  # one 8-bit intensity level, in the model's normalized input units (per channel)
    with torch.no_grad():
        ref = model(x)
        top1, p = ref.argmax(-1), ref.softmax(-1).max(-1).values
        confident = p >= 0.5

        def agree(y):
            same = y.argmax(-1) == top1
            return {"all": round(float(same.float().mean()), 4),
                    "confident": round(float(same[confident].float().mean()), 4) if confident.any() else None,
                    "ambiguous": round(float(same[~confident].float().mean()), 4) if (~confident).any() else None}

        rows = {"uint8 rounding": agree(model(((x * std + mean) * 255).round().clamp(0, 255) / 255 / std
                                              - mean / std))}
        for levels in (0.5, 1.0, 2.0):
            runs = []
            for seed in range(seeds):
                g = torch.Generator().manual_seed(seed)
                runs.append(agree(model(x + levels * level * torch.randn(x.shape, generator=g))))
            rows[f"noise {levels:g} levels"] = {k: None if runs[0][k] is None else
                                                round(sum(r[k] for r in runs) / len(runs), 4) for k in runs[0]}
        rows["int8 weights (RTN)"] = agree(int8_weights(model)(x))
    return {"model": name, "samples": len(x), "median_top1_prob": round(float(p.median()), 3),
            "confident_share": round(float(confident.float().mean()), 3), "agreement": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mobilenet_v2")
    ap.add_argument("--samples", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3, help="noise draws averaged per level")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/noise_floor.json"))
    args = ap.parse_args()
    results = [measure(m, args.samples, args.seeds) for m in args.models.split(",")]
    for r in results:
        print(f"{r['model']}: {r['samples']} held-out samples, median fp32 top-1 prob {r['median_top1_prob']}, "
              f"confident (p>=0.5) {r['confident_share']:.0%}")
        print(f"  {'perturbation':<22} {'all':>6} {'confident':>10} {'ambiguous':>10}")
        for k, a in r["agreement"].items():
            print(f"  {k:<22} {a['all']:>6.1%} {a['confident'] or 0:>10.1%} {a['ambiguous'] or 0:>10.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
