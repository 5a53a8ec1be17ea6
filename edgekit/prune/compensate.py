"""Bias compensation: a removed channel's average contribution moves into its consumers' biases.

A pruned input channel i of a conv/linear consumer contributed W[:, i] * a_i; replacing a_i by its mean
over calibration data, the lost part is a per-output-channel constant c = sum_i mean(a_i) * sum(W[:, i]).
It is added back to the consumer's bias, or, when the consumer has no bias and feeds a BatchNorm
directly, subtracted from that BatchNorm's running mean (same effect). Only the fluctuation of the
removed channels is lost, which matters most for networks such as MobileNetV2 whose ReLU6 channels
often carry large constant parts.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def input_stats(module, calib: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(means, variances) per input channel of every conv (axis 1) and linear (last axis) layer, over `calib`."""
    import torch
    from torch import nn

    sums: dict[str, Any] = {}
    sq: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def fn(m, inp):
            x = inp[0].detach().float()
            if isinstance(m, nn.Linear):
                flat = x.reshape(-1, x.shape[-1])
            else:
                flat = x.transpose(0, 1).reshape(x.shape[1], -1).T
            sums[name] = sums.get(name, 0) + flat.sum(0)
            sq[name] = sq.get(name, 0) + (flat * flat).sum(0)
            counts[name] = counts.get(name, 0) + flat.shape[0]
        return fn

    hs = [m.register_forward_pre_hook(hook(n)) for n, m in module.named_modules()
          if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        with torch.no_grad():
            for feed in calib:
                module(**feed)
    finally:
        for h in hs:
            h.remove()
    means = {n: sums[n] / counts[n] for n in sums}
    return means, {n: (sq[n] / counts[n] - means[n] ** 2).clamp(min=0) for n in sums}


def compensate(an, gm, keep: dict, means: dict[str, Any], changed: dict[str, Any]) -> int:
    """Fold removed inputs' mean contributions into biases of the rebuilt layers in `gm`. Returns how many
    layers were compensated; `changed` collects every module touched (name -> module)."""
    import torch
    from torch import nn

    users = {n.target: list(n.users) for n in gm.graph.nodes if n.op == "call_module"}
    done = 0
    for name, params in keep.items():
        dims = params.get("weight", {})
        if 1 not in dims or name not in means:
            continue
        old = an.modules[name]  # the unpruned layer (the analysis holds the original weights)
        if isinstance(old, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and old.groups != 1:
            continue
        if not isinstance(old, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        w = old.weight.detach().float()
        lost = np.setdiff1d(np.arange(w.shape[1]), dims[1])
        mu = means[name][torch.as_tensor(lost)]
        wl = w[:, torch.as_tensor(lost)]
        c = (wl.reshape(wl.shape[0], wl.shape[1], -1).sum(-1) @ mu) if wl.dim() > 2 else wl @ mu
        if 0 in dims:
            c = c[torch.as_tensor(dims[0])]
        new = gm.get_submodule(name)
        with torch.no_grad():
            if new.bias is not None:
                new.bias.add_(c.to(new.bias.dtype))
            else:
                follower = users.get(name, [])
                bn = gm.get_submodule(follower[0].target) if len(follower) == 1 and follower[0].op == "call_module" else None
                if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None:
                    bn.running_mean.sub_(c.to(bn.running_mean.dtype))
                    changed[follower[0].target] = bn
                else:
                    new.bias = nn.Parameter(c.to(new.weight.dtype))
        changed[name] = new
        done += 1
    return done
