"""Measured latency of a candidate pruned model on a target's runtime (for layout choice in prune_model).

Channel counts with equal MACs do not run equally fast: on an AVX-512 host, zoo:mnist_cnn layouts that all
remove ~50% of MACs in multiples of 16 ran 1.61-1.66x faster than the original on ONNX Runtime but from
1.56x to 1.79x on LiteRT. So when few rounded layouts meet the MAC target, prune_model can time them: each
candidate is exported, lowered with the target's backend (fp32) and run on one thread, batch as given.
With several targets (an app shipping to ONNX Runtime and LiteRT), each distinct backend times the
candidate and the score is the geometric mean of its times: the ranking is then the same as by the mean
log speed-up over the unpruned model on each runtime, without timing that model, and no runtime's
scale dominates.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNS = 40
REPEATS = 3


def _seconds(sess: Any, feed: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    sess.run(feed)
    return time.perf_counter() - t0


def runtime_latency(target: Any, inputs: list[Any], output_names: list[str],
                    example: dict[str, Any]) -> Callable[[Any], float]:
    """-> measure(module) -> seconds per call (median of REPEATS medians of RUNS calls) on `target`, or for a
    list of targets the geometric mean over their distinct backends."""
    import numpy as np

    from edgekit.backends import get_backend
    from edgekit.backends.base import LoadOptions
    from edgekit.export import export_onnx

    targets = list(target) if isinstance(target, (list, tuple)) else [target]
    by_backend = {t.backend: t for t in reversed(targets)}  # one per backend: the first target naming it
    chosen = [by_backend[b] for b in dict.fromkeys(t.backend for t in targets)]
    feed = {k: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v) for k, v in example.items()}
    shapes = {k: list(v.shape) for k, v in feed.items()}

    def measure(module: Any) -> float:
        with tempfile.TemporaryDirectory(prefix="edgekit-layout-") as tmp:
            onnx_path = export_onnx(module, inputs, output_names, Path(tmp) / "candidate.onnx")
            logs = []
            for t in chosen:
                backend = get_backend(t.backend)
                files = backend.lower(onnx_path, t, Path(tmp) / f"candidate-{t.backend}",
                                      {"precision": "fp32", "input_shapes": shapes})
                sess = backend.load(files[0], LoadOptions(threads=1))
                for _ in range(5):
                    sess.run(feed)
                logs.append(math.log(statistics.median(
                    statistics.median(_seconds(sess, feed) for _ in range(RUNS)) for _ in range(REPEATS))))
            return math.exp(sum(logs) / len(logs))

    return measure
