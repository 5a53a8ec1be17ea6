"""Cold vs warm `edgekit build` of the README's example config (examples/edgekit.toml).

    python benchmarks/build.py [--config examples/edgekit.toml] [--warm-runs 5]

Each build is a fresh `python -m edgekit build` process, as a build script runs it; wall time includes
interpreter start-up. Cold = empty cache ($EDGEKIT_CACHE_DIR in a temp folder); warm = the same build
again (median of --warm-runs), which must copy nothing and import no torch. Goal: warm < 1 s for the
whole config. Writes benchmarks/results/build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = ("import sys, atexit\n"
         "atexit.register(lambda: sys.stderr.write('TORCH_LOADED=%s\\n' % ('torch' in sys.modules)))\n"
         "from edgekit.cli import main\nmain(sys.argv[1:])\n")


def timed_build(config: Path, out: Path, env: dict[str, str]) -> tuple[float, dict, bool]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, "build", "-c", str(config), "-o", str(out), "--json"],
                          env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"edgekit build failed ({proc.returncode}):\n{proc.stderr}")
    return wall, json.loads(proc.stdout), "TORCH_LOADED=True" in proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "examples" / "edgekit.toml")
    ap.add_argument("--warm-runs", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        env = {**os.environ, "EDGEKIT_CACHE_DIR": str(Path(tmp) / "cache"), "CI": "true",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        out = Path(tmp) / "models"
        cold, cold_summary, _ = timed_build(args.config, out, env)
        warm = []
        torch_loaded = False
        for _ in range(args.warm_runs):
            wall, summary, loaded = timed_build(args.config, out, env)
            assert summary["built"] == 0, "a warm build rebuilt something"
            warm.append((wall, summary["seconds"]))
            torch_loaded |= loaded
        startup = []
        for _ in range(3):  # interpreter + `import edgekit.cli`, the floor of any warm build
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import edgekit.cli"], env=env, check=True)
            startup.append(time.perf_counter() - t0)

    warm_wall = statistics.median(w for w, _ in warm)
    result = {
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "artifacts": len(cold_summary["artifacts"]),
        "models": len({a["model"] for a in cold_summary["artifacts"]}),
        "cold_s": round(cold, 3),
        "cold_in_process_s": cold_summary["seconds"],
        "warm_s": round(warm_wall, 3),
        "warm_in_process_s": round(statistics.median(s for _, s in warm), 3),
        "python_startup_s": round(statistics.median(startup), 3),
        "ratio_cold_over_warm": round(cold / warm_wall, 1),
        "warm_imported_torch": torch_loaded,
        "goal_warm_under_1s": warm_wall < 1.0,
    }
    for k, v in result.items():
        print(f"{k:>22}: {v}")
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "build.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
