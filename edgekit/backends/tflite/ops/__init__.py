"""ONNX op lowerings, one module per family; importing this package fills the OPS table."""

from edgekit.backends.tflite.ops import (  # noqa: F401 - imported for their registrations
    activations,
    conv,
    cumsum,
    elementwise,
    gather_elements,
    gather_nd,
    lrn,
    matmul,
    norm,
    pooling,
    reduce,
    rnn,
    shape_ops,
    sort,
)
from edgekit.backends.tflite.ops.registry import OPS, OpRule, register

__all__ = ["OPS", "OpRule", "register"]
