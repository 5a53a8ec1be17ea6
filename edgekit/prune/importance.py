"""Channel importance criteria, one class each, registered in IMPORTANCE.

A criterion scores every unit of a group. It reduces each parameter slice the unit touches to one
number per index (`per_index`), combines the indices of a unit (`combine`), normalizes each slice by
its mean over the group's units (so that a layer with large weights does not dominate), and sums
over slices. Higher = more important = kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import UsageError
from edgekit.prune.graph import Group, SliceKey


class Importance:
    name = ""
    needs_grads = False
    needs_stats = False  # per-layer input channel variances on calibration data

    def applies(self, key: SliceKey, tensor) -> bool:
        """Which parameter slices count (default: weights of conv/linear/embedding layers, and the projection
        weights inside an attention leaf: in_proj_weight, out_proj.weight)."""
        return key[1].endswith("weight") and tensor.dim() >= 2

    def per_index(self, w, g, dim: int) -> np.ndarray:
        raise NotImplementedError

    def combine(self, values: np.ndarray) -> float:
        return float(values.sum())

    def slice_values(self, key: SliceKey, w, grads: dict[str, Any], variances: dict[str, Any] | None):
        name = f"{key[0]}.{key[1]}" if key[0] else key[1]
        return self.per_index(w.detach().float(), grads.get(name), key[2])

    def scores(self, group: Group, params: dict[str, Any], grads: dict[str, Any],
               variances: dict[str, Any] | None = None) -> np.ndarray:
        total = np.zeros(len(group.units))
        used = 0
        for key in group.signature:
            mod, pname, dim = key
            name = f"{mod}.{pname}" if mod else pname
            w = params.get(name)
            if w is None or not self.applies(key, w):
                continue
            per = self.slice_values(key, w, grads, variances)
            if per is None:
                continue
            vals = np.array([self.combine(per[u.touches[key]]) for u in group.units])
            mean = vals.mean()
            total += vals / mean if mean > 0 else vals
            used += 1
        if used == 0:  # nothing this criterion can read (e.g. no BatchNorm): fall back to L2 magnitude
            return L2().scores(group, params, grads) if not isinstance(self, L2) else total
        return total / used


def _other_dims(t, dim: int) -> list[int]:
    return [d for d in range(t.dim()) if d != dim]


class L1(Importance):
    name = "l1"

    def per_index(self, w, g, dim):
        return w.abs().sum(dim=_other_dims(w, dim)).numpy() if w.dim() > 1 else w.abs().numpy()


class L2(Importance):
    name = "l2"

    def per_index(self, w, g, dim):
        return (w * w).sum(dim=_other_dims(w, dim)).numpy() if w.dim() > 1 else (w * w).numpy()

    def combine(self, values):
        return float(np.sqrt(values.sum()))


class BNScale(Importance):
    """|gamma| of the BatchNorm / LayerNorm that follows the channel (network slimming)."""

    name = "bn_scale"

    def applies(self, key, tensor):
        return key[1] == "weight" and tensor.dim() == 1

    def per_index(self, w, g, dim):
        return w.abs().numpy()


class Taylor(Importance):
    """First-order Taylor: |sum of w * dL/dw| over the unit, gradients accumulated on calibration data."""

    name = "taylor"
    needs_grads = True

    def per_index(self, w, g, dim):
        if g is None:
            return np.zeros(w.shape[dim])
        wg = w * g.float()
        return wg.sum(dim=_other_dims(wg, dim)).numpy() if wg.dim() > 1 else wg.numpy()

    def combine(self, values):
        return float(abs(values.sum()))


class Variance(Importance):
    """Output energy lost: sum over consumers of ||W[:, i]||^2 * var(input channel i) on calibration data.
    With bias compensation the mean part of a removed channel is restored, so this is what remains lost."""

    name = "variance"
    needs_stats = True

    def applies(self, key, tensor):
        return key[1] == "weight" and key[2] == 1 and tensor.dim() >= 2

    def slice_values(self, key, w, grads, variances):
        var = (variances or {}).get(key[0])
        if var is None or var.numel() != w.shape[1]:
            return None
        w = w.detach().float()
        return ((w * w).sum(dim=_other_dims(w, 1)) * var).numpy()


IMPORTANCE: dict[str, type[Importance]] = {c.name: c for c in (L1, L2, BNScale, Taylor, Variance)}
ALIASES = {"bn": "bn_scale", "magnitude": "l2"}


def get_importance(name: str) -> Importance:
    name = ALIASES.get(name, name)
    if name not in IMPORTANCE:
        raise UsageError(f"unknown pruning importance '{name}'", hint=f"choose one of: {', '.join(IMPORTANCE)}")
    return IMPORTANCE[name]()


def taylor_grads(module, calib: list[dict[str, Any]], task: str = "classification",
                 labels: list | None = None) -> dict[str, Any]:
    """Gradients of a self-supervised loss, summed over the calibration batches.

    Classification: cross-entropy against the labels if given, else against the model's own top-1.
    Other tasks: half the squared norm of the outputs' deviation from their batch mean (every float output of a
    model returning several: a tuple, a dict, a dataclass)."""
    import torch
    import torch.nn.functional as F

    from edgekit.distill import model_outputs

    was_training = module.training
    module.eval()
    module.zero_grad(set_to_none=True)
    for i, feed in enumerate(calib):
        outs = [o for o in model_outputs(module(**feed)) if o.is_floating_point()]
        if not outs:
            raise UsageError("taylor importance needs a floating-point model output (this model has none)",
                             hint="use --importance variance or l2")
        out = outs[0]
        if task == "classification" and out.dim() == 2:
            target = torch.as_tensor(labels[i]) if labels is not None else out.argmax(-1).detach()
            loss = F.cross_entropy(out, target.reshape(-1).long())
        else:
            loss = sum(0.5 * (o - o.mean(0, keepdim=True).detach()).pow(2).sum() + 0.5 * o.pow(2).sum()
                       for o in (outs if task == "generic" else outs[:1]))
        loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    return grads
