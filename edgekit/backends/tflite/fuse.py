"""Peephole passes on the emitted TFLite op list."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as fb

from edgekit.backends.tflite.writer import ModelWriter

# not CONCATENATION: LiteRT ignores its fused activation (float) or refuses it at prepare time (XNNPACK path)
_FUSABLE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "AVERAGE_POOL_2D",
            "MAX_POOL_2D"}
_ACT = {"RELU": fb.ActivationFunctionType.RELU, "RELU6": fb.ActivationFunctionType.RELU6,
        "RELU_N1_TO_1": fb.ActivationFunctionType.RELU_N1_TO_1}


def _name(w: ModelWriter, op: fb.OperatorT) -> str:
    from edgekit.backends.tflite.writer import op_name

    return op_name(w.op_codes[op.opcodeIndex][0])


def fuse_activations(w: ModelWriter) -> int:
    """Fold RELU/RELU6/RELU_N1_TO_1 into the op producing their input when that op has a fused-activation
    field and nothing else reads the intermediate tensor. Returns the number of fusions."""
    uses: dict[int, int] = {}
    for op in w.operators:
        for i in op.inputs:
            uses[int(i)] = uses.get(int(i), 0) + 1
    producer = {int(o): op for op in w.operators for o in op.outputs}
    outputs = set(w.outputs)
    drop, fused = set(), 0
    for act in w.operators:
        kind = _name(w, act)
        if kind not in _ACT:
            continue
        src = int(act.inputs[0])
        prod = producer.get(src)
        if prod is None or uses.get(src, 0) != 1 or src in outputs or _name(w, prod) not in _FUSABLE:
            continue
        opts = prod.builtinOptions
        if opts is None or getattr(opts, "fusedActivationFunction", None) != fb.ActivationFunctionType.NONE:
            continue
        in_t, out_t = w.tensors[src], w.tensors[int(act.outputs[0])]
        if (in_t.quantization is None) != (out_t.quantization is None):
            continue
        opts.fusedActivationFunction = _ACT[kind]
        prod.outputs[list(prod.outputs).index(src)] = act.outputs[0]
        drop.add(id(act))
        fused += 1
    w.operators = [op for op in w.operators if id(op) not in drop]
    return fused
