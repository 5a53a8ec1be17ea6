"""The convert pipeline: a readable list of stages, each a function of the job state.

load -> [prune + distill] -> export (hub ONNX fp32) -> samples -> reference outputs
     -> per target: [quantize (once per scheme)] -> lower -> verify -> [profile] -> commit (atomic)
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.data import SampleSet, load_samples, synthetic_samples
from edgekit.errors import DataError, EdgekitError, MissingDependencyError, UsageError, VerificationError
from edgekit.memory import release_freed_memory
from edgekit.progress import log, warn
from edgekit.reference_memo import ReferenceMemo
from edgekit.sources.model import LoadedModel
from edgekit.targets import Target

VERIFY_SAMPLES = 32  # fp32 verification samples drawn from the calibration set
FEW_CALIBRATION_SAMPLES = 32  # fewer int8 calibration samples than this: a warning
DEFAULT_CALIBRATION_SIZE = 256  # int8 calibration samples used when --calibration-size is not given


@dataclass
class Job:
    model: str
    targets: list[Target]
    outdir: Path
    precision: str | None = None
    input_shapes: dict[str, tuple[int, ...]] | None = None
    weights: Path | None = None
    calibration: str | None = None
    calibration_size: int | None = None
    calibration_method: str | None = None
    verify: bool = True
    io_layout: str = "nchw"
    io_dtype: str = "float"
    prune: float | None = None
    prune_macs: float | None = None
    prune_exclude: tuple[str, ...] = ()
    round_to: int = 8
    importance: str = "auto"
    allocation: str = "auto"
    layout_by_latency: bool = False
    distill_steps: int = 0
    max_drop: float | None = None
    fallback_order: str = "e2e"
    int8_finetune: int | None = None
    eval_data: str | None = None
    profile: str | None = None
    name: str | None = None
    seed: int = 0
    task: str = "auto"  # what the outputs are: auto | classification | embedding | generic (distill.TASKS)


@dataclass
class State:
    job: Job
    work: Path
    model: LoadedModel | None = None
    hub: Path | None = None
    samples: SampleSet | None = None  # everything the user gave (or synthetic)
    verify_fp32: SampleSet | None = None
    calib: SampleSet | None = None  # int8 calibration part
    held_out: SampleSet | None = None  # int8 verification part (never used for calibration)
    refs: dict[str, list] = field(default_factory=dict)  # reference outputs keyed by sample-set role
    quantized: dict[str, tuple[Path, dict]] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    staged: list[tuple[Path, Path]] = field(default_factory=list)  # (temp file, final path)
    info: dict[str, Any] = field(default_factory=dict)
    memo: ReferenceMemo = field(default_factory=ReferenceMemo)  # source outputs per sample, each run once
    calib_stats: dict = field(default_factory=dict)  # calibration statistics shared by int8 schemes (static.py)


# ---------------------------------------------------------------- stages
def stage_load(st: State) -> None:
    from edgekit.sources import load_model

    log(f"loading {st.job.model}")
    st.model = load_model(st.job.model, weights=st.job.weights, input_shapes=st.job.input_shapes)
    if st.job.name:
        st.model.name = st.job.name
    if st.job.task != "auto":  # judged (verification, --max-drop, distillation) as the user says, not as guessed
        st.model.task = st.job.task
    m = st.model
    st.info["model"] = {
        "name": m.name, "kind": m.kind, "task": m.task,
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in m.inputs],
        "outputs": list(m.output_names),
    }
    if m.module is not None:
        st.info["model"]["params"] = int(sum(p.numel() for p in m.module.parameters()))


def stage_samples(st: State) -> None:
    m, job = st.model, st.job
    spec = job.calibration or m.calibration
    samples = None
    if spec:
        try:
            samples = load_samples(spec, m.inputs, seed=job.seed)
            if not job.calibration:
                log(f"using the shipped calibration set '{spec}' of {m.name}")
            elif samples.meta.get("kind") == "images":
                from edgekit.data.images import describe

                log(f"{samples.description}: {describe(samples.meta)}")
        except (DataError, MissingDependencyError) as exc:
            if job.calibration or any(p == "int8" for p in _precisions(job)):
                raise
            warn(f"the shipped calibration set '{spec}' is unavailable ({exc})")
            samples = None
    if samples is None and any(t == "int8" for t in _precisions(job)):
        samples = _default_photos(m)
        if samples is None:
            raise UsageError("int8 needs calibration data", hint="give --calibration DATA (.npz/.npy, image folder, "
                             "text file, or a shipped set such as natural_images)")
    if samples is None:
        warn("no --calibration given: verifying on synthetic random inputs (give real samples for a meaningful check)")
        import numpy as np

        from edgekit.data.id_bounds import id_bounds

        high = id_bounds(m.module, m.onnx_path, [i.name for i in m.inputs if np.dtype(i.dtype).kind in "iu"])
        samples = synthetic_samples(m.inputs, count=8, seed=job.seed, id_high=high)
    if job.calibration_size is not None and job.calibration_size > len(samples):
        warn(f"--calibration-size {job.calibration_size} is more than the data holds ({samples.description}): "
             f"using all {len(samples)}")
    st.samples = samples.select(job.calibration_size, seed=job.seed)
    st.verify_fp32 = st.samples.select(VERIFY_SAMPLES, seed=job.seed + 1)
    if any(t == "int8" for t in _precisions(job)):
        st.calib, st.held_out = st.samples.split(held_out=0.25, seed=job.seed)
        if job.calibration_size is None:  # range statistics settle long before this; keeps big sets quick
            st.calib = st.calib.select(DEFAULT_CALIBRATION_SIZE, seed=job.seed)
        st.held_out = st.held_out.select(max(VERIFY_SAMPLES, 100), seed=job.seed + 2)
        if len(st.calib) < FEW_CALIBRATION_SAMPLES:
            warn(f"int8 ranges from {len(st.calib)} calibration sample(s), int8 checked on {len(st.held_out)} "
                 f"held-out one(s) ({samples.description}): ranges from so few rarely hold on new inputs; give "
                 f"{FEW_CALIBRATION_SAMPLES * 4}+ representative samples (--calibration)")
    if job.task == "auto" and m.task == "classification" and m.kind != "zoo":
        _confirm_classifier(st)


def _default_photos(m: LoadedModel) -> SampleSet | None:
    """int8 without --calibration for a model with one RGB image input (N, 3, H, W) or (N, H, W, 3): the shipped
    natural_images photos, ImageNet-normalized for a float input, raw pixels for a uint8 one, with a warning
    naming that assumption; else None. Verification then judges the int8 artifact on held-out photos."""
    import numpy as np

    if len(m.inputs) != 1 or len(m.inputs[0].shape) != 4 or np.dtype(m.inputs[0].dtype) not in (np.float32,
                                                                                                   np.uint8):
        return None
    shape = m.inputs[0].shape
    if 3 not in (shape[1], shape[3]) or any(isinstance(d, int) and d < 8 for d in (shape[1:3] if shape[3] == 3
                                                                                    else shape[2:])):
        return None
    try:
        samples = load_samples("natural_images", m.inputs, preprocess="imagenet")
    except (DataError, MissingDependencyError):
        return None
    what = "raw RGB pixels" if np.dtype(m.inputs[0].dtype) == np.uint8 else "ImageNet preprocessing (mean/std " \
        "normalized RGB)"
    warn(f"no --calibration: int8 ranges from the shipped natural_images photos with {what}; if the model "
         "expects other inputs, give --calibration with its own samples (an image folder with a preprocess spec, "
         "or a .npz)")
    return samples


def _confirm_classifier(st: State) -> None:
    """The shape guess (one (N, C) output: a classifier) checked on a few real samples: a landmark or box
    regressor's output is not class scores, and top-1 agreement of its coordinates would judge it."""
    from edgekit.verify import looks_like_class_scores, looks_like_unit_embeddings

    try:
        outs = st.memo.outputs(st.model, st.verify_fp32.select(8, seed=st.job.seed))
    except Exception:  # noqa: BLE001 - the references stage runs the model again and reports its failure
        return
    if looks_like_unit_embeddings([o[0] for o in outs]):  # ends in an L2 normalization: an embedding model
        st.model.task = st.info["model"]["task"] = "embedding"
        log(f"output '{st.model.output_names[0]}' has unit-norm rows: judged as an embedding (cosine), not by "
            "top-1 agreement (--task classification to override)")
    elif not looks_like_class_scores([o[0] for o in outs]):
        st.model.task = st.info["model"]["task"] = "generic"
        log(f"output '{st.model.output_names[0]}' is (N, C) but not class scores (no negative logit, rows not "
            "summing to 1): judged by error and cosine, not top-1 agreement (--task classification to override)")


