"""Layer-wise least-squares reconstruction: refit the pruned model's layers to the original's outputs.

After channels are removed, every conv (groups == 1) / linear layer downstream of the first change sees
fewer or perturbed inputs. Layer by layer, in execution order, the student's new weights and bias are the
ridge least-squares solution of  teacher_layer_output[kept outputs] ~ W' @ student_layer_input + b'  on
calibration data (He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural Networks"; ThiNet).
Solving in order on the student's own (already refitted) inputs also corrects the error accumulated
upstream. Conv inputs are unfolded (im2col) so any kernel, stride, padding and dilation works; the normal
equations are accumulated per batch (a d x d matrix each). The ridge term shrinks toward the current
weights, its strength is picked by k-fold validation over the calibration batches, and a layer keeps its
weights when no refit beats them on held-out batches (e.g. a classifier after global pooling fed only a
few images: more unknowns than rows).
"""

from __future__ import annotations

from typing import Any

from edgekit.progress import Progress, log

RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridge strengths tried, relative to the Gram matrix's mean diagonal
FOLDS = 4  # calibration batches are split into this many folds to pick the ridge strength


class _Stop(Exception):
    """Raised by a hook once the wanted activation is captured: the rest of the forward pass is skipped."""


def _capture(model, name: str, feed: dict[str, Any], want: str):
    """Run `model` up to layer `name`; its input ('in') or output ('out') tensor."""
    import torch

    box: dict[str, Any] = {}
    layer = model.get_submodule(name)

    def pre(m, inp):
        box["v"] = inp[0].detach()
        raise _Stop

    def post(m, inp, out):
        box["v"] = out.detach()
        raise _Stop

    h = layer.register_forward_pre_hook(pre) if want == "in" else layer.register_forward_hook(post)
    try:
        with torch.no_grad():
            model(**feed)
    except _Stop:
        pass
    finally:
        h.remove()
    return box.get("v")


def _rows(layer, x):
    """Layer input -> (rows, features) matrix whose product with the flattened weight is the output."""
    import torch.nn.functional as F
    from torch import nn

    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _out_rows(layer, y):
    from torch import nn

    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


def _eligible(layer) -> bool:
    from torch import nn

    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str))


def _order(model, example: dict[str, Any], names: set[str]) -> list[str]:
    import torch

    seen: list[str] = []
    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda m, i, n=n: seen.append(n)) for n in names]
    try:
        with torch.no_grad():
            model(**example)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(seen))


def _normal_equations(teacher, student, name: str, layer, idx, calib) -> list[tuple] | None:
    """Per calibration batch (A^T A, A^T T, ||T||^2): A = the student's layer input rows plus a ones
    column, T = the teacher's layer output rows (kept output channels `idx`); None if the layer is not reached."""
    import torch

    stats = []
    for feed in calib:
        y = _capture(teacher, name, feed, "out")
        x = _capture(student, name, feed, "in")
        if x is None or y is None:
            return None
        if idx is not None:
            y = y.index_select(-1 if isinstance(layer, torch.nn.Linear) else 1, torch.as_tensor(idx))
        a = _rows(layer, x).double()
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
        t = _out_rows(layer, y).double()
        stats.append((a.T @ a, a.T @ t, float((t * t).sum())))
    return stats or None


def _solve(gram, xty, w_old, lam_rel: float):
    """Ridge solution shrunk toward the current weights: (G + lam I) W = A^T T + lam W_old."""
    import torch

    lam = lam_rel * float(gram.diagonal().mean())
    eye = torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram + lam * eye, xty + lam * w_old)


def _pick_ridge(stats: list[tuple], w_old) -> float | None:
    """Ridge strength with the lowest error on held-out calibration batches (k-fold over batches), or None
    when keeping the current weights does at least as well."""
    k = min(FOLDS, len(stats))
    if k < 2:
        return RIDGES[len(RIDGES) // 2]
    folds = [[s for i, s in enumerate(stats) if i % k == f] for f in range(k)]
    sums = [tuple(sum(x[j] for x in fold) for j in range(3)) for fold in folds]
    total = tuple(sum(x[j] for x in sums) for j in range(3))
    keep_err = sum(_sse(w_old, *sums[f]) for f in range(k))
    best, best_err = None, keep_err
    for lam in RIDGES:
        err = 0.0
        for f in range(k):
            w = _solve(total[0] - sums[f][0], total[1] - sums[f][1], w_old, lam)
            err += _sse(w, *sums[f])
        if err < best_err * (1 - 1e-9):
            best, best_err = lam, err
    return best


def _sse(w, gram, xty, yy: float) -> float:
    """||T - A w||^2 from the accumulated normal equations."""
    return yy - 2 * float((w * xty).sum()) + float((w * (gram @ w)).sum())


def reconstruct(teacher, student, keep_out: dict[str, Any], calib: list[dict[str, Any]],
                changed: set[str]) -> dict[str, Any]:
    """Refit, in place, the student's conv/linear layers from the first changed one on. keep_out: layer ->
    kept output-channel indices (absent = all kept); changed: layers whose shapes the pruning changed.
    Returns {"layers": refitted count, "skipped": names, "error_before"/"error_after": mean relative error}."""
    import torch

    names = {n for n, m in student.named_modules() if n and _eligible(m)}
    names &= {n for n, _ in teacher.named_modules()}
    from edgekit.prune.tie import tied_layers

    names -= tied_layers(student)  # a shared weight (tied embeddings) refit for one use would break the others
    order = _order(student, calib[0], names)
    first = next((i for i, n in enumerate(order) if n in changed), len(order))
    was = (teacher.training, student.training)
    teacher.eval()
    student.eval()
    done, skipped, errs, ridges = 0, [], [], []
    try:
        with Progress("least-squares refit", total=len(order) - first) as bar:
            for name in order[first:]:
                bar.update(1)
                layer = student.get_submodule(name)
                stats = _normal_equations(teacher, student, name, layer, keep_out.get(name), calib)
                if stats is None:
                    skipped.append(name)
                    continue
                w_old = torch.cat([layer.weight.detach().reshape(len(layer.weight), -1).double(),
                                   (layer.bias.detach().double() if layer.bias is not None
                                    else torch.zeros(len(layer.weight), dtype=torch.float64))[:, None]], 1).T
                lam = _pick_ridge(stats, w_old)
                if lam is None:
                    skipped.append(name)
                    continue
                gram, xty, yy = (sum(x[j] for x in stats) for j in range(3))
                w_new = _solve(gram, xty, w_old, lam)
                before, after = _sse(w_old, gram, xty, yy), _sse(w_new, gram, xty, yy)
                ridges.append(lam)
                errs.append((before / max(yy, 1e-30), after / max(yy, 1e-30)))
                with torch.no_grad():
                    w = w_new.T.to(layer.weight.dtype)
                    layer.weight.copy_(w[:, :-1].reshape(layer.weight.shape))
                    if layer.bias is None:
                        layer.bias = torch.nn.Parameter(w[:, -1].clone())
                    else:
                        layer.bias.copy_(w[:, -1])
                done += 1
    finally:
        teacher.train(was[0])
        student.train(was[1])
    rep = {"layers": done, "skipped": skipped, "ridge_median": float(sorted(ridges)[len(ridges) // 2]) if ridges else None,
           "error_before": round(sum(e[0] for e in errs) / max(len(errs), 1), 4),
           "error_after": round(sum(e[1] for e in errs) / max(len(errs), 1), 4)}
    log(f"reconstructed {done} layers by least squares: mean relative error {rep['error_before']:.3g} -> "
        f"{rep['error_after']:.3g}")
    return rep
