"""Tied parameters (GPT's lm_head.weight is wte.weight) stay one parameter through pruning.

Pruning rebuilds each layer with copies of its kept weights, so a language model's tied input and output embeddings
came out as two matrices (a 50257 x 768 one is 38.6M parameters: GPT-2 grew from 124M to 163M while losing MACs),
and the least-squares refit then moved the output copy alone. `retie` makes parameters that one Parameter served
in the source one again when their pruned values are still equal; `tied_layers` names the layers whose weight is
shared, which the refit leaves alone (refitting one use of a shared matrix changes every other use).
"""

from __future__ import annotations

from typing import Any


def _shared(model: Any) -> list[list[str]]:
    """Names (module.param) of each Parameter that more than one module attribute holds."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def retie(source: Any, pruned: Any) -> list[list[str]]:
    """Make each group of parameters one Parameter in `source` share one in `pruned` again where their pruned
    tensors are equal (same shape and values); returns the groups tied."""
    import torch

    tied = []
    for names in _shared(source):
        try:
            params = [pruned.get_parameter(n) for n in names]
        except AttributeError:
            continue
        first = params[0]
        if all(p is first or (p.shape == first.shape and torch.equal(p.detach(), first.detach())) for p in params):
            for name in names[1:]:
                owner, _, attr = name.rpartition(".")
                setattr(pruned.get_submodule(owner) if owner else pruned, attr, first)
            tied.append(names)
    return tied


def tied_layers(model: Any) -> set[str]:
    """Modules whose weight is shared with another module."""
    return {name.rpartition(".")[0] for names in _shared(model) for name in names if name.endswith("weight")}