def stage_prune(st: State) -> None:
    job = st.job
    if job.prune is None and job.prune_macs is None and not job.distill_steps:
        return
    if st.model.module is None:
        raise UsageError("pruning and distillation need a torch model; this source is ONNX-only",
                         hint="pass the torch model as a Python factory (pkg.module:fn, optionally --weights) or zoo:NAME")
    from edgekit.prune.stage import prune_and_distill

    st.info["prune"] = prune_and_distill(st, st.work)
    st.model.meta.pop("exported_program", None)  # the pruned module is what gets exported now


def stage_export(st: State) -> None:
    m = st.model
    st.hub = st.work / f"{m.name}.fp32.onnx"
    if m.module is not None:
        from edgekit.export import export_onnx

        log("exporting to ONNX")
        export_onnx(m.module, m.inputs, m.output_names, st.hub, exported=m.meta.get("exported_program"))
    else:
        import onnx

        from edgekit.export import explicit_conv_pads
        from edgekit.sources.onnx_file import (
            fill_input_shapes,
            inline_functions,
            topo_sort,
            unique_node_names,
        )

        model = onnx.load(str(m.onnx_path), load_external_data=True)
        topo_sort(model)
        rewrites = []
        if model.functions:  # model-local functions: OpenVINO and TFLite lower plain ops
            model = inline_functions(model)
            rewrites += [] if model.functions else ["model-local functions inlined"]
        if fill_input_shapes(model, m.inputs):  # no shape in the file: --input-shape's (OpenVINO needs a rank)
            rewrites.append("input shapes from --input-shape")
        if explicit_conv_pads(model):  # auto_pad SAME with a dilation: ONNX Runtime refuses to run it
            rewrites.append("Conv auto_pad SAME written as explicit pads")
        if unique_node_names(model):  # ONNX Runtime refuses two nodes of one name
            rewrites.append("repeated node names made unique")
        if rewrites:
            m.meta["hub_rewrites"] = "; ".join(rewrites)
        from edgekit.onnx_size import save_onnx

        save_onnx(model, st.hub)  # one self-contained file, or weights in <hub>.data past protobuf's 2 GB
    st.info["model"]["onnx_size_bytes"] = sum(f.stat().st_size for f in (st.hub, Path(f"{st.hub}.data")) if f.exists())


