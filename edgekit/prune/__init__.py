"""Channel-level structured pruning of torch nn.Modules.

    model, report = prune_model(module, {"input": torch.randn(1, 3, 224, 224)}, macs_ratio=0.3)

Pipeline: trace (torch.fx) -> dependency groups (graph.py) -> importance (importance.py) ->
allocation + rounding to multiples (allocate.py) -> new dense layers (apply.py) -> checked shapes.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np

from edgekit.errors import UsageError
from edgekit.progress import log, warn
from edgekit.prune.allocate import ALLOCATIONS, allocate, give_back, search_ratio, select, tighten
from edgekit.prune.importance import ALIASES, IMPORTANCE, get_importance, taylor_grads
from edgekit.prune.macs import count_macs, count_params, graph_macs

__all__ = ["prune_model", "count_macs", "count_params", "save_pruned", "IMPORTANCE", "ALLOCATIONS",
           "IMPORTANCE_CHOICES", "ALLOCATION_CHOICES"]
# what the CLI, `edgekit distill` and edgekit.toml accept ("auto": prune/run.py resolve_auto)
IMPORTANCE_CHOICES = ("auto", *IMPORTANCE, *ALIASES)
ALLOCATION_CHOICES = ("auto", *ALLOCATIONS)


def _expand_exclude(module, patterns) -> set[str]:
    names = [n for n, _ in module.named_modules() if n]
    out: set[str] = set()
    for pat in patterns:
        hit = [n for n in names if n == pat or n.startswith(pat + ".") or fnmatch.fnmatchcase(n, pat)]
        if not hit:
            raise UsageError(f"--prune-exclude '{pat}' matches no layer of the model",
                             hint="give layer names as in model.named_modules(), e.g. features.0 or 'layer*.conv1'")
        out.update(hit)
    return out


def _to_tensors(feed: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(v) for k, v in feed.items()}


def _by_sensitivity(an, groups, removed_by, module, example_inputs, calib, task, means, round_to: int,
                    macs_removed, target: float) -> tuple[list[int], Any]:
    """(counts per group, layout -> predicted loss) from each group's measured output loss (sensitivity.py)
    on up to 64 calibration samples; the target is a MAC fraction (macs_removed given) or a fraction of
    prunable channels."""
    import torch

    from edgekit.distill import first_output, model_outputs
    from edgekit.prune.apply import pruned_graph
    from edgekit.prune.sensitivity import allocate_by_sensitivity, curves, output_loss, predicted_loss
    from edgekit.prune.suffix import PrefixRunner

    if not calib:
        raise UsageError("sensitivity allocation needs calibration data", hint="pass --calibration DATA")
    batches, n = [], 0
    for c in calib:
        if n >= 64:
            break
        batches.append(_to_tensors(c))
        n += int(next(iter(batches[-1].values())).shape[0])
    loss = output_loss(task)

    def pick(out) -> list:  # what the loss compares: the task's output, or every output of a generic model
        if task != "generic":
            return [first_output(out)]
        return list(model_outputs(out))

    with torch.no_grad():
        ref = [pick(module(**b)) for b in batches]

    runner = PrefixRunner(an.gm, batches)  # one group pruned at a time: the graph before it is computed once

    def loss_at(counts: list[int]) -> float:
        gm, changed = pruned_graph(an, removed_by(counts), example_inputs, means=means)
        outs = runner.outputs(gm.eval(), changed)
        return float(np.mean([np.mean([loss(a, b) for a, b in zip(pick(o), r)]) for o, r in zip(outs, ref)]))

    full = [len(g.units) for g in groups]
    total = sum(full)
    measure = macs_removed or (lambda c: 1 - sum(c) / max(total, 1))
    measured = curves(groups, full, round_to, loss_at)
    counts = allocate_by_sensitivity(groups, measured, round_to, measure, target)
    return counts, lambda c: predicted_loss(measured, c)


def _measure(layout_latency, an, removed_by, example_inputs, module):
    """layout -> seconds on the target runtime (None without layout_latency)."""
    if layout_latency is None:
        return None
    from edgekit.prune.apply import build_pruned

    return lambda c: layout_latency(build_pruned(an, removed_by(c), example_inputs, original=module)[0])


def prune_model(module, example_inputs: dict[str, Any], *, ratio: float | None = None,
                macs_ratio: float | None = None, importance: str = "l2", allocation: str = "uniform",
                round_to: int = 8, exclude: tuple[str, ...] | list[str] = (), calib: list[dict[str, Any]] | None = None,
                calib_labels: list | None = None, task: str = "classification",
                keep_first_last: bool = True, compensate: bool = True,
                reconstruct: bool = False, layout_latency=None) -> tuple[Any, dict[str, Any]]:
    """Remove whole channels. Returns (pruned module, report). The input module is not modified.

    ratio: fraction of each prunable group's channels removed; macs_ratio: target fraction of MACs
    removed (the ratio is searched). importance: l1 | l2 | bn_scale | taylor (taylor needs `calib`,
    a list of input dicts). allocation: uniform | global | sensitivity (measured output loss per
    group, needs `calib`). round_to: kept channel counts are multiples
    of it. exclude: layer names / globs whose output channels are kept. First and last layers' outputs
    are kept when keep_first_last. With `calib` and compensate, removed channels' mean contributions
    are folded into the consumers' biases (compensate.py); with `calib` and reconstruct, the conv/linear
    layers from the first pruned one on are refitted to the original's outputs by least squares
    (reconstruct.py). layout_latency: optional callable(module) -> seconds on the target's runtime
    (latency.py); when the MAC target admits few rounded layouts, those within a point of the target are
    timed and the most important (least predicted loss) one within 5% of the fastest is kept. The result is the same class as `module` when only layer shapes
    change, else a torch.fx GraphModule with the same forward signature (e.g. attention head counts)."""
    from edgekit.prune.apply import build_pruned
    from edgekit.prune.graph import analyze

    if (ratio is None) == (macs_ratio is None):
        raise UsageError("give exactly one of ratio (--prune) or macs_ratio (--prune-macs)")
    target = ratio if ratio is not None else macs_ratio
    if not 0.0 <= float(target) < 1.0:
        raise UsageError(f"pruning ratio must be in [0, 1), got {target}", hint="e.g. 0.5 removes half")
    if round_to < 1:
        raise UsageError(f"--round-to must be >= 1, got {round_to}")
    crit = get_importance(importance)
    example_inputs = _to_tensors(example_inputs)
    was_training = module.training
    module.eval()
    an = analyze(module, example_inputs)
    excluded = _expand_exclude(module, exclude)
    if keep_first_last and an.producers:
        excluded |= set(an.first_layers) | {an.producers[-1]}
    groups = an.groups(excluded)
    params = dict(module.named_parameters())
    grads: dict[str, Any] = {}
    if crit.needs_grads:
        if not calib:
            raise UsageError("taylor importance needs calibration data", hint="pass --calibration DATA")
        grads = taylor_grads(module, [_to_tensors(c) for c in calib], task, calib_labels)
    means = variances = None
    if calib and (compensate or crit.needs_stats):
        from edgekit.prune.compensate import input_stats

        means, variances = input_stats(module, [_to_tensors(c) for c in calib])
    elif crit.needs_stats:
        raise UsageError(f"{crit.name} importance needs calibration data", hint="pass --calibration DATA")
    scores = [crit.scores(g, params, grads, variances) for g in groups]
    means = means if compensate else None

    def removed_by(counts: list[int]) -> frozenset[int]:
        removed: set[int] = set()
        for g, k in zip(groups, select(scores, counts)):
            keep = set(k.tolist())
            removed |= {u.root for i, u in enumerate(g.units) if i not in keep}
        return frozenset(removed)  # immutable: the shape computations convert it once (Analysis._removed_array)

    def macs_removed(counts: list[int]) -> float:
        rm = removed_by(counts)

        def width_of(mod: str, full: int, param: tuple[str, int] = ("weight", 0)) -> int:  # inside a leaf
            atoms = an.slices.get((mod, *param))
            return full if atoms is None else int(sum(r not in rm for r in an.uf.roots(atoms)))

        return 1 - graph_macs(an.gm, lambda n: an.expected_shape(n.name, rm) if hasattr(n, "name") else None,
                              width_of) / max(macs_before, 1)

    macs_before = graph_macs(an.gm, lambda n: an.shapes.get(n.name) if hasattr(n, "name") else None)
    if allocation == "sensitivity":
        counts, sens = _by_sensitivity(an, groups, removed_by, module, example_inputs, calib, task, means, round_to,
                                       macs_removed if macs_ratio is not None else None, float(target))
        if macs_ratio is not None:
            counts = tighten(groups, scores, counts, round_to, macs_removed, macs_ratio, cost=sens,
                             measure=_measure(layout_latency, an, removed_by, example_inputs, module))
        ratio = 1 - sum(counts) / max(sum(len(g.units) for g in groups), 1)
    elif macs_ratio is not None:
        ratio = search_ratio(lambda r: macs_removed(allocate(groups, scores, r, allocation, round_to)), macs_ratio)
        counts = give_back(groups, scores, allocate(groups, scores, ratio, allocation, round_to), round_to,
                            lambda c: macs_removed(c) >= macs_ratio)
        counts = tighten(groups, scores, counts, round_to, macs_removed, macs_ratio,
                         measure=_measure(layout_latency, an, removed_by, example_inputs, module))
    else:
        counts = allocate(groups, scores, float(ratio), allocation, round_to)
    removed = removed_by(counts)
    model, rewritten = build_pruned(an, removed, example_inputs, original=module, means=means)
    refit = None
    if reconstruct and calib:
        from edgekit.prune.apply import keep_indices
        from edgekit.prune.reconstruct import reconstruct as refit_layers

        keep = keep_indices(an, removed)
        keep_out = {m: p["weight"][0] for m, p in keep.items() if 0 in p.get("weight", {})}
        refit = refit_layers(module, model, keep_out, [_to_tensors(c) for c in calib], set(keep))
    model.train(was_training)
    module.train(was_training)
    macs_after = count_macs(model, example_inputs)
    report = {
        "ratio": round(float(ratio), 4), "macs_ratio_target": macs_ratio, "importance": crit.name,
        "allocation": allocation, "round_to": round_to, "layout_by_latency": layout_latency is not None, "excluded": sorted(excluded),
        "params_before": count_params(module), "params_after": count_params(model),
        "macs_before": macs_before, "macs_after": macs_after,
        "macs_removed": round(1 - macs_after / max(macs_before, 1), 4),
        "graph_rewritten": rewritten, "bias_compensation": bool(means), "reconstruction": refit,
        "groups": [{"modules": g.modules(), "unit_size": g.unit_size, "channels_before": g.channels,
                    "channels_after": sum(u.size for u in g.units if u.root not in removed)} for g in groups],
    }
    log(f"pruned: params {report['params_before']:,} -> {report['params_after']:,}, "
        f"MACs {macs_before:,} -> {macs_after:,} ({100 * report['macs_removed']:.1f}% removed)")
    short = report["macs_removed"] < macs_ratio / 2 if macs_ratio is not None else target > 0 and not report[
        "macs_removed"]  # --prune R that removed nothing said so in a log line only
    if short:
        option = f"--prune-macs {macs_ratio:g}" if macs_ratio is not None else f"--prune {target:g}"
        warn(f"{option}: only {100 * report['macs_removed']:.1f}% of MACs removed: "
             + (f"{len(groups)} prunable channel group(s)" if groups else "no channel group can be pruned")
             + f"; channels stay whole when model inputs/outputs fix them, in the first and last layers (kept: "
             f"{', '.join(sorted(excluded)) or 'none'}) and around layers pruning does not know (JSON prune.groups)")
    return model, report


def _plain(out):
    """`out` with namedtuples as tuples and dataclasses as dicts of their fields: plain containers a saved
    program can hold (torch.export cannot serialize a user's namedtuple, and a reload has no class to rebuild)."""
    import dataclasses

    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: _plain(getattr(out, f.name)) for f in dataclasses.fields(out)}
    if isinstance(out, dict):
        return {k: _plain(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_plain(v) for v in out) if type(out) in (tuple, list) else tuple(_plain(v) for v in out)
    return out


def _has_own_types(out) -> bool:
    """True when `out` holds a namedtuple or dataclass (anything `_plain` changes)."""
    import dataclasses

    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return True
    if isinstance(out, dict):
        return type(out) is not dict or any(_has_own_types(v) for v in out.values())
    if isinstance(out, (tuple, list)):
        return type(out) not in (tuple, list) or any(_has_own_types(v) for v in out)
    return False


def _plain_outputs_module(model, names: list[str]):
    """`model` with `_plain` outputs; forward() states the input `names` (the saved program's input names)."""
    import inspect

    import torch

    class PlainOutputs(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return _plain(self.inner(*args))

    P = inspect.Parameter
    PlainOutputs.forward.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD)] + [P(n, P.POSITIONAL_OR_KEYWORD) for n in names])
    return PlainOutputs(model)


