"""Nodes that draw random numbers: a model with them cannot match its source run for run.

A VAE whose forward() samples its latent (mu + torch.randn_like(mu) * std) exports RandomNormalLike; every
artifact then failed fp32 verification with 'max abs error 0.112 > 0.001; cosine 0.53' and the hint to keep it
with --no-verify, as if the lowering were wrong. The failure names the random nodes instead.
"""

from __future__ import annotations

from typing import Any

RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")


def random_nodes(model: Any) -> list[str]:
    """"RandomNormalLike '/RandomNormalLike'" for each random node of the graph, in graph order."""
    return [f"{n.op_type} '{n.name}'" for n in model.graph.node if n.op_type in RANDOM_OPS]