INDEX_ERROR = re.compile(r"out of (data )?(bounds|range)|index .* is out of", re.IGNORECASE)


def _reference_source(st: State):
    """The model whose outputs are the references: the source itself; for an ONNX file that ONNX Runtime
    refuses as is but runs after an exact rewrite in the hub (hub_rewrites), the hub, said in the log."""
    rewrites = st.model.meta.get("hub_rewrites")
    if st.model.module is not None or not rewrites:
        return st.model
    from dataclasses import replace

    from edgekit.verify import reference_outputs

    try:
        reference_outputs(st.model, [next(iter(st.verify_fp32))])
        return st.model
    except Exception as exc:  # noqa: BLE001
        log(f"ONNX Runtime does not run the source as is ({str(exc).splitlines()[0][-120:]}); references come "
            f"from the same graph with {rewrites}")
        return replace(st.model, onnx_path=st.hub)


def stage_references(st: State) -> None:
    import numpy as np

    from edgekit.data.id_bounds import check_ids, id_bounds
    from edgekit.verify import reference_outputs

    bounds = id_bounds(onnx_path=st.hub, names=[i.name for i in st.model.inputs if np.dtype(i.dtype).kind in "iu"])
    for samples in (st.verify_fp32, st.calib, st.held_out):  # the samples the runtimes will be given
        check_ids(samples, bounds, st.samples.description)
    from edgekit.data.failing_sample import Tracked, data_failure

    tracked = None
    try:
        source = _reference_source(st)
        for role, samples in _reference_roles(st):  # each sample through the source once (reference_memo.py)
            todo = st.memo.missing(source, samples)
            if len(todo):
                st.memo.store(source, todo, reference_outputs(source, tracked := Tracked(todo)))
            st.refs[role] = st.memo.get(source, samples)
    except Exception as exc:  # noqa: BLE001 - random ids past an axis the model indexes with them (id_bounds.py)
        ints = [i.name for i in st.model.inputs if np.dtype(i.dtype).kind in "iu"]
        if st.samples.synthetic and ints and INDEX_ERROR.search(str(exc)):
            from edgekit.data.id_bounds import synthetic_index_error

            why = (str(exc).split("Status Message:")[-1].strip().splitlines() or [""])[-1]
            raise synthetic_index_error(ints, f"the model failed on random ids ({why[-160:]})",
                                        list(st.model.inputs)) from exc
        if not st.samples.synthetic and tracked is not None and tracked.last is not None \
                and not isinstance(exc, EdgekitError):  # the source model itself fails on a user sample
            raise data_failure(st.samples, tracked, exc) from exc
        raise
    first = next((st.refs[r] for r in ("fp32", "int8") if st.refs.get(r)), None)
    if st.model.task == "classification" and first:
        from edgekit.verify import class_axis_problem

        problem = class_axis_problem(first[0][0])
        if problem:
            raise UsageError(f"--task classification: output '{st.model.output_names[0]}' has no single class axis: "
                             f"{problem}", hint="use --task generic (each output compared by error and cosine)")
    unpruned = st.model.meta.get("unpruned_module")
    if unpruned is not None:  # pruned: artifacts are gated on the pruned model, and compared with the original
        from dataclasses import replace

        original = replace(st.model, module=unpruned)
        for role, samples in _reference_roles(st):
            st.refs[f"unpruned:{role}"] = st.memo.outputs(original, samples)