def save_pruned(model, example_inputs: dict[str, Any], path, dynamic_axes: dict[str, dict[int, str]] | None = None):
    """Save as a torch.export program (.pt2): reloadable with torch.export.load(path).module(), no code needed.
    Inputs are positional in the order of `example_inputs`; `dynamic_axes` {input: {axis: name}} stay
    dynamic. Written to a temp file then renamed (no partial output)."""
    import os
    from pathlib import Path

    import torch

    path = Path(path)
    example_inputs = _to_tensors(example_inputs)
    dyn = None
    was_training = model.training
    model.eval()
    if dynamic_axes:
        # a dynamic axis of size 1 would be specialized by torch.export: give it 2 in the example
        grown = dict(example_inputs)
        for k, axes in dynamic_axes.items():
            for ax in axes:
                if k in grown and grown[k].shape[ax] == 1:
                    grown[k] = torch.cat([grown[k]] * 2, dim=ax)
        try:
            with torch.no_grad():
                model(**grown)
            example_inputs = grown
            dyn = tuple({ax: torch.export.Dim.AUTO for ax in dynamic_axes.get(k, {})} or None for k in example_inputs)
        except Exception:  # noqa: BLE001 - the stated axes are not all batch axes (a (layers, batch, hidden) state)
            log("the model refuses its inputs grown on the stated dynamic axes; the .pt2 keeps the example's shapes")
    with torch.no_grad():
        plain = _has_own_types(model(*example_inputs.values()))
    ep = torch.export.export(_plain_outputs_module(model, list(example_inputs)) if plain else model, args=tuple(example_inputs.values()),
                             dynamic_shapes=dyn)
    model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    # one temporary folder per run (two runs saving to one path, parallel build tasks, must not write into each
    # other's file), the file inside it under its final name: torch.export.save names the archive's entries after
    # the file, so a random temporary name made every save's bytes differ
    folder = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent))
    tmp = folder / path.name
    try:
        torch.export.save(ep, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        folder.rmdir()
    return path
