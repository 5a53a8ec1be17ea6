"""Post-training int8 benchmark: edgekit vs the peers' defaults, per model and runtime, in one run.

    PYTHONPATH=. python benchmarks/quantize.py [--models mobilenet_v2,minilm,mnist_cnn] [--calib 128] [--runs 30]
        [--finetune STEPS] [--max-drop X] [--fallback e2e|e2e-cost|e2e-greedy|layer] [--keep DIR] [--retime]

For each model: fp32 hub -> edgekit int8 (quantize_model with each runtime's own target scheme, as
`edgekit convert` does: a CNN shares one graph between ONNX Runtime and OpenVINO, a transformer gets a
dynamic graph for ONNX Runtime and int8 weights for OpenVINO) lowered to ONNX Runtime and OpenVINO (and
TFLite, its target's scheme, when its backend lowers the graph), next to
  ort-default   onnxruntime.quantization.quantize_static with its default arguments (same calibration samples)
  nncf          nncf.quantize on the OpenVINO model (its defaults, same samples), run in OpenVINO
and edgekit fp16 (float16 weights, OpenVINO and TFLite): how far a rounding far finer than int8's moves the
same accuracy figure.
Columns: artifact size, median latency with 1 and 2 threads (one sample, batch 1), accuracy on held-out
samples never used for calibration: top-1 agreement with fp32 (mobilenet_v2 on natural-image crops),
cosine with fp32 (minilm on sentences), labelled accuracy (mnist_cnn on its 1,000-digit test set).
Prints a table and writes benchmarks/results/quantize.json. --keep DIR keeps the artifacts; a later --retime
times them again (quantize on a busy machine, time on a quiet one) and rewrites --out's latency columns.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/profile.py would shadow the stdlib `profile` (torch imports cProfile): drop the script folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from edgekit.backends import get_backend  # noqa: E402
from edgekit.backends.base import LoadOptions  # noqa: E402
from edgekit.data import SampleSet, load_samples  # noqa: E402
from edgekit.quantize import quantize_model  # noqa: E402
from edgekit.targets import get_target  # noqa: E402
from edgekit.zoo import get_entry  # noqa: E402

HELD_OUT = {"mobilenet_v2": 150, "minilm": 100, "mnist_cnn": 0}


def files_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.suffix != ".ort")


def latency(session, feed: dict, runs: int) -> float:
    """Median of `runs` timed calls; the best of 3 such medians (the host is shared: bursts of load)."""
    for _ in range(3):
        session.run(feed)
    medians = []
    for _ in range(3):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(feed)
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    return min(medians) * 1000


def accuracy(session, ref: list, samples: SampleSet, task: str, labels) -> dict:
    outs = [session.run(f)[0] for f in samples]
    if labels is not None:
        pred = np.array([int(np.argmax(o)) for o in outs])
        return {"metric": "accuracy", "value": float(np.mean(pred == labels))}
    if task == "classification":
        same = np.array([int(np.argmax(o)) == int(np.argmax(r)) for o, r in zip(outs, ref)])
        # context: the crops where fp32 itself is decisive (softmax top-1 >= 0.5; ~ImageNet-val-like inputs)
        prob = np.array([np.max(np.exp(r - r.max()) / np.exp(r - r.max()).sum()) for r in ref])
        decisive = prob >= 0.5
        return {"metric": "top1_agreement", "value": float(same.mean()),
                "decisive_agreement": float(same[decisive].mean()) if decisive.any() else None,
                "decisive_samples": int(decisive.sum())}
    cos = [float(np.dot(o.ravel(), r.ravel()) / (np.linalg.norm(o) * np.linalg.norm(r) + 1e-12)) for o, r in zip(outs, ref)]
    return {"metric": "cosine", "value": float(np.mean(cos))}


class Reader:
    """onnxruntime CalibrationDataReader over a SampleSet (for the ORT-default peer)."""

    def __init__(self, samples: SampleSet) -> None:
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)


def ort_default(fp32: Path, out: Path, calib: SampleSet) -> Path:
    from onnxruntime.quantization import quantize_static

    quantize_static(str(fp32), str(out), Reader(calib))  # every argument at its default
    return out


def nncf_ov(fp32: Path, out_xml: Path, calib: SampleSet) -> list[Path]:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    q = nncf.quantize(model, nncf.Dataset(list(calib)), subset_size=len(calib))
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return [out_xml, out_xml.with_suffix(".bin")]


def bench_model(name: str, n_calib: int, runs: int, work: Path, max_drop: float | None = None,
                finetune: int = 0, fallback: str = "e2e") -> list[dict]:
    from edgekit.export import export_onnx

    entry = get_entry(name)
    inputs = list(entry.inputs)
    fp32 = export_onnx(entry.build(), inputs, list(entry.output_names), work / f"{name}.fp32.onnx")
    shipped = load_samples(entry.calibration, inputs)
    labels = None
    if HELD_OUT[name]:
        calib, held = shipped.split(held_out=0.25, seed=0)
        held = held.select(HELD_OUT[name], seed=1)
    else:
        calib, held = shipped, load_samples(f"{entry.calibration}:eval", inputs)
        labels = held.label_array()
    calib = calib.select(n_calib, seed=0)
    feed = held.make(held._idx()[0])

    ort_mod, ov_mod = get_backend("onnxruntime"), get_backend("openvino")
    ref_sess = ort_mod.load(fp32)
    ref = [ref_sess.run(f)[0] for f in held]

    import onnx

    from edgekit.quantize.ops import is_transformer
    from edgekit.quantize.scheme import scheme_key

    transformer = is_transformer(onnx.load(str(fp32)))
    judged = {"held_out": held if labels is None else None, "eval_set": held if labels is not None else None}
    cache: dict[str, tuple[list, dict, dict | None]] = {}

    def edgekit_hubs(tname: str) -> tuple[list, dict, dict | None]:
        """Each target's own int8 graph(s), as `edgekit convert` makes them: one per distinct scheme."""
        key = scheme_key(get_target(tname).quantization, transformer)
        if key not in cache:
            tag = f"{name}.{len(cache)}"
            t0 = time.perf_counter()
            rep = quantize_model(fp32, work / f"{tag}.int8.onnx", get_target(tname), calib, task=entry.task, **judged)
            hubs = [("edgekit int8", work / f"{tag}.int8.onnx", time.perf_counter() - t0)]
            ft_rep = None
            if finetune:
                t0 = time.perf_counter()
                ft_rep = quantize_model(fp32, work / f"{tag}.int8-ft.onnx", get_target(tname), calib, task=entry.task,
                                        finetune_steps=finetune, **judged)
                hubs.append((f"edgekit int8 ft{finetune}", work / f"{tag}.int8-ft.onnx", time.perf_counter() - t0))
            cache[key] = (hubs, rep, ft_rep)
        return cache[key]

    _, report, ft_report = edgekit_hubs("onnxruntime")
    budget = None
    if max_drop is not None and labels is None and entry.task == "classification":
        t0 = time.perf_counter()
        budget = work / f"{name}.int8-budget.onnx"
        budget_report = quantize_model(fp32, budget, get_target("onnxruntime"), calib, held_out=held, task=entry.task,
                                       max_drop=max_drop, fallback=fallback, finetune_steps=finetune or None)
        budget_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    peer_ort = ort_default(fp32, work / f"{name}.ortdefault.onnx", calib)
    peer_ort_s = time.perf_counter() - t0

    artifacts: list[tuple[str, str, str, list[Path], float | None]] = []
    for tname, mod in (("onnxruntime", ort_mod), ("openvino", ov_mod)):
        target = get_target(tname)
        for variant, hub, qsec in (("fp32", fp32, None), *edgekit_hubs(tname)[0]):
            files = mod.lower(hub, target, work / f"{name}.{tname}.{variant.split()[-1]}", {})
            artifacts.append((tname, variant, mod.NAME, files, qsec))
        if budget is not None:
            files = mod.lower(budget, target, work / f"{name}.{tname}.budget", {})
            artifacts.append((tname, f"edgekit max-drop {max_drop}", mod.NAME, files, budget_s))
        if tname == "onnxruntime":
            files = mod.lower(peer_ort, target, work / f"{name}.{tname}.ortdefault", {})
            artifacts.append((tname, "ort-default int8", mod.NAME, files, peer_ort_s))
        else:
            try:
                t0 = time.perf_counter()
                files = nncf_ov(fp32, work / f"{name}.openvino.nncf.xml", calib)
                artifacts.append((tname, "nncf int8", mod.NAME, files, time.perf_counter() - t0))
            except Exception as exc:  # noqa: BLE001
                print(f"  nncf failed on {name}: {exc}", file=sys.stderr)
    for tname, mod in (("openvino", ov_mod), ("tflite", None)):  # float16 weights: the float baseline's twin
        try:
            mod = mod or get_backend("tflite")
            files = mod.lower(fp32, get_target(tname), work / f"{name}.{tname}.fp16", {"precision": "fp16"})
            artifacts.append((tname, "edgekit fp16", mod.NAME, files, None))
        except Exception as exc:  # noqa: BLE001
            print(f"  fp16 skipped for {name} on {tname}: {type(exc).__name__}: {str(exc)[:160]}", file=sys.stderr)
    try:
        tfl = get_backend("tflite")
        for variant, hub, qsec in (("fp32", fp32, None), *edgekit_hubs("tflite")[0]):
            files = tfl.lower(hub, get_target("tflite"), work / f"{name}.tflite.{variant.split()[-1]}",
                              {"precision": "int8" if "int8" in variant else "fp32"})
            artifacts.append(("tflite", variant, "tflite", files, qsec))
    except Exception as exc:  # noqa: BLE001
        print(f"  tflite skipped for {name}: {type(exc).__name__}: {str(exc)[:160]}", file=sys.stderr)

    rows = []
    np.savez(work / f"{name}.feed.npz", **feed)  # --retime times the kept artifacts on this sample
    for runtime, variant, backend, files, qsec in artifacts:
        row = {"model": name, "runtime": runtime, "variant": variant, "size_bytes": files_size(files),
               "quantize_seconds": round(qsec, 1) if qsec else None, "backend": backend,
               "files": [str(f.relative_to(work)) for f in files]}
        try:
            sess = time_row(row, work, feed, runs)
            row.update(accuracy(sess, ref, held, entry.task, labels))
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc()
        rows.append(row)
    ratios(rows)
    summary = {k: report[k] for k in ("method", "float_layers", "quantized_nodes", "bias_corrected_layers")}
    summary["scheme"] = report["scheme"]["name"]
    summary["op_policy"] = report["scheme"]["op_policy"]
    summary["calibration_samples"] = report["calibration"]["samples"]
    summary["held_out"] = report["accuracy"]
    if finetune and ft_report is not None and ft_report["finetune"] and "steps" in ft_report["finetune"]:
        summary["finetune"] = {**ft_report["finetune"], "held_out": ft_report["accuracy"]}
    if budget is not None:
        summary["max_drop"] = {"max_drop": max_drop, "float_layers": budget_report["float_layers"],
                               "fallback_order": budget_report["fallback_order"],
                               "seconds": round(budget_s, 1),
                               "held_out": budget_report["accuracy"], "confirmation": budget_report["confirmation"],
                               "search": budget_report["search"],
                               "finetune": budget_report["finetune"]}
    rows.append({"model": name, "runtime": "-", "variant": "edgekit report", "report": summary})
    return rows


