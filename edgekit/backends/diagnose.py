"""Turn a runtime's refusal into an UnsupportedModelError that names the operator and the node."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import UnsupportedModelError


def unsupported(runtime: str, onnx_path: Path | None, message: str) -> UnsupportedModelError:
    first = message.strip().splitlines()[0][:300] if message.strip() else "no message"
    culprits: list[str] = []
    if onnx_path is not None and Path(onnx_path).suffix == ".onnx":
        try:
            import onnx

            graph = onnx.load(str(onnx_path), load_external_data=False).graph
            for node in graph.node:
                if re.search(rf"\b{re.escape(node.op_type)}\b", message):
                    culprits.append(f"{node.op_type} (node '{node.name or node.output[0]}')")
            if not culprits:  # a sequence/map/optional graph input or output (OpenVINO: 'util::SequenceMark')
                io = [(kind, v) for kind, vs in (("input", graph.input), ("output", graph.output)) for v in vs]
                odd = [(kind, v.name, v.type.WhichOneof("value")) for kind, v in io
                       if v.type.WhichOneof("value") not in (None, "tensor_type")]
                if odd:
                    kind, name, typ = odd[0]
                    return UnsupportedModelError(
                        f"{runtime}: unsupported model: graph {kind} '{name}' is a {typ.replace('_type', '')}, not a "
                        "tensor", hint="make the model take and return tensors (e.g. ConcatFromSequence), or choose "
                                       "another target")
        except Exception:  # noqa: BLE001
            pass
    what = f"unsupported operator {', '.join(dict.fromkeys(culprits))}" if culprits else "unsupported model"
    return UnsupportedModelError(f"{runtime}: {what}: {first}",
                                 hint="replace the operator in the source model, or choose another target")
