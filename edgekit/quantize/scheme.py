"""The int8 scheme of a target, read from its `[quantization]` table in targets/*.toml.

    format = "qdq"                 the hub format (QuantizeLinear/DequantizeLinear pairs in ONNX)
    activations = "uint8"          uint8 | int8
    activation_symmetric = false
    weights = "int8"               int8 | uint8
    weight_symmetric = true
    per_channel = true
    calibration_method = "percentile"   minmax | percentile | entropy | mse
    percentile = 99.999            (optional) for the percentile method
    op_types = ["Conv", ...]       (optional) ops to quantize; default: chosen from the graph (ops.py)
    cnn_float_op_types = [...]     (optional) ops of ops.CNN_OPS left float in convolutional graphs: ops this
                                   runtime has no int8 kernel for, where Q/DQ around a float op only cost time
    cnn_extra_op_types = [...]     (optional) ops quantized on top of ops.CNN_OPS in convolutional graphs: ops
                                   this target's runtime runs int8 but others run float between Q/DQ (ops.py)
    bias_correction = true         (optional) cancel the mean shift of int8 weights (bias_correction.py)
    equalization = true            (optional) cross-layer equalization of activation channels (equalize.py)
    weight_rounding = "nearest"    (optional) nearest | gptq: data-aware int8 weight rounding (rounding.py)
    finetune_steps = 0             (optional) end-to-end int8 fine-tuning steps (finetune.py; --int8-finetune)
    float_outputs = true           (optional) graph outputs a Gemm/MatMul computes stay float (qdq.float_outputs):
                                   for runtimes whose int8 matmul kernels write float results
    transformer_activations = "dynamic"   (optional) static | dynamic | weights: transformer graphs quantize
                                   activations at run time, with quantize ops in the graph (dynamic.py, ONNX
                                   Runtime) or inside the runtime from int8 weights alone (weights_only.py: OpenVINO, TFLite)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import ConfigError, UsageError

METHODS = ("minmax", "percentile", "entropy", "mse")
ROUNDINGS = ("nearest", "gptq")
ACTIVATION_MODES = ("static", "dynamic", "weights")
DTYPES = ("uint8", "int8")


@dataclass(frozen=True)
class Scheme:
    activations: str = "uint8"
    activation_symmetric: bool = False
    weights: str = "int8"
    weight_symmetric: bool = True
    per_channel: bool = True
    method: str = "mse"
    percentile: float = 99.999
    op_types: tuple[str, ...] | None = None
    cnn_extra_op_types: tuple[str, ...] = ()
    cnn_float_op_types: tuple[str, ...] = ()
    format: str = "qdq"
    bias_correction: bool = True
    equalization: bool = True
    weight_rounding: str = "nearest"
    finetune_steps: int = 0
    float_outputs: bool = False
    transformer_activations: str = "static"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_types"] = list(self.op_types) if self.op_types else None
        d["cnn_extra_op_types"] = list(self.cnn_extra_op_types)
        d["cnn_float_op_types"] = list(self.cnn_float_op_types)
        return d

    @property
    def name(self) -> str:
        sym = "sym" if self.activation_symmetric else "asym"
        pc = "per-channel" if self.per_channel else "per-tensor"
        return f"QDQ {self.activations} {sym} activations, {self.weights} {pc} weights"

    def ort_types(self) -> tuple[Any, Any]:
        from onnxruntime.quantization import QuantType

        types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        return types[self.activations], types[self.weights]

    def qrange(self) -> tuple[int, int]:
        return (0, 255) if self.activations == "uint8" else (-128, 127)


def scheme_for(target: Any, method: str | None = None, finetune_steps: int | None = None) -> Scheme:
    """The target's scheme; `method` (--calibration-method) and `finetune_steps` (--int8-finetune) override
    its defaults."""
    q = dict(getattr(target, "quantization", {}) or {})
    where = f"targets/{getattr(target, 'name', '?')}.toml [quantization]"
    if q.get("format", "qdq") != "qdq":
        raise ConfigError(f"{where}: format '{q['format']}' is not supported (only 'qdq')")
    for key in ("activations", "weights"):
        if q.get(key, "int8" if key == "weights" else "uint8") not in DTYPES:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(DTYPES)}, got '{q[key]}'")
    chosen = method or q.get("calibration_method", "mse")
    chosen = {"kl": "entropy", "max": "minmax"}.get(chosen, chosen)
    if chosen not in METHODS:
        err = UsageError if method else ConfigError
        raise err(f"unknown calibration method '{chosen}'", hint=f"choose one of: {', '.join(METHODS)}")
    rounding = q.get("weight_rounding", "nearest")
    if rounding not in ROUNDINGS:
        raise ConfigError(f"{where}: weight_rounding must be one of {', '.join(ROUNDINGS)}, got '{rounding}'")
    mode = q.get("transformer_activations", "static")
    if mode not in ACTIVATION_MODES:
        raise ConfigError(f"{where}: transformer_activations must be one of {', '.join(ACTIVATION_MODES)}, got '{mode}'")
    ops = q.get("op_types")
    extra = q.get("cnn_extra_op_types", [])
    if not isinstance(extra, list) or not all(isinstance(o, str) for o in extra):
        raise ConfigError(f"{where}: cnn_extra_op_types must be a list of ONNX op type names, got {extra!r}")
    left_float = q.get("cnn_float_op_types", [])
    if not isinstance(left_float, list) or not all(isinstance(o, str) for o in left_float):
        raise ConfigError(f"{where}: cnn_float_op_types must be a list of ONNX op type names, got {left_float!r}")
    steps = q.get("finetune_steps", 0) if finetune_steps is None else finetune_steps
    if not isinstance(steps, int) or steps < 0:
        raise (UsageError if finetune_steps is not None else ConfigError)(
            f"int8 fine-tuning steps must be a whole number >= 0, got {steps!r}")
    return Scheme(
        activations=q.get("activations", "uint8"),
        activation_symmetric=bool(q.get("activation_symmetric", False)),
        weights=q.get("weights", "int8"),
        weight_symmetric=bool(q.get("weight_symmetric", True)),
        per_channel=bool(q.get("per_channel", True)),
        method=chosen,
        percentile=float(q.get("percentile", 99.999)),
        op_types=tuple(ops) if ops else None,
        cnn_extra_op_types=tuple(extra),
        cnn_float_op_types=tuple(left_float),
        bias_correction=bool(q.get("bias_correction", True)),
        equalization=bool(q.get("equalization", True)),
        weight_rounding=rounding,
        finetune_steps=steps,
        float_outputs=bool(q.get("float_outputs", False)),
        transformer_activations=mode,
    )


def scheme_key(quantization: dict[str, Any], transformer: bool, graph_ops: set[str] | None = None) -> str:
    """A short key naming the int8 graph a target's `[quantization]` table gives a model: targets with equal keys
    share one calibration. transformer_activations only matters for transformer graphs (a CNN quantizes alike
    under any of them); cnn_float_op_types only for a convolutional graph holding those ops (`graph_ops`, the
    model's op types: ONNX Runtime and OpenVINO share a CNN's calibration unless it has a ConvTranspose)."""
    fields = dict(quantization)
    if not transformer:
        fields.pop("transformer_activations", None)
    if graph_ops is not None:
        held = sorted(set(fields.pop("cnn_float_op_types", None) or ()) & graph_ops) if not transformer else []
        if held:
            fields["cnn_float_op_types"] = held
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