def time_row(row: dict, work: Path, feed: dict, runs: int):
    """Median latency of the row's artifact with 1 and 2 threads; returns the last session."""
    mod = get_backend(row["backend"])
    for threads in (1, 2):
        sess = mod.load(work / row["files"][0], LoadOptions(threads=threads))
        row[f"latency_ms_{threads}t"] = round(latency(sess, feed, runs), 3)
    return sess


def ratios(rows: list[dict]) -> None:
    """Size and latency of each variant against the fp32 artifact of its model and runtime."""
    for row in rows:
        ref = next((r for r in rows if r["model"] == row["model"] and r["runtime"] == row["runtime"]
                    and r.get("variant") == "fp32"), None)
        if row.get("variant") == "fp32" or not ref or not row.get("latency_ms_1t") or not ref.get("latency_ms_1t"):
            continue
        row["latency_ratio_1t"] = round(row["latency_ms_1t"] / ref["latency_ms_1t"], 3)
        row["latency_ratio_2t"] = round(row["latency_ms_2t"] / ref["latency_ms_2t"], 3)
        row["size_ratio"] = round(row["size_bytes"] / ref["size_bytes"], 3)


def retime(rows: list[dict], work: Path, runs: int) -> None:
    """--retime: time again the artifacts a --keep run left (sizes and accuracy stay that run's)."""
    for name in dict.fromkeys(r["model"] for r in rows):
        feed = dict(np.load(work / f"{name}.feed.npz"))
        for row in rows:
            if row["model"] == name and "files" in row and "error" not in row:
                time_row(row, work, feed, runs)
                print(f"{name} {row['runtime']} {row['variant']}: {row['latency_ms_1t']} / {row['latency_ms_2t']} ms",
                      file=sys.stderr, flush=True)
    ratios(rows)


