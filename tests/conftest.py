"""Shared fixtures: model files of every source kind, and a CLI runner (in-process and subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # factories: tinymodels:tiny_cnn


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """tiny_cnn saved as .onnx (inline and external data), .pt2, TorchScript, state_dicts and a full pickle."""
    import torch
    from safetensors.torch import save_file
    from tinymodels import tiny_cnn

    d = tmp_path_factory.mktemp("models")
    m = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)
    files = {
        "onnx": d / "tiny.onnx", "onnx_ext": d / "tiny_ext.onnx", "pt2": d / "tiny.pt2", "ts": d / "tiny.ts",
        "sd": d / "tiny_sd.pt", "safetensors": d / "tiny.safetensors", "pickle": d / "tiny_full.pt",
    }
    torch.onnx.export(m, (x,), str(files["onnx"]), dynamo=False, input_names=["image"], output_names=["out"],
                      dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}})
    import onnx

    proto = onnx.load(str(files["onnx"]))
    onnx.save(proto, str(files["onnx_ext"]), save_as_external_data=True, all_tensors_to_one_file=True,
              location="tiny_ext.onnx.data", size_threshold=0)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    torch.export.save(ep, str(files["pt2"]))
    torch.jit.save(torch.jit.trace(m, x), str(files["ts"]))
    torch.save(m.state_dict(), str(files["sd"]))
    save_file(m.state_dict(), str(files["safetensors"]))
    torch.save(m, str(files["pickle"]))
    return files


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m edgekit ARGS` in a fresh process (real exit codes, real stdout/stderr)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def run_json(*args: str, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli(*args, "--json", **kw)
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else {}


@pytest.fixture
def cli():
    return run_cli


class Invoked:
    def __init__(self, result) -> None:
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def invoke():
    """Run the CLI in this process (fast: torch is imported once per test session)."""
    from click.testing import CliRunner

    from edgekit.cli import cli as group

    def _invoke(*args: str) -> Invoked:
        return Invoked(CliRunner().invoke(group, list(args), catch_exceptions=True))

    return _invoke


@pytest.fixture(scope="session")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small residual CNN (conv-bn-relu, depthwise residual block with ReLU6, pool, linear) as ONNX, fixed
    seed: the int8 tests' model (test_quantize.py, test_quantize_finetune.py)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU6(), nn.Conv2d(16, 16, 1))
            self.head = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
            self.fc = nn.Linear(32, 10)

        def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
            x = self.stem(input)
            x = x + self.block(x)
            return self.fc(self.head(x).mean(dim=(2, 3)))

    net = Net().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    return path
