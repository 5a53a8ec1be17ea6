"""Multiply-accumulate and parameter counts, from the traced graph (conv, linear, matmul, attention)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _prod(s) -> int:
    return int(np.prod(s)) if s else 1


def graph_macs(gm, shape_of: Callable[[Any], tuple | None]) -> int:
    """Sum over the graph's nodes; `shape_of(node)` gives a node's (possibly predicted) output shape."""
    import operator

    import torch
    import torch.nn.functional as F
    from torch import nn

    modules = dict(gm.named_modules())
    total = 0
    for node in gm.graph.nodes:
        out = shape_of(node)
        if not isinstance(out, tuple):
            continue
        if node.op == "call_module":
            m = modules[node.target]
            inp = shape_of(node.args[0])
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                per_group = 1 if m.groups == m.in_channels else inp[1] // m.groups
                total += _prod(out) * per_group * _prod(m.kernel_size)
            elif isinstance(m, nn.Linear):
                total += _prod(out) * inp[-1]
        elif node.target in (torch.matmul, torch.bmm, operator.matmul, "matmul", "bmm"):
            a = shape_of(node.args[0])
            if isinstance(a, tuple):
                total += _prod(out) * a[-1]
        elif node.target is F.scaled_dot_product_attention:
            q, k = shape_of(node.args[0]), shape_of(node.args[1])
            total += _prod(q[:-1]) * k[-2] * (q[-1] + out[-1])
    return int(total)


def count_macs(module, example_inputs: dict[str, Any]) -> int:
    """MACs of one forward pass on `example_inputs` (fx graph; forward hooks if the model does not trace)."""
    from edgekit.prune.graph import record_run, trace

    try:
        gm = trace(module)
    except Exception:  # noqa: BLE001
        return _hook_macs(module, example_inputs)
    shapes, _ = record_run(gm, example_inputs)
    return graph_macs(gm, lambda n: shapes.get(n.name) if hasattr(n, "name") else None)


def _hook_macs(module, example_inputs) -> int:
    import torch
    from torch import nn

    total = [0]

    def hook(m, inp, out):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            total[0] += out.numel() * (m.in_channels // m.groups) * _prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total[0] += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        with torch.no_grad():
            module(**example_inputs)
    finally:
        for h in hs:
            h.remove()
    return int(total[0])


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
