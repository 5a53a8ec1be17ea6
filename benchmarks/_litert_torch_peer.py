"""Run inside the peer venv (torch + litert-torch, never the project venv): convert a zoo model with
litert-torch, fp32 or PT2E static int8 (symmetric per-channel, calibrated on the samples given).

    python _litert_torch_peer.py REPO_ROOT WEIGHTS MODEL_NAME fp32|int8 OUT.tflite [CALIB.npy]

Prints one JSON line: {"ok": true, "seconds": ...} or {"ok": false, "error": ...}.
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def main() -> None:
    root, weights, name, precision, out = sys.argv[1:6]
    calib = sys.argv[6] if len(sys.argv) > 6 else None
    sys.path.insert(0, root)
    import litert_torch
    import numpy as np
    import torch

    zoo = importlib.import_module(f"edgekit.zoo.{name}")
    model = zoo.create()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    samples = [torch.from_numpy(x) for x in np.load(calib)] if calib else [torch.randn(1, 3, 224, 224)]
    args = (samples[0],)
    t0 = time.perf_counter()
    if precision == "int8":
        from litert_torch.quantize import pt2e_quantizer, quant_config
        from torchao.quantization.pt2e import quantize_pt2e

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
        m = quantize_pt2e.prepare_pt2e(torch.export.export(model, args).module(), quantizer)
        with torch.no_grad():
            for x in samples:
                m(x)
        m = quantize_pt2e.convert_pt2e(m, fold_quantize=False)
        edge = litert_torch.convert(m, args, quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer))
    else:
        edge = litert_torch.convert(model, args)
    edge.export(out)
    print(json.dumps({"ok": True, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which skips the peer
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}))
