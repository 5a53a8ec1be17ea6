"""Layer-wise least-squares reconstruction: refit the pruned model's layers to the original's outputs.

After channels are removed, every conv (groups == 1) / linear layer downstream of the first change sees
fewer or perturbed inputs. Layer by layer, in execution order, the student's new weights and bias are the
ridge least-squares solution of  teacher_layer_output[kept outputs] ~ W' @ student_layer_input + b'  on
calibration data (He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural Networks"; ThiNet).
Solving in order on the student's own (already refitted) inputs also corrects the error accumulated
upstream. Conv inputs are unfolded (im2col) so any kernel, stride, padding and dilation works; the normal
equations are accumulated batch by batch, so memory is one d x d matrix per layer. A layer is skipped
when calibration data has fewer rows than 2x its inputs (underdetermined: e.g. a classifier after
global pooling fed only a few images), and a refit is kept only if it lowers the layer's error.
"""

from __future__ import annotations

from typing import Any

from edgekit.progress import log

RIDGE = 1e-3  # ridge strength relative to the mean diagonal of the inputs' Gram matrix


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


def _normal_equations(teacher, student, name: str, layer, idx, calib):
    """(A^T A, A^T T, ||T||^2, rows) over the calibration batches: A = the student's layer input rows plus a
    ones column, T = the teacher's layer output rows (kept output channels `idx`); None if not reached."""
    import torch

    gram = xty = None
    yy, rows = 0.0, 0
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
        gram = a.T @ a if gram is None else gram + a.T @ a
        xty = a.T @ t if xty is None else xty + a.T @ t
        yy += float((t * t).sum())
        rows += len(a)
    return None if gram is None else (gram, xty, yy, rows)


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
    order = _order(student, calib[0], names)
    first = next((i for i, n in enumerate(order) if n in changed), len(order))
    was = (teacher.training, student.training)
    teacher.eval()
    student.eval()
    done, skipped, errs = 0, [], []
    try:
        for name in order[first:]:
            layer = student.get_submodule(name)
            d = layer.weight[0].numel() + 1
            stats = _normal_equations(teacher, student, name, layer, keep_out.get(name), calib)
            if stats is None or stats[3] < 2 * d:
                skipped.append(name)
                continue
            gram, xty, yy, _ = stats
            w_old = torch.cat([layer.weight.detach().reshape(len(layer.weight), -1).double(),
                               (layer.bias.detach().double() if layer.bias is not None
                                else torch.zeros(len(layer.weight), dtype=torch.float64))[:, None]], 1).T
            lam = RIDGE * float(gram.diagonal().mean())
            w_new = torch.linalg.solve(gram + lam * torch.eye(d, dtype=gram.dtype), xty)
            before, after = _sse(w_old, gram, xty, yy), _sse(w_new, gram, xty, yy)
            if not after < before:
                skipped.append(name)
                continue
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
    rep = {"layers": done, "skipped": skipped,
           "error_before": round(sum(e[0] for e in errs) / max(len(errs), 1), 4),
           "error_after": round(sum(e[1] for e in errs) / max(len(errs), 1), 4)}
    log(f"reconstructed {done} layers by least squares: mean relative error {rep['error_before']:.3g} -> "
        f"{rep['error_after']:.3g}")
    return rep
