"""Per-op MACs and bytes of a .tflite flatbuffer (tensor shapes are stored in the file), for roofline.py."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelLoadError

# builtin op name -> how its MACs follow from (output shape, weight shape)
_SIZES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "STRING": 1, "BOOL": 1, "INT16": 2,
          "INT8": 1, "FLOAT64": 8, "INT4": 1}
_FREE = {"RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE"}


def analyze_tflite(path: Path) -> list[dict[str, Any]]:
    """Flatbuffer fields are read lazily, so a damaged file fails while it is walked: that (or a file that
    is not TFLite at all) is bad input, never an internal error or an estimate of garbage."""
    from ai_edge_litert import schema_py_generated as s

    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TFLite flatbuffer (file identifier is not TFL3)",
                             hint="check that the file is complete; re-run the build")
    try:
        return _rows(s.Model.GetRootAs(buf, 0), s)
    except (struct.error, IndexError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise ModelLoadError(f"{path}: corrupt TFLite flatbuffer ({type(exc).__name__}: {exc})",
                             hint="check that the file is complete; re-run the build") from exc


def _rows(model: Any, s: Any) -> list[dict[str, Any]]:
    op_names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    sg = model.Subgraphs(0)
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        tensors.append((shape, _SIZES.get(type_names.get(t.Type(), "FLOAT32"), 4), type_names.get(t.Type())))
    rows = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        if name in _FREE:
            continue
        ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
        out_shape = tensors[outs[0]][0] if outs else []
        out_elems = int(np.prod(out_shape, dtype=np.int64)) if out_shape else 0
        w_shape = tensors[ins[1]][0] if len(ins) > 1 and ins[1] >= 0 else []
        macs = 0
        if name == "CONV_2D" and len(w_shape) == 4:
            macs = out_elems * w_shape[1] * w_shape[2] * w_shape[3]
        elif name == "DEPTHWISE_CONV_2D" and len(w_shape) == 4:
            macs = out_elems * w_shape[1] * w_shape[2]
        elif name in ("FULLY_CONNECTED", "BATCH_MATMUL") and w_shape:
            macs = out_elems * (w_shape[-1] if name == "FULLY_CONNECTED" else tensors[ins[0]][0][-1])
        elif name == "TRANSPOSE_CONV" and len(ins) > 2:
            macs = int(np.prod(tensors[ins[2]][0], dtype=np.int64)) * int(np.prod(tensors[ins[1]][0][:3], dtype=np.int64))
        moved = sum(int(np.prod(tensors[j][0], dtype=np.int64)) * tensors[j][1] for j in ins + outs if j >= 0)
        int8 = any(tensors[j][2] in ("INT8", "UINT8") for j in ins[:2] if j >= 0)
        rows.append({"name": f"{name}:{i}", "op_type": name, "macs": int(macs),
                     "ops": int(2 * macs if macs else out_elems), "bytes": int(moved),
                     "precision": "int8" if int8 else "fp32"})
    return rows