def _reference_roles(st: State) -> list[tuple[str, SampleSet]]:
    """The sample sets verification compares on: fp32 (fp32/fp16 artifacts) and int8 (held out from calibration).
    The fp32 set is skipped when every artifact is int8 and has its held-out set (a ResNet-50 ran 32 needless
    torch passes)."""
    roles = [("int8", st.held_out)] if st.held_out is not None else []
    if st.held_out is None or any(p != "int8" for p in _precisions(st.job)):
        roles.insert(0, ("fp32", st.verify_fp32))
    return roles


def stage_targets(st: State) -> None:
    for target in st.job.targets:
        precision = st.job.precision or target.precision
        if precision not in target.precisions:
            raise UsageError(f"target '{target.name}' does not offer {precision}",
                             hint=f"it offers: {', '.join(target.precisions)}")
        st.artifacts.append(build_artifact(st, target, precision))
        release_freed_memory()


def build_artifact(st: State, target: Target, precision: str) -> dict[str, Any]:
    from edgekit.backends import get_backend
    from edgekit.backends.base import LoadOptions

    backend = get_backend(target.backend)
    hub, qreport = st.hub, None
    if precision == "int8":
        hub, qreport = quantized_hub(st, target)
    stage_dir = st.work / f"{target.name}.{precision}"
    stage_dir.mkdir()
    stem = stage_dir / artifact_stem(st.model.name, target, precision, backend.SUFFIXES[0])
    options = {"io_layout": st.job.io_layout, "io_dtype": st.job.io_dtype, "precision": precision,
               "input_shapes": {i.name: tuple(i.shape) for i in st.model.inputs}}  # str = still dynamic
    if qreport is not None and qreport.get("quantized_nodes") == 0:  # --max-drop kept every layer float, or none fit
        why = (f"--max-drop {st.job.max_drop} kept every layer float" if st.job.max_drop is not None else
               "no layer was quantized (layers inside If/Loop branches, or ops int8 does not cover)")
        warn(f"{why}: the {target.name} int8 artifact computes in float")
        options["precision"] = "fp32"  # a backend that lowers int8 from Q/DQ (TFLite) finds none: lower it as float
    log(f"lowering to {target.name} ({precision})")
    files = backend.lower(hub, target, stem, options)
    entry: dict[str, Any] = {
        "target": target.name, "backend": target.backend, "precision": precision,
        "path": None, "files": [], "size_bytes": sum(f.stat().st_size for f in files if f.suffix != ".ort"),
        "sha256": _sha256(files[0]), "quantization": qreport, "verification": None, "profile": None,
        # every file of the artifact (an OpenVINO .bin, an .ort beside the .onnx), for build caches
        "file_sha256": {f.name: _sha256(f) for f in files},
    }
    if st.job.verify:
        load_options = LoadOptions(extra={"io_layout": st.job.io_layout})
        entry["verification"] = verify_artifact(st, backend, files[0], target, precision, load_options)
        others = [f for f in files[1:] if f.suffix in backend.SUFFIXES]  # an .ort beside the .onnx: run it too
        if others:
            entry["verification"]["files"] = {
                f.name: verify_artifact(st, backend, f, target, precision, load_options, label=f" ({f.suffix})")
                for f in others}
    for f in files:
        final = st.job.outdir / f.name
        st.staged.append((f, final))
        entry["files"].append(str(final))
    entry["path"] = entry["files"][0]
    return entry


