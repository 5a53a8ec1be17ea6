"""Combine the shapes a model states with the user's --input-shape overrides."""

from __future__ import annotations

from edgekit.data import InputSpec
from edgekit.errors import UsageError


def apply_overrides(inputs: list[InputSpec], overrides: dict[str, tuple[int, ...]] | None,
                    source: str) -> list[InputSpec]:
    """Fill unknown dims from overrides; keep symbolic names for the batch axis so it stays dynamic.

    A static dim that an override contradicts is an error (the model cannot take that shape)."""
    overrides = dict(overrides or {})
    if "" in overrides:
        if len(inputs) != 1:
            raise UsageError(f"{source}: a bare --input-shape needs a single-input model; this one has "
                             f"{', '.join(i.name for i in inputs)}", hint="write name=1x3x224x224")
        overrides[inputs[0].name] = overrides.pop("")
    unknown = set(overrides) - {i.name for i in inputs}
    if unknown:
        raise UsageError(f"{source}: --input-shape names unknown input(s) {', '.join(sorted(unknown))}",
                         hint=f"inputs are: {', '.join(i.name for i in inputs)}")
    out = []
    named = _named_sizes(inputs, overrides, source)
    for spec in inputs:
        shape = [named.get(d, d) if isinstance(d, str) and ax > 0 else d for ax, d in enumerate(spec.shape)]
        if spec.name in overrides:
            given = overrides[spec.name]
            if shape and len(given) != len(shape):
                raise UsageError(f"{source}: input '{spec.name}' has rank {len(shape)} {tuple(shape)}, "
                                 f"--input-shape gives {'x'.join(map(str, given))}")
            if not shape:
                shape = list(given)
            for ax, want in enumerate(given):
                have = shape[ax]
                if isinstance(have, int) and have > 0:
                    if have != want:
                        raise UsageError(f"{source}: input '{spec.name}' axis {ax} is fixed at {have}, "
                                         f"--input-shape gives {want}")
                elif not (ax == 0 and isinstance(have, str)):  # a named batch axis stays dynamic
                    shape[ax] = want
                elif want != 1:
                    batch_size_note(source, spec.name, have, want)
        dtype = getattr(overrides.get(spec.name), "dtype", None)
        if dtype and spec.shape and dtype != spec.dtype:  # the model states its dtype (ONNX, .pt2)
            raise UsageError(f"{source}: input '{spec.name}' is {spec.dtype}, --input-shape says {dtype}",
                             hint=f"drop ':{dtype}' (the model's own dtype is used)")
        out.append(InputSpec(spec.name, tuple(shape), dtype or spec.dtype))
    return out


def batch_size_note(source: str, name: str, axis: str, size: int) -> None:
    """--input-shape gave a batch of `size` to a dynamic batch axis, which stays dynamic: said, not dropped silently
    (a TFLite artifact, static, was built at batch 1 without a word)."""
    from edgekit.progress import warn

    warn(f"{source}: input '{name}' keeps its dynamic batch axis '{axis}' (--input-shape's {size} does not fix it): "
         "ONNX Runtime and OpenVINO artifacts take any batch, TFLite ones are built at batch 1")


def require_static(inputs: list[InputSpec], source: str) -> None:
    """Every non-batch axis must be known (torch sources need them to trace)."""
    for spec in inputs:
        if not spec.shape or any(d is None for d in spec.shape[1:]):
            raise UsageError(f"{source}: the shape of input '{spec.name}' is unknown",
                             hint=f"give --input-shape {spec.name}=1x3x224x224 (your model's real shape)")


def _named_sizes(inputs: list[InputSpec], overrides: dict[str, tuple[int, ...]], source: str) -> dict[str, int]:
    """Sizes --input-shape gives to named dynamic axes past the first ('seq' of input_ids and attention_mask): one
    size per name, which every input sharing the name takes (given for input_ids alone, attention_mask stayed
    dynamic and a static target refused it). Two sizes for one name is an error: the model needs them equal."""
    named: dict[str, tuple[int, str]] = {}
    for spec in inputs:
        given = overrides.get(spec.name)
        if given is None or len(given) != len(spec.shape):
            continue
        for ax, (have, want) in enumerate(zip(spec.shape, given)):
            if ax == 0 or not isinstance(have, str):
                continue
            if have in named and named[have][0] != want:
                other, first = named[have][1], named[have][0]
                raise UsageError(f"{source}: --input-shape gives axis '{have}' two sizes: {first} for '{other}', "
                                 f"{want} for '{spec.name}' (the model has one '{have}' for both)",
                                 hint=f"give both the same size, e.g. {spec.name}="
                                      f"{'x'.join(map(str, (*given[:ax], first, *given[ax + 1:])))}")
            named.setdefault(have, (int(want), spec.name))
    return {name: size for name, (size, _) in named.items()}
