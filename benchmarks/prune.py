"""Structured pruning + distillation benchmark, per model and ratio, in one run.

    PYTHONPATH=. python benchmarks/prune.py [--models mnist_cnn,mobilenet_v2,minilm] [--steps 300] [--runs 30]
        [--importance variance|l2|taylor|...] [--allocation sensitivity|uniform|global] [--round-to 8]
        [--calib 128] [--no-reconstruct] [--shipped-crops] [--distill lr=1e-4,freeze_bn=1,...]
        [--targets "mnist_cnn=0.5,0.5@16"] [--cache DIR] [--held-out N] [--threads 1,2] [--layout-latency TARGET[,TARGET]]
        [--keep DIR] [--retime]

For each model and MAC-reduction target: prune (default variance importance and sensitivity allocation, what
edgekit's auto picks with data; kept channels rounded to 8, "R@16" rounds to 16), refit the following layers
by least squares on --calib samples (reconstruct.py), measure the quality before and after distillation from
the unpruned model, export to ONNX, and time it (batch 1):
  mnist_cnn     accuracy on the 1,000 labelled held-out digits (calibration/mnist/test.npz); distilled
                on the 256 unlabeled training digits (calibration/mnist/train_sample.npz)
  mobilenet_v2  top-1 agreement with the unpruned model on 256 held-out natural crops (--held-out N: up to
                1,000; new random crops, indices 1000 on of the natural_images generator, never used for
                pruning or distillation;
                distilled on fresh crops of the same 16 photos, indices 2000 on, one per training image;
                --shipped-crops: the shipped 1,000)
  minilm        mean cosine with the unpruned embeddings on held-out sentences (last 20% of
                calibration/sentences.txt; distilled on the first 80%)
Columns: MACs, params, ONNX size, ONNX Runtime and LiteRT (edgekit's TFLite backend, fp32) latency.
Prints a table and writes benchmarks/results/prune.json. --keep DIR keeps each row's ONNX; a later --retime
re-times them (e.g. distil on a busy machine, time on a quiet one) and rewrites --out's latency columns.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/profile.py would shadow the stdlib `profile` (torch imports cProfile): drop the script folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from benchmarks import _prune_cache as pcache  # noqa: E402
from benchmarks._timing import median_ms, table  # noqa: E402

CONFIGS = {  # model -> (MAC-reduction targets, distill steps, distill kwargs); --steps overrides the steps.
    # A target "R@N" rounds kept channel counts to multiples of N instead of --round-to.
    # un-augmented: after reconstruction, shifted/mixed digits only moved the model away (0.983 -> 0.983-0.985
    # with augmentation, 0.988 without, at 0.5@16)
    "mnist_cnn": (("0.5", "0.5@16", "0.6"), 250, {"batch_size": 64, "lr": 5e-4, "augment": False}),
    # fresh un-augmented crops, frozen BatchNorm, lr 1e-4: measured best after least-squares reconstruction
    # (150 steps: 0.734 -> 0.785; heavy augmentation + shipped crops: no gain; lr 1e-3: worse; with
    # --allocation sensitivity, feature loss on features.6/13/18 + temperature 2: 0.852 vs 0.855 without)
    "mobilenet_v2": (("0.3",), 600, {"batch_size": 32, "lr": 1e-4, "freeze_bn": True, "augment": False}),
    # distill's defaults for an embedding model: lr 1e-4, the six encoder layers' outputs matched, token
    # augmentation (lr 2e-4 on the embedding alone, 120 steps: 0.955 -> 0.955, the held-out loss never fell)
    "minilm": (("0.25", "0.5"), 480, {"batch_size": 16}),
}
FRESH = {"mobilenet_v2"}  # models distilled on fresh generated samples (one new crop per training image)


def _stack(items):
    from edgekit.distill import _stack as stack

    return stack(items)


FRESH_START = 2000  # --fresh-crops draws natural crops from this index on (held-out: 1000 on)
HELD_OUT_CROPS = 256  # --held-out N: mobilenet_v2's judging crops, indices 1000 .. 1000 + N - 1 (N <= 1000)


def data_for(name: str, lm, fresh: int = 0):
    """(distillation samples, held-out feeds (stacked torch), labels or None). fresh > 0 (mobilenet_v2):
    distil on `fresh` new crops of the generator (indices from FRESH_START) instead of the shipped 1,000."""
    from edgekit.data import SampleSet, load_samples

    if name == "mnist_cnn":
        train = load_samples(str(ROOT / "calibration/mnist/train_sample.npz"), lm.inputs)
        test = np.load(ROOT / "calibration/mnist/test.npz")
        import torch

        return train, {"input": torch.as_tensor(test["input"])}, test["labels"]
    if name == "mobilenet_v2":
        train = load_samples("natural_images", lm.inputs)
        held = _stack([train.make(i) for i in range(1000, 1000 + HELD_OUT_CROPS)])
        if fresh:
            train = SampleSet(f"{fresh} fresh natural crops", train.count, train.make, meta=dict(train.meta),
                              indices=range(FRESH_START, FRESH_START + fresh))
        return train, held, None
    lines = (ROOT / "calibration/sentences.txt").read_text().splitlines()
    lines = [ln for ln in lines if ln.strip()]
    cut = int(len(lines) * 0.8)
    from edgekit.zoo import minilm

    def samples(texts):
        enc = minilm.tokenize(texts)
        n = len(texts)
        items = []
        for i in range(n):
            k = int(enc["attention_mask"][i].sum())
            items.append({"input_ids": enc["input_ids"][i:i + 1, :k], "attention_mask": enc["attention_mask"][i:i + 1, :k]})
        return SampleSet(f"{n} sentences", n, lambda i: items[i])

    return samples(lines[:cut]), _stack(list(samples(lines[cut:]))), None


def _outputs(model, held) -> Any:
    import torch

    n = len(next(iter(held.values())))
    with torch.no_grad():
        return torch.cat([model(**{k: v[i:i + 32] for k, v in held.items()}) for i in range(0, n, 32)])


def quality(name: str, teacher, student, held, labels, key: str) -> dict[str, float]:
    """{key: the model's quality figure}: labelled accuracy (mnist_cnn), top-1 agreement with the unpruned model
    (mobilenet_v2, plus `key`_confident: agreement on the crops the unpruned model classifies with softmax
    p >= 0.5, ImageNet-like decisive inputs; the rest are near-ties among classes the photo does not show),
    embedding cosine (minilm)."""
    import torch

    s = _outputs(student, held)
    if name == "mnist_cnn":
        return {key: float((s.argmax(-1).numpy() == labels).mean())}
    t = _outputs(teacher, held)
    if name == "mobilenet_v2":
        same = s.argmax(-1) == t.argmax(-1)
        sure = t.softmax(-1).max(-1).values >= 0.5
        return {key: float(same.float().mean()),
                f"{key}_confident": float(same[sure].float().mean()) if bool(sure.any()) else None}
    return {key: float(torch.nn.functional.cosine_similarity(s, t).mean())}


THREADS: list[int | None] = [None]  # --threads 1,2: runtime threads for the latency figures (None: the runtime's default)
LAYOUT_TARGET: str | None = None  # --layout-latency TARGET: time candidate channel layouts on this target
CACHE: Path | None = None  # --cache DIR: pruned students (see _prune_cache.py)


KEEP: Path | None = None  # --keep DIR: the exported ONNX of every row and its timing feed stay here (--retime)


def runtime_numbers(module, lm, feed: dict, tmp: Path, tag: str, runs: int) -> dict:
    """ONNX size and callables that run the model once in ONNX Runtime / LiteRT (timed by `timed`)."""
    from edgekit.export import export_onnx

    folder = KEEP or tmp
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(module, lm.inputs, lm.output_names, folder / f"{lm.name}_{tag}.onnx")
    if KEEP:
        np.savez(KEEP / f"{lm.name}_feed.npz", **feed)
    return {"onnx_file": onnx_path.name, **sessions(onnx_path, feed, tmp, tag)}


def sessions(onnx_path: Path, feed: dict, tmp: Path, tag: str) -> dict:
    """ONNX size and callables that run `onnx_path` once in ONNX Runtime / LiteRT (lowered by edgekit)."""
    from edgekit.backends import onnxruntime as ortb
    from edgekit.backends.base import LoadOptions

    out: dict = {"_run": {}, "onnx_mb": onnx_path.stat().st_size / 1e6}

    def key(runtime: str, threads: int | None) -> str:  # one thread setting: ort_ms; several: ort_ms_1t, ...
        return f"{runtime}_ms" if len(THREADS) == 1 else f"{runtime}_ms_{threads}t"

    for t in THREADS:
        sess = ortb.load(onnx_path, LoadOptions(threads=t))
        out["_run"][key("ort", t)] = lambda s=sess: s.run(feed)
    try:
        from edgekit.backends import tflite

        shapes = {k: list(v.shape) for k, v in feed.items()}
        tfl = tflite.lower(onnx_path, None, tmp / tag, {"input_shapes": shapes})[0]
        for t in THREADS:
            tsess = tflite.load(tfl, LoadOptions(threads=t))
            out["_run"][key("litert", t)] = lambda s=tsess: s.run(feed)
    except Exception as exc:  # noqa: BLE001
        out["litert_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return out


def timed(base: dict, row: dict, runs: int, rounds: int = 5) -> None:
    """Time base and pruned model alternately (rounds x runs calls each) so that load from other processes
    hits both alike; median per runtime, and the speed-up."""
    import statistics

    for key, fn in row["_run"].items():
        if key not in base["_run"]:
            continue
        b, p = [], []
        for _ in range(rounds):
            b.append(median_ms(base["_run"][key], warmup=3, runs=runs, repeats=1))
            p.append(median_ms(fn, warmup=3, runs=runs, repeats=1))
        base[key], row[key] = statistics.median(b), statistics.median(p)
        row[key.replace("_ms", "_speedup")] = round(base[key] / row[key], 2)


def bench_model(name: str, steps: int, runs: int, seed: int, importance: str = "l2",
                allocation: str = "uniform", reconstruct: bool = True, calib_n: int = 128, fresh: bool = False,
                distill_kw: dict | None = None, round_to: int = 8) -> list[dict]:
    import torch

    from edgekit.distill import distill
    from edgekit.prune import count_macs, count_params, prune_model
    from edgekit.sources import load_model

    torch.manual_seed(seed)
    lm = load_model(f"zoo:{name}")
    teacher = lm.module.eval()
    targets, default_steps, dkw = CONFIGS[name]
    steps = default_steps if steps is None else steps
    dkw = {**dkw, **(distill_kw or {})}
    train, held, labels = data_for(name, lm, fresh=steps * dkw["batch_size"] if fresh and name in FRESH else 0)
    feed1 = {k: v.numpy() for k, v in _stack([next(iter(train))]).items()}
    if name == "minilm":  # time a fixed 64-token sentence (the first sample is short)
        feed1 = {k: np.resize(v, (1, 64)) if k == "input_ids" else np.ones((1, 64), v.dtype) for k, v in feed1.items()}
    example = {k: torch.as_tensor(v) for k, v in feed1.items()}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = {"model": name, "target": 0.0, "macs": count_macs(teacher, example), "params": count_params(teacher),
                **quality(name, teacher, teacher, held, labels, "quality_pruned")}
        base.update(runtime_numbers(teacher, lm, feed1, tmp, "base", runs))
        timed(base, base, runs, rounds=1)
        rows.append(base)
        for spec in targets:
            target, _, rt = str(spec).partition("@")
            target, rt = float(target), int(rt or round_to)
            t0 = time.perf_counter()
            idx = list(train._idx())[:calib_n]
            calib = [_stack([train.make(j) for j in idx[i:i + 16]]) for i in range(0, len(idx), 16)]
            layout_latency = None
            if LAYOUT_TARGET:
                from edgekit.prune.latency import runtime_latency
                from edgekit.targets import get_target

                layout_latency = runtime_latency([get_target(t) for t in LAYOUT_TARGET.split(",")], list(lm.inputs),
                                                 list(lm.output_names), example)
            ck = pcache.key(model=name, target=target, round_to=rt, importance=importance, allocation=allocation,
                            reconstruct=reconstruct, calib=len(idx), fresh=bool(fresh and name in FRESH),
                            seed=seed, layout=LAYOUT_TARGET)
            hit = pcache.load(CACHE, ck, teacher, example) if CACHE else None
            if hit:
                (student, rep), cached = hit, True
            else:
                student, rep = prune_model(teacher, example, macs_ratio=target, task=lm.task, calib=calib,
                                           importance=importance, allocation=allocation, reconstruct=reconstruct,
                                           round_to=rt, layout_latency=layout_latency)
                cached = False
                if CACHE:
                    pcache.save(CACHE, ck, student, {k: rep[k] for k in ("macs_after", "params_after", "macs_removed",
                                                                         "reconstruction", "groups") if k in rep})
            row = {"model": name, "target": target, "importance": importance, "allocation": allocation,
                   "reconstruct": reconstruct, "round_to": rt, "calib": len(idx), "fresh_crops": bool(fresh and name in FRESH),
                   "held_out_crops": HELD_OUT_CROPS if name == "mobilenet_v2" else None,
                   "distill_kw": dkw, "macs": rep["macs_after"], "params": rep["params_after"],
                   "macs_removed": rep["macs_removed"], "prune_s": round(time.perf_counter() - t0, 1),
                   "pruned_from_cache": cached,
                   **quality(name, teacher, student, held, labels, "quality_pruned"),
                   "reconstruction": rep.get("reconstruction"),
                   "widths": [[g["modules"][0], g["channels_before"], g["channels_after"]] for g in rep["groups"]]}
            if steps:
                d_rep = distill(teacher, student, train, steps=steps, task=lm.task, seed=seed, **dkw)
                row.update(**quality(name, teacher, student, held, labels, "quality_distilled"),
                           distill_steps=d_rep["steps"], distill_s=d_rep["seconds"],
                           distill_bn_recalibrated=[d_rep["bn_recalibrated"], d_rep["bn_recalibrated_end"]],
                           distill_early_stopped=d_rep["early_stopped"])
            row.update(runtime_numbers(student, lm, feed1, tmp, f"p{int(100 * target)}_{rt}", runs))
            timed(base, row, runs)
            row.pop("_run")
            rows.append(row)
            print(json.dumps(row), flush=True)
        base.pop("_run")
        print(json.dumps(base), flush=True)
    return rows


def retime(rows: list[dict], runs: int) -> None:
    """--retime: time the ONNX files a --keep run left (accuracy and distillation from that run), e.g. on a quiet
    machine after distilling on a busy one; each pruned row against its model's unpruned row, as in a full run."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in dict.fromkeys(r["model"] for r in rows):
            group = [r for r in rows if r["model"] == name]
            feed = dict(np.load(KEEP / f"{name}_feed.npz"))
            base = next(r for r in group if r["target"] == 0.0)
            base.update(sessions(KEEP / base["onnx_file"], feed, tmp, "base"))
            timed(base, base, runs, rounds=1)
            for row in group:
                if row is not base:
                    row.update(sessions(KEEP / row["onnx_file"], feed, tmp, Path(row["onnx_file"]).stem))
                    timed(base, row, runs)
                    row.pop("_run")
                    print(json.dumps({k: v for k, v in row.items() if k != "widths"}), flush=True)
            base.pop("_run")


def _overrides(spec: str) -> dict:
    out: dict = {}
    for item in filter(None, spec.split(",")):
        k, _, v = item.partition("=")
        if k == "feature_layers":  # feature_layers=features.6+features.13
            out[k] = v.split("+")
            continue
        if k in ("freeze_bn", "augment", "recalibrate", "dropout"):
            out[k] = bool(int(v))
        elif k in ("batch_size", "patience"):
            out[k] = int(v)
        elif k == "precision":  # fp32 | bf16 | auto
            out[k] = v
        else:
            out[k] = float(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mnist_cnn,mobilenet_v2,minilm")
    ap.add_argument("--steps", type=int, help="distillation steps per pruned model (default: per model)")
    ap.add_argument("--runs", type=int, default=20, help="calls per timing round (5 alternating rounds)")
    ap.add_argument("--targets", help="MAC-reduction targets, e.g. mnist_cnn=0.5,0.7;mobilenet_v2=0.3 "
                    "(default: per model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--importance", default="variance", help="channel importance (l1, l2, bn_scale, taylor, variance; "
                    "default: what edgekit's auto picks with calibration data)")
    ap.add_argument("--allocation", default="sensitivity", help="uniform, global or sensitivity (default: edgekit's auto "
                    "with calibration data)")
    ap.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this")
    ap.add_argument("--no-reconstruct", action="store_true", help="no least-squares layer refit after pruning")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples for importance/reconstruction")
    ap.add_argument("--shipped-crops", action="store_true",
                    help="mobilenet_v2: distil on the shipped 1,000 crops instead of new ones (one per training image)")
    ap.add_argument("--distill", default="", help="distill() overrides, e.g. lr=1e-3,freeze_bn=1,temperature=2")
    ap.add_argument("--layout-latency", metavar="TARGET",
                    help="choose among channel layouts near the MAC target by latency measured on TARGET (a comma-"
                         "separated list: the geometric mean over their runtimes)")
    ap.add_argument("--threads", default="", help="runtime threads for latency, e.g. 1 or 1,2 (one column each; "
                    "default: each runtime's own)")
    ap.add_argument("--cache", help="reuse pruned students from this folder (same model and pruning arguments)")
    ap.add_argument("--held-out", type=int, default=256,
                    help="mobilenet_v2 held-out crops (<= 1000; 256 gives one standard error of ~2 points at 0.87, "
                         "1000 ~1 point)")
    ap.add_argument("--keep", metavar="DIR", help="keep every row's exported ONNX and timing feed in DIR")
    ap.add_argument("--retime", action="store_true", help="re-time the rows of --out from the ONNX files in --keep "
                    "(quality and distillation figures stay those of the run that wrote them)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/prune.json"))
    args = ap.parse_args()
    global THREADS, LAYOUT_TARGET, CACHE, HELD_OUT_CROPS, KEEP
    KEEP = Path(args.keep).resolve() if args.keep else None
    if not 1 <= args.held_out <= FRESH_START - 1000:
        ap.error(f"--held-out must be 1..{FRESH_START - 1000} (training crops start at index {FRESH_START})")
    HELD_OUT_CROPS = args.held_out
    THREADS = [int(t) for t in args.threads.split(",") if t] or [None]
    LAYOUT_TARGET, CACHE = args.layout_latency, Path(args.cache) if args.cache else None
    if args.retime:
        if not KEEP:
            ap.error("--retime needs --keep DIR (the folder of the run that wrote --out)")
        doc = json.loads(Path(args.out).read_text())
        retime(doc["rows"], args.runs)
        doc["retimed"] = {"threads": THREADS, "runs": args.runs}
        Path(args.out).write_text(json.dumps(doc, indent=2))
        return
    rows = []
    for name in args.models.split(","):
        for spec in (args.targets or "").split(";"):
            model, _, values = spec.partition("=")
            if model == name:
                CONFIGS[name] = (tuple(values.split(",")), *CONFIGS[name][1:])
        try:
            rows += bench_model(name, args.steps, args.runs, args.seed, args.importance, args.allocation,
                                reconstruct=not args.no_reconstruct, calib_n=args.calib, fresh=not args.shipped_crops,
                                distill_kw=_overrides(args.distill), round_to=args.round_to)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    timing = sorted({k for r in rows for k in r if k.startswith(("ort_", "litert_"))})
    cols = ["model", "target", "round_to", "macs_removed", "macs", "params", "onnx_mb", "quality_pruned", "quality_distilled",
            *timing, "distill_steps", "distill_s"]
    print(table(rows, cols))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