def _eval_samples(st: State):
    """The labelled --eval set; its reader's errors say they are about --eval (the readers serve every data option)."""
    try:
        samples = load_samples(st.job.eval_data, st.model.inputs)
    except DataError as exc:
        raise DataError(f"--eval data: {exc.message}", hint=exc.hint) from exc
    if samples.labels is None:  # a text file or an .npz without 'labels': the metric was skipped, silently
        raise DataError(f"--eval data {st.job.eval_data}: no labels, so no accuracy can be measured on it",
                        hint="give an .npz of the model's inputs plus a 'labels' array (one class per sample)")
    return samples


def _hub_is_transformer(st: State) -> bool:
    meta = st.model.meta
    if "hub_is_transformer" not in meta:
        import onnx

        from edgekit.quantize.ops import is_transformer

        meta["hub_is_transformer"] = is_transformer(onnx.load(str(st.hub), load_external_data=False))
    return bool(meta["hub_is_transformer"])


def _hub_op_types(st: State) -> set[str]:
    meta = st.model.meta
    if "hub_op_types" not in meta:
        import onnx

        meta["hub_op_types"] = sorted({n.op_type for n in onnx.load(str(st.hub), load_external_data=False).graph.node})
    return set(meta["hub_op_types"])


def quantized_hub(st: State, target: Target) -> tuple[Path, dict]:
    """One calibration per quantization scheme, shared by every target that uses it."""
    scheme = dict(target.quantization)
    if st.job.calibration_method:
        scheme["calibration_method"] = st.job.calibration_method
    if st.job.int8_finetune is not None:
        scheme["finetune_steps"] = st.job.int8_finetune
    from edgekit.quantize.scheme import scheme_key

    key = scheme_key(scheme, _hub_is_transformer(st), _hub_op_types(st))
    if key not in st.quantized:
        from edgekit.quantize import quantize_model

        out = st.work / f"{st.model.name}.int8-{key}.onnx"
        eval_set = _eval_samples(st) if st.job.eval_data else None
        log(f"quantizing to int8 ({_scheme_line(st, target)})")
        report = quantize_model(st.hub, out, target, st.calib, method=st.job.calibration_method,
                                held_out=st.held_out, task=st.model.task, max_drop=st.job.max_drop,
                                eval_set=eval_set, finetune_steps=st.job.int8_finetune,
                                fallback=st.job.fallback_order, shared=st.calib_stats)
        st.quantized[key] = (out, report)
    return st.quantized[key]


