"""How big an ONNX model's tensors are, and saving it past protobuf's 2 GB limit (weights in a file beside it).

Used by the ONNX source, the hub, the backends and int8 quantization; imports nothing of edgekit's stages."""

from __future__ import annotations

from pathlib import Path

PROTOBUF_LIMIT = 2 << 30  # a protobuf (an inline .onnx) and a TFLite flatbuffer hold at most 2 GB
INLINE_LIMIT = 1800 << 20  # tensor bytes above which a hub is saved with external data


def _tensors(model):
    """Every TensorProto of the main graph: initializers and Constant values."""
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t


def uses_external_data(model) -> bool:
    """Whether any tensor of the model lives in an external data file."""
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in _tensors(model))


def tensor_bytes(model) -> int:
    """Bytes the model's tensors take inline (external ones as their stated length)."""
    import numpy as np
    from onnx import TensorProto
    from onnx.helper import tensor_dtype_to_np_dtype

    total = 0
    for t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            length = {e.key: e.value for e in t.external_data}.get("length")
            total += int(length) if length else int(np.prod(t.dims)) * tensor_dtype_to_np_dtype(t.data_type).itemsize
        else:
            total += len(t.raw_data) if t.raw_data else t.ByteSize()
    return total


def save_onnx(model, path: Path) -> list[Path]:
    """Save `model` as one file, or with its weights in `<name>.data` beside it when they are over INLINE_LIMIT (a
    protobuf holds at most 2 GB: onnx.save raised 'Failed to serialize proto'). Returns the files written."""
    import onnx

    path = Path(path)
    if tensor_bytes(model) <= INLINE_LIMIT:
        onnx.save(model, str(path))
        return [path]
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name,
              size_threshold=1024)
    return [path, data]


def file_tensor_bytes(path: Path) -> int:
    """tensor_bytes of the ONNX file at `path`, read without its external data."""
    import onnx

    return tensor_bytes(onnx.load(str(path), load_external_data=False))
