"""Feature layers of a torch.fx GraphModule: the pruned model when pruning rewrote the graph (a transformer's
`view(b, t, heads, hd)` with its head count changed).

Such a model keeps leaf layers (Linear, LayerNorm) as modules, but a block ('blocks.0', a transformer layer) is
inlined into the graph: `get_submodule('blocks.0')` is an empty container that is never called, so no forward
hook fires, and `block_layers` found no repeated blocks at all (its classes are gone). Distillation of a pruned
text model then matched no hidden states, silently (feature_layers []). The trace records, for every node, the
modules it ran inside (`nn_module_stack`): that gives the blocks, their classes, and each block's output node,
after which an identity module is inserted to hook; `Taps.remove` takes them out again.
"""

from __future__ import annotations

from typing import Any


def _is_graph_module(model: Any) -> bool:
    import torch.fx

    return isinstance(model, torch.fx.GraphModule)


def _stack(node: Any) -> dict[str, Any]:
    """Module path -> class for the modules `node` was traced inside."""
    out = {}
    for key, value in (node.meta.get("nn_module_stack") or {}).items():
        path, cls = value if isinstance(value, tuple) and len(value) == 2 else (key, None)
        out[str(path)] = cls
    return out


def graph_blocks(model: Any) -> list[str]:
    """block_layers for a GraphModule: the longest run (>= 2) of consecutive same-class children of one
    nn.ModuleList / nn.Sequential (numbered children), from the traced module stacks; [] for any other model."""
    if not _is_graph_module(model):
        return []
    classes: dict[str, Any] = {}
    for node in model.graph.nodes:
        for path, cls in _stack(node).items():
            classes.setdefault(path, cls)
    import torch

    children: dict[str, list[str]] = {}
    for path in classes:  # in graph order
        parent, _, child = path.rpartition(".")
        container = parent not in classes or (isinstance(classes[parent], type)
                                              and issubclass(classes[parent], torch.nn.Sequential))
        if child.isdigit() and container:  # an nn.ModuleList's (never called itself) or an nn.Sequential's
            children.setdefault(parent, []).append(path)
    best: list[str] = []
    for paths in children.values():
        run: list[str] = []
        for path in paths:
            same = bool(run) and classes[path] is not None and classes[path] is classes[run[-1]]
            run = run + [path] if same else [path]
            if len(run) > len(best) and len(run) >= 2:
                best = list(run)
    return best


def _called(model: Any, name: str) -> bool:
    return any(n.op == "call_module" and n.target == name for n in model.graph.nodes)


def _output_node(model: Any, name: str) -> Any:
    """The last node traced inside module `name` whose value is used outside it (the block's output)."""
    inside = [n for n in model.graph.nodes if name in _stack(n)]
    members = set(inside)
    leaving = [n for n in inside if any(u not in members for u in n.users)]
    return leaving[-1] if leaving else None


class Taps:
    """Hook points by layer name: the module itself, or for a block inlined in a GraphModule an identity module
    inserted after the block's output node (removed again by `remove`)."""

    def __init__(self, model: Any) -> None:
        self.model, self.added = model, []

    def point(self, name: str) -> Any:
        """The module to hook for layer `name` (AttributeError when there is none, as get_submodule)."""
        model = self.model
        if not _is_graph_module(model) or _called(model, name):
            return model.get_submodule(name)
        node = _output_node(model, name)
        if node is None:
            return model.get_submodule(name)
        import torch

        tap = f"edgekit_feature_tap_{len(self.added)}"
        model.add_submodule(tap, torch.nn.Identity())
        with model.graph.inserting_after(node):
            self.added.append((tap, model.graph.call_module(tap, (node,))))
        model.recompile()
        return model.get_submodule(tap)

    def remove(self) -> None:
        for tap, node in reversed(self.added):
            self.model.graph.erase_node(node)
            self.model.delete_submodule(tap)
        if self.added:
            self.model.recompile()
        self.added = []
