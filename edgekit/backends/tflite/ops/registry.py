"""The op table: ONNX op type -> one small lowering function (and whether it has an int8 kernel)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class OpRule:
    fn: Callable
    int8: bool | Callable  # TFLite has an int8 kernel for what this lowers to (or a test (ctx, node) -> bool)

    def quantizable(self, ctx, node) -> bool:
        return bool(self.int8(ctx, node)) if callable(self.int8) else self.int8


OPS: dict[str, OpRule] = {}


def register(*op_types: str, int8: bool | Callable = False) -> Callable:
    def deco(fn: Callable) -> Callable:
        for t in op_types:
            OPS[t] = OpRule(fn, int8)
        return fn

    return deco
