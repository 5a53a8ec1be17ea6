"""Upper bounds for synthetic integer inputs (token ids, indices), read from the model: random ids must stay inside
the embedding table or tensor axis they index, or the model fails on its own verification inputs."""

from __future__ import annotations

from typing import Any


def id_bounds(module: Any = None, onnx_path: Any = None, names: list[str] | None = None) -> dict[str, int]:
    """Input name -> exclusive bound for its ids. Torch: the smallest nn.Embedding table (every integer input
    not named like a mask); ONNX: the length of the axis the input indexes (index_bounds)."""
    names = list(names or [])
    if not names:  # no integer input: nothing to bound (a CNN's hub was loaded and shape-inferred for nothing)
        return {}
    if module is not None:
        sizes = embedding_rows(module)
        return {n: min(sizes) for n in names if "mask" not in n} if sizes else {}
    if onnx_path is None:
        return {}
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    try:
        from edgekit.onnx_shapes import infer_shapes

        model = infer_shapes(model, keep_data=False)  # index_bounds reads dims and types
    except Exception:  # noqa: BLE001 - bounds from initializers alone then
        pass
    return index_bounds(model.graph, names)


def embedding_rows(module: Any) -> list[int]:
    """Row counts of the embedding tables of a torch module in any form: nn.Embedding; a TorchScript archive's
    (scripted or traced: a RecursiveScriptModule named 'Embedding'); a torch.export program's module (aten.embedding
    on a weight attribute). The last two had none, and random ids up to 100 failed a 50-row table (exit 2)."""
    import operator

    import torch
    from torch import nn

    sizes = []
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            sizes.append(int(m.num_embeddings))
        elif getattr(m, "original_name", None) == "Embedding" and isinstance(getattr(m, "weight", None), torch.Tensor):
            sizes.append(int(m.weight.shape[0]))
    if isinstance(module, torch.fx.GraphModule):
        for node in module.graph.nodes:
            weight = node.args[0] if node.op == "call_function" and "embedding" in str(node.target) and node.args \
                else None
            if getattr(weight, "op", None) == "get_attr":
                table = operator.attrgetter(weight.target)(module)
                if isinstance(table, torch.Tensor) and table.ndim == 2:
                    sizes.append(int(table.shape[0]))
    return sizes


CARRY_OPS = ("Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Transpose", "Tile")
PICK_OPS = ("Gather", "GatherElements", "Slice")  # with the ids as data: a selection of the same ids


def index_bounds(graph: Any, names: list[str]) -> dict[str, int]:
    """Input name -> exclusive bound: the length of the axis its values index in a Gather/GatherElements, on an
    initializer (an embedding table) or an activation of static shape, followed through ops that move ids
    without changing them (Unsqueeze, Expand, Cast, ...). Random ids past it fail in the runtime."""
    dims = {t.name: list(t.dims) for t in graph.initializer}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        shape = vi.type.tensor_type.shape
        if vi.name not in dims and vi.type.tensor_type.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    bounds: dict[str, int] = {}
    for name in names:
        carried = {name}
        for node in graph.node:  # topological order
            if not node.input or not any(i in carried for i in node.input):
                continue
            if node.op_type in ("Gather", "GatherElements") and len(node.input) > 1 and node.input[1] in carried:
                shape = dims.get(node.input[0])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if shape and -len(shape) <= axis < len(shape) and shape[axis]:
                    bounds[name] = min(bounds.get(name, shape[axis]), int(shape[axis]))
            elif (node.op_type in CARRY_OPS or node.op_type in PICK_OPS) and node.input[0] in carried:
                carried.update(o for o in node.output if o)
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
                if getattr(samples, "synthetic", False):
                    raise synthetic_index_error([name], f"random id {bad} in '{name}' is outside the {rows} "
                                                f"entries the model indexes with it")
                raise DataError(f"{what}: id {bad} in '{name}' is outside the model's embedding table ({rows} rows)",
                                hint=hint)


def synthetic_index_error(names: list[str], detail: str, inputs: list | None = None) -> Exception:
    """The DataError for a model that indexes with an integer input when only random ids stand in for it. With
    `inputs`, dynamic axes past the batch (filled with a default length) are named too: a position table
    shorter than that length fails the same way, whatever the ids."""
    from edgekit.errors import DataError

    which = ", ".join(f"'{n}'" for n in names)
    hint = "pass --calibration with real inputs (.npz/.npy holding valid indices for " + which + ")"
    lengths = [(spec, i, d) for spec in inputs or [] for i, d in enumerate(spec.shape) if i > 0 and not isinstance(d, int)]
    if lengths:
        spec, i, d = lengths[0]
        shape = list(spec.concrete_shape())
        axis = f"'{d}'" if isinstance(d, str) else f"{i}"
        detail += (f" (the dynamic axis {axis} of '{spec.name}' was given the default length {shape[i]}: a model "
                   "whose position table is shorter fails the same way)")
        shape[i] = "N"
        dtype = f":{spec.dtype}" if spec.dtype != "float32" else ""
        hint += f", or fix that length: --input-shape {spec.name}={'x'.join(map(str, shape))}{dtype} with N small enough"
    return DataError(f"no --calibration given and the model indexes a tensor with integer input {which}: "
                     f"{detail}; random synthetic ids cannot stand in for it", hint=hint)