def _scheme_line(st: State, target: Target) -> str:
    """What the quantizer is about to do, as the scheme it will use says (calibrated ranges, or none)."""
    from edgekit.quantize.scheme import scheme_for

    s = scheme_for(target, st.job.calibration_method, st.job.int8_finetune)
    if s.transformer_activations != "static" and not s.op_types and _hub_is_transformer(st):
        per_run = ("quantized per run by ONNX Runtime" if s.transformer_activations == "dynamic"
                   else "float, quantized by the runtime per run")
        return f"transformer graph: int8 weights, activations {per_run}; no ranges to calibrate"
    return f"{s.activations} activations, {s.method} calibration, {len(st.calib)} samples"


def _ranked_groups(st: State) -> list[dict[str, Any]]:
    """The graph outputs an in-graph TopK ranks (once per run, from the fp32 hub graph)."""
    meta = st.model.meta
    if "ranked_groups" not in meta:
        import onnx

        from edgekit.verify_ranked import ranked_groups

        meta["ranked_groups"] = ranked_groups(onnx.load(str(st.hub), load_external_data=False))
    return meta["ranked_groups"]


def _quantity_outputs(st: State) -> list[int]:
    """Integer outputs that are rounded quantities (a uint8 image), from the fp32 hub graph (verify_quantities.py)."""
    meta = st.model.meta
    if "quantity_outputs" not in meta:
        import onnx

        from edgekit.verify_quantities import quantity_outputs

        meta["quantity_outputs"] = quantity_outputs(onnx.load(str(st.hub), load_external_data=False))
    return meta["quantity_outputs"]


def _random_nodes(st: State) -> list[str]:
    """The hub graph's nodes that draw random numbers (once per run; verify_random.py)."""
    meta = st.model.meta
    if "random_nodes" not in meta:
        import onnx

        from edgekit.verify_random import random_nodes

        meta["random_nodes"] = random_nodes(onnx.load(str(st.hub), load_external_data=False))
    return meta["random_nodes"]


