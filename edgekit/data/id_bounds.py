"""Upper bounds for synthetic integer inputs (token ids), read from the model: random ids must stay inside
the embedding table they index, or the model fails on its own verification inputs."""

from __future__ import annotations

from typing import Any


def id_bounds(module: Any = None, onnx_path: Any = None, names: list[str] | None = None) -> dict[str, int]:
    """Input name -> exclusive bound for its ids. Torch: the smallest nn.Embedding table (every integer input
    not named like a mask); ONNX: the row count of an initializer gathered directly by that input."""
    names = list(names or [])
    if module is not None:
        from torch import nn

        sizes = [m.num_embeddings for m in module.modules() if isinstance(m, nn.Embedding)]
        return {n: min(sizes) for n in names if "mask" not in n} if sizes else {}
    if onnx_path is None:
        return {}
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    rows = {t.name: t.dims[0] for t in graph.initializer if t.dims}
    bounds: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in names and node.input[0] in rows:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if axis == 0:
                bounds[node.input[1]] = min(bounds.get(node.input[1], rows[node.input[0]]), rows[node.input[0]])
    return bounds


def check_ids(samples: Any, bounds: dict[str, int], what: str) -> None:
    """DataError when the samples' ids fall outside the embedding tables they index (`bounds`, exact ones from
    the ONNX graph): a tokenizer or data set made for another model, on which the model itself fails ('indices
    element out of data bounds'). A tokenizer with more tokens than the table is named as the cause."""
    from pathlib import Path

    import numpy as np

    from edgekit.errors import DataError

    if not bounds or samples is None:
        return
    hint = "use the tokenizer / data the model was trained with"
    tok = samples.meta.get("tokenizer")
    if tok:
        from edgekit.data.text import input_role, load_tokenizer

        n = load_tokenizer(Path(tok)).get_vocab_size(with_added_tokens=True)
        for name, rows in bounds.items():
            if input_role(name) == "input_ids" and n > rows:
                raise DataError(f"{what}: tokenizer {Path(tok).name} has {n} tokens but the model's embedding table "
                                f"for '{name}' has {rows} rows: wrong tokenizer for this model", hint=hint)
    for feed in samples:
        for name, rows in bounds.items():
            ids = np.asarray(feed.get(name, ()))
            if ids.size and (int(ids.max()) >= rows or int(ids.min()) < 0):
                bad = int(ids.max()) if int(ids.max()) >= rows else int(ids.min())
                raise DataError(f"{what}: id {bad} in '{name}' is outside the model's embedding table ({rows} rows)",
                                hint=hint)
