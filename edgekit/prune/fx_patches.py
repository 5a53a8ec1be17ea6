"""torch calls that torch.fx cannot trace with traced values as arguments, made traceable while tracing.

- Factories given sizes as separate arguments, one of them traced: `torch.ones(T, T)` with T from x.shape
  (a causal mask) raises TypeError in fx (`torch.ones((T, T))` traces): the sizes are passed as one tuple.
- `torch.finfo(x.dtype)` / `torch.iinfo(...)` of a traced dtype (an attention mask's fill value,
  `torch.finfo(x.dtype).min`): recorded as a graph call, so the value is read when the graph runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

SIZE_FACTORIES = ("ones", "zeros", "empty", "rand", "randn")
DTYPE_INFO = ("finfo", "iinfo")


@contextlib.contextmanager
def traceable_torch_calls() -> Iterator[None]:
    import torch
    from torch.fx import Proxy

    def sizes_as_tuple(fn):
        def call(*size, **kwargs):
            if len(size) > 1 and any(isinstance(s, Proxy) for s in size):
                return fn(tuple(size), **kwargs)
            return fn(*size, **kwargs)
        return call

    def traced_info(cls):
        def call(*args):
            if args and isinstance(args[0], Proxy):
                return args[0].tracer.create_proxy("call_function", cls, args, {})
            return cls(*args)
        return call

    saved = {name: getattr(torch, name) for name in (*SIZE_FACTORIES, *DTYPE_INFO)}
    try:
        for name in SIZE_FACTORIES:
            setattr(torch, name, sizes_as_tuple(saved[name]))
        for name in DTYPE_INFO:
            setattr(torch, name, traced_info(saved[name]))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch, name, fn)
