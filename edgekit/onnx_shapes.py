"""ONNX shape inference without sending the weights through it.

`onnx.shape_inference.infer_shapes(model)` serializes the whole model, parses it in C++, and parses the
result back: three copies of every weight, for an answer that never reads a weight's values (a float
tensor's shape comes from its dims; the values inference reads are shape-like integer tensors and small
float parameters such as Resize scales). A 24-layer BERT-width encoder (680 MB) spent ~49 s in it across
edgekit's passes. Here the data of large float initializers is set aside for the call (the caller's model
is restored unchanged) and moved into the result, which is the same model onnx would return.
"""

from __future__ import annotations

from typing import Any

LIGHT_MIN_ELEMENTS = 1024  # float initializers at least this big go through inference without their data
FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _bulky(t: Any) -> bool:
    n = 1
    for d in t.dims:
        n *= d
    return t.data_type in FLOAT_TYPES and n >= LIGHT_MIN_ELEMENTS and bool(t.raw_data) and t.data_location == 0


def infer_shapes(model: Any, keep_data: bool = True, **kwargs: Any) -> Any:
    """onnx.shape_inference.infer_shapes(model, **kwargs): the same result, with the large float initializers'
    bytes kept out of the round trip through C++. keep_data=False: for a caller that reads only types and shapes,
    those initializers come back without their bytes (dims and type kept). Raises what onnx raises; `model` is
    left as it was."""
    import onnx

    inits = model.graph.initializer
    bulky = [i for i, t in enumerate(inits) if _bulky(t)]
    if not bulky:
        return onnx.shape_inference.infer_shapes(model, **kwargs)
    saved = {}
    for i in bulky:
        saved[i] = inits[i].raw_data
        inits[i].ClearField("raw_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, **kwargs)
    finally:
        for i, data in saved.items():
            inits[i].raw_data = data
    out = inferred.graph.initializer
    for i, data in saved.items() if keep_data else ():
        if out[i].name != inits[i].name:  # onnx reordered the initializers: not the model we know; the plain way
            return onnx.shape_inference.infer_shapes(model, **kwargs)
        out[i].raw_data = data
    return inferred