def verify_artifact(st: State, backend, path: Path, target: Target, precision: str, options,
                    label: str = "") -> dict[str, Any]:
    from edgekit.verify import check, compare, run_all, summary
    from edgekit.verify_ranked import align_ranked

    role = "int8" if precision == "int8" else "fp32"
    samples = st.held_out if precision == "int8" else st.verify_fp32
    refs = st.refs[role]
    from edgekit.errors import ModelLoadError

    try:
        session = backend.load(path, options)
    except ModelLoadError as exc:  # the file edgekit just wrote: its runtime refusing it is edgekit's bug, not bad input
        why = exc.message.removeprefix(f"{path}: ")
        raise EdgekitError(f"the {target.name} {precision} artifact edgekit wrote does not load: {why}",
                           hint="a bug in edgekit: please report it with the model") from exc
    outputs = run_all(session, samples)
    ranked = _ranked_groups(st)
    try:
        outputs = align_ranked(refs, outputs, ranked)  # TopK rows in the reference's order (verify_ranked.py)
        figures = compare(refs, outputs, st.model.task, _quantity_outputs(st))
    except ValueError as exc:  # the artifact's outputs differ in count or shape from the source model's
        raise VerificationError(f"{target.name} {precision} artifact failed verification: {exc}",
                                hint="nothing was written; the backend lowered the model wrongly") from exc
    if precision == "int8":
        graph_outs = align_ranked(refs, quantized_refs(st, target), ranked)
        figures["quantized_graph"] = compare(refs, graph_outs, st.model.task, _quantity_outputs(st))
        import onnx

        from edgekit.verify_steps import output_steps, within_one_step

        hub_path, _ = quantized_hub(st, target)  # int8 rounding, not a lowering error (verify_steps.py)
        figures["quantized_graph"]["within_one_step"] = within_one_step(
            graph_outs, outputs, output_steps(onnx.load(str(hub_path), load_external_data=False)))
    if f"unpruned:{role}" in st.refs:
        figures["vs_unpruned"] = compare(st.refs[f"unpruned:{role}"], outputs, st.model.task, _quantity_outputs(st))
    passed, failures = check(figures, target.tolerances(precision))
    figures.update(passed=passed, synthetic=bool(samples.synthetic), failures=failures)
    level = log if passed else warn
    level(f"verify {target.name} {precision}{label}: {summary(figures)} "
          f"on {figures['samples']} samples -> {'ok' if passed else 'FAILED'}")
    if not passed:
        hint = "nothing was written; use --no-verify to keep it anyway"
        if st.job.task == "auto" and any(f.startswith("top-1 agreement") for f in failures):
            hint = (f"the output was judged as class scores, a guess from its shape: if it is an embedding or a "
                    f"regression, pass --task embedding or --task generic; {hint}")
        drawn = _random_nodes(st)
        if drawn:  # no artifact can match a source that samples (verify_random.py)
            failures.append(f"the model draws random numbers ({', '.join(drawn[:3])}), so its outputs change from "
                            "run to run")
            hint = ("make forward() deterministic for export (the latent's mean instead of a sample, as in eval "
                    "mode), or keep the artifact with --no-verify")
        raise VerificationError(f"{target.name} {precision}{label} artifact failed verification: {'; '.join(failures)}",
                                hint=hint)
    return figures


def artifact_stem(model: str, target: Target, precision: str, ext: str) -> str:
    """`model.target[.int8|.fp16]`; the target is left out where it only repeats the extension (m.tflite)."""
    parts = [model] + ([] if f".{target.name}" == ext else [target.name]) + ([precision] if precision != "fp32" else [])
    return ".".join(parts)


def quantized_refs(st: State, target: Target) -> list:
    """What the int8 hub graph computes on the held-out samples (once per scheme)."""
    hub, _ = quantized_hub(st, target)
    key = f"qdq:{_sha256(hub)}"  # by content: two schemes' identical int8 graphs (a transformer's) run once
    if key not in st.refs:
        from edgekit.backends.base import LoadOptions
        from edgekit.backends.onnxruntime import load
        from edgekit.verify import run_all

        # no graph optimizations: Q/DQ run as written (the int8 graph's exact semantics), not ORT's fused kernels
        st.refs[key] = run_all(load(hub, LoadOptions(extra={"optimization": "none"})), st.held_out)
    return st.refs[key]


def commit(st: State) -> None:
    """All or nothing: everything verified first, then each file renamed into place (same filesystem);
    when a rename fails, the files already moved are undone, so the folder holds what it held before."""
    umask = os.umask(0)
    os.umask(umask)
    for _, final in st.staged:
        if final.is_dir():
            raise UsageError(f"{final} is a folder where an artifact goes", hint="move it away or choose another -o")
    undo: list[tuple[Path, Path | None]] = []  # (final, a hard link to the file it replaced)
    try:
        for tmp, final in st.staged:
            backup = st.work / f".replaced-{len(undo)}" if final.exists() else None
            if backup is not None:
                os.link(final, backup)
            os.chmod(tmp, 0o666 & ~umask)  # temp files are private (0600); artifacts get the usual mode
            undo.append((final, backup))  # before the rename: an interrupt just after it is undone too
            os.replace(tmp, final)
    except BaseException as exc:  # a failed rename, or Ctrl-C / SIGTERM between two (an .xml without its .bin)
        for done, backup in reversed(undo):
            if backup is None:
                done.unlink(missing_ok=True)
            else:
                os.replace(backup, done)
        if not isinstance(exc, OSError):
            raise
        raise UsageError(f"cannot write {final}: {exc.strerror}; nothing was changed",
                         hint="check the output folder's permissions and free space") from exc