def table(rows: list[dict]) -> str:
    head = f"{'model':13} {'runtime':11} {'variant':24} {'size MB':>8} {'xfp32':>6} {'1t ms':>8} {'2t ms':>8} " \
           f"{'x1t':>6} {'x2t':>6} {'metric':15} {'value':>7} {'decisive':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "report" in r:
            continue
        if "error" in r:
            lines.append(f"{r['model']:13} {r['runtime']:11} {r['variant']:24} error: {r['error'][:60]}")
            continue
        lines.append(
            f"{r['model']:13} {r['runtime']:11} {r['variant']:24} {r['size_bytes'] / 1e6:8.2f} "
            f"{r.get('size_ratio', 1.0):6.3f} {r['latency_ms_1t']:8.2f} {r['latency_ms_2t']:8.2f} "
            f"{r.get('latency_ratio_1t', 1.0):6.3f} {r.get('latency_ratio_2t', 1.0):6.3f} "
            f"{r['metric']:15} {r['value']:7.4f} "
            f"{'' if r.get('decisive_agreement') is None else format(r['decisive_agreement'], '8.4f')}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,minilm,mnist_cnn")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples (all methods get the same ones)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per latency figure")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quantize.json"), help="JSON results file")
    ap.add_argument("--finetune", type=int, default=0, metavar="STEPS",
                    help="also build an --int8-finetune STEPS variant (end-to-end fine-tuned int8)")
    ap.add_argument("--max-drop", type=float, default=0.03,
                    help="also build a --max-drop variant for classifiers judged on held-out agreement "
                         "(fine-tuned first when --finetune is given)")
    ap.add_argument("--no-max-drop", action="store_true", help="no --max-drop variant")
    ap.add_argument("--fallback", default="e2e", choices=("e2e", "e2e-cost", "e2e-greedy", "layer"),
                    help="--max-drop fallback order: end-to-end gain (default), gain per float MAC, per-layer error")
    ap.add_argument("--keep", metavar="DIR", help="keep the artifacts in DIR (for --retime)")
    ap.add_argument("--retime", action="store_true", help="time again the artifacts of --out kept in --keep DIR "
                    "(e.g. quantize on a busy machine, time on a quiet one); sizes and accuracy stay that run's")
    args = ap.parse_args()
    rows: list[dict] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.retime:
        if not args.keep:
            ap.error("--retime needs --keep DIR (the folder of the run that wrote --out)")
        doc = json.loads(out.read_text())
        retime(doc["rows"], Path(args.keep).resolve(), args.runs)
        doc["meta"]["retimed"] = {"runs": args.runs}
        out.write_text(json.dumps(doc, indent=1, default=str))
        print(table(doc["rows"]))
        return
    import onnxruntime
    import openvino

    meta = {"host": platform.processor() or platform.machine(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__, "calibration_samples": args.calib,
            "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-q-") as tmp:
        work = Path(args.keep).resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            print(f"== {name}", file=sys.stderr)
            rows += bench_model(name, args.calib, args.runs, work, None if args.no_max_drop else args.max_drop,
                                args.finetune, args.fallback)
            out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))  # each model as it ends
    print(table(rows))
    for r in rows:
        if "report" in r:
            print(f"{r['model']}: edgekit {r['report']['scheme']}, {r['report']['method']}, op policy "
                  f"{r['report']['op_policy']}, {r['report']['quantized_nodes']} int8 nodes, "
                  f"{r['report']['bias_corrected_layers']} bias-corrected")
            if "finetune" in r["report"]:
                ft = r["report"]["finetune"]
                print(f"  --int8-finetune {ft['steps']}: loss {ft['loss_before']} -> {ft['loss_after']} in "
                      f"{ft['seconds']} s, {ft['layers']} layers, {ft['activation_scales']} activation ranges; "
                      f"held out {ft['held_out']}")
            if "max_drop" in r["report"]:
                md = r["report"]["max_drop"]
                print(f"  --max-drop {md['max_drop']} ({md['fallback_order']} order): {len(md['float_layers'])} "
                      f"layers float ({md['held_out']['held_out']}, {md['seconds']} s), search "
                      f"{[(t['kept_float'], round(t['drop'], 4)) for t in md['search']]}")
                if md.get("confirmation"):
                    print(f"    confirmed on samples the choice never saw: {md['confirmation']['held_out']}")
                if (md.get("finetune") or {}).get("fallback_first"):
                    bf = md["finetune"]
                    print(f"  --max-drop with --int8-finetune: {bf['float_before']} -> {bf['float_after']} layers float "
                          f"({bf['outcome']})")
                    for rd in bf["rounds"]:
                        print(f"    fine-tuned with {rd['tuned_with_float']} float -> {rd['float']} "
                              f"({'kept' if rd['kept'] else 'not kept'}, {rd['seconds']} s), tries "
                              f"{[(t['kept_float'], t['drop']) for t in rd['tries']]}")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