def stage_profile(st: State) -> None:
    """Profiles the staged (verified, not yet committed) files: a failed profile is a failed run, so it
    must leave the output folder as it was."""
    if not st.job.profile:
        return
    from edgekit.backends import get_backend

    staged = {str(final): tmp for tmp, final in st.staged}
    targets = {t.name: t for t in st.job.targets}
    for art in st.artifacts:
        runnable = [f for f in art["files"] if Path(f).suffix in get_backend(art["backend"]).SUFFIXES]
        profiles = [_profile_one(st, targets[art["target"]], staged.get(f, Path(f)), f) for f in runnable]
        art["profile"] = profiles[0]
        if len(profiles) > 1:  # an .ort beside the .onnx: the file an app loads is timed too
            art["profile"]["files"] = {Path(f).name: p for f, p in zip(runnable[1:], profiles[1:])}


def _profile_one(st: State, target: Target, staged: Path, path: str) -> dict[str, Any]:
    """One file (`staged`, to be committed as `path`) on the --profile device, on the execution unit the target is
    for (its runtime `device`, e.g. an NPU); when the device has no such unit, on its CPU, and the result says so."""
    from edgekit.errors import DeviceError
    from edgekit.profile import profile_artifact

    log(f"profiling {Path(path).name} on {st.job.profile}")
    unit = str(target.runtime.get("device", "CPU")).upper()
    options = {"unit": unit.lower()} if unit not in ("", "CPU") else {}
    try:
        result = profile_artifact(staged, st.job.profile, options=options)
    except DeviceError as exc:
        if not options or unit not in exc.message.upper():
            raise
        warn(f"{target.name} is for the {unit}, which {st.job.profile} does not have ({exc.message}): timed on its CPU")
        result = profile_artifact(staged, st.job.profile)
        result["note"] = f"timed on the CPU: {st.job.profile} has no {unit} ({target.name} is for the {unit})"
    result["artifact"] = path
    return result


STAGES = [stage_load, stage_samples, stage_prune, stage_export, stage_references, stage_targets]


def run(job: Job) -> dict[str, Any]:
    created = not Path(job.outdir).exists()
    outdir = prepare_outdir(job.outdir)
    from edgekit.work_dir import make_work_dir, remove_work_dir

    work = make_work_dir(outdir)  # locked while this run lives; removes the folders of killed runs
    st = State(job=job, work=work)
    try:
        for stage in STAGES:
            stage(st)
            release_freed_memory()  # an exporter's or a session's freed buffers: not the next stage's baseline
        stage_profile(st)
        from edgekit.input_guard import check_not_inputs, input_files

        check_not_inputs([final for _, final in st.staged], input_files(job.model, job.weights, job.calibration,
                                                                       job.eval_data),
                         hint="nothing was written; choose another output folder (-o) or --name")
        commit(st)
    except BaseException:
        remove_work_dir(work)
        if created and not any(outdir.iterdir()):
            try:
                outdir.rmdir()  # leave no trace of a failed run
            except OSError:  # another edgekit writing into it meanwhile (parallel build tasks): its folder now
                pass
        raise
    remove_work_dir(work)
    return {"edgekit_version": _version(), **st.info, "artifacts": st.artifacts, "runtimes": runtime_versions()}


def prepare_outdir(outdir: Path) -> Path:
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"output path {outdir} exists and is not a folder", hint="pass a folder with -o")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=outdir, prefix=".edgekit-probe-")
        probe.close()
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {outdir}: {exc.strerror}",
                         hint="choose a writable folder with -o") from exc
    return outdir


def _precisions(job: Job) -> set[str]:
    return {job.precision or t.precision for t in job.targets}


def _sha256(path: Path) -> str:
    from edgekit.hashing import sha256_file

    return sha256_file(path)


def _version() -> str:
    from edgekit import __version__

    return __version__


def runtime_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("onnxruntime", "openvino", "ai-edge-litert", "onnx", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
