"""Distillation sweep on small models not in the repo: optional/keyword-only forward arguments, several outputs,
namedtuple/dataclass outputs, a recurrent state input, separate --train-data, bad input."""

from __future__ import annotations

import collections
import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edgekit.data import SampleSet  # noqa: E402
from edgekit.distill import distill  # noqa: E402
from edgekit.prune import prune_model  # noqa: E402


def _mlp(out: int = 5) -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, out))


class _OptionalArgs(nn.Module):
    """forward(x, *, scale=1.0, mask=None): edgekit feeds x only."""

    def __init__(self) -> None:
        super().__init__()
        self.n = _mlp()

    def forward(self, x, *, scale: float = 1.0, mask=None):
        y = self.n(x) * scale
        return y if mask is None else y * mask


def test_pruning_leaves_unfed_optional_and_keyword_only_arguments_at_their_defaults() -> None:
    """fx traced `mask` as a placeholder (a proxy is never None), so the graph multiplied by the missing mask:
    --prune-macs ended in an internal error (exit 1, "unsupported operand type(s) for *: 'Tensor' and 'NoneType'")."""
    torch.manual_seed(0)
    model = _OptionalArgs().eval()
    x = torch.randn(4, 16)
    student, rep = prune_model(model, {"x": x[:1]}, macs_ratio=0.4)
    assert rep["macs_after"] < rep["macs_before"]
    assert student(x).shape == (4, 5)


def _vectors(n: int = 64, **extra) -> SampleSet:
    data = np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)
    return SampleSet("vectors", n, lambda i: {"x": data[i:i + 1]}, **extra)


class _TwoHeads(nn.Module):
    """A detector-like model: (boxes, scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.box, self.score = nn.Sequential(nn.Linear(16, 32), nn.ReLU()), nn.Linear(32, 4), nn.Linear(32, 3)

    def forward(self, x):
        h = self.trunk(x)
        return self.box(h), self.score(h).sigmoid()


def test_every_output_of_a_multi_output_model_is_distilled() -> None:
    """Only the first output (the boxes) was matched: a student whose scores head was off never learnt it
    (loss 0, held-out loss 0 -> 0)."""
    torch.manual_seed(0)
    teacher = _TwoHeads().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.score.weight.add_(0.5 * torch.randn_like(student.score.weight))
    x = torch.randn(32, 16)
    err = lambda: float((student(x)[1] - teacher(x)[1]).abs().mean())  # noqa: E731
    before = err()
    rep = distill(teacher, student, _vectors(), steps=60, batch_size=16, lr=3e-3, task="generic", augment=False)
    assert rep["held_out_loss_after"] < 0.5 * rep["held_out_loss_before"]
    assert err() < 0.7 * before


class _StreamingGRU(nn.Module):
    """The recurrent state is an input with its batch on axis 1: (layers, batch, hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid = nn.Conv1d(10, 16, 3, padding=1), nn.Conv1d(16, 16, 3, padding=1)
        self.gru, self.fc = nn.GRU(16, 8, batch_first=True), nn.Linear(8, 4)

    def forward(self, feats, h0):
        y, hn = self.gru(torch.relu(self.mid(torch.relu(self.inp(feats)))).transpose(1, 2), h0)
        return self.fc(y[:, -1]), hn


def streaming_gru() -> nn.Module:
    torch.manual_seed(0)
    return _StreamingGRU().eval()


def _gru_npz(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, feats=rng.standard_normal((n, 10, 8)).astype(np.float32),
             h0=rng.standard_normal((n, 1, 8)).astype(np.float32))
    return path


def test_distilling_a_model_whose_state_input_has_its_batch_on_axis_1(tmp_path, monkeypatch) -> None:
    """Distillation stacked samples on axis 0 (h0 (40, 1, 8)): an internal error (exit 1, 'Expected hidden size
    (1, 19, 8), got [19, 1, 8]'); then the .pt2 export grew h0 on axis 0. Samples now stack on the axis the model
    takes; the .pt2 keeps the example's shapes when the stated batch axis is not one."""
    from edgekit.prune.run import prune_and_distill
    from edgekit.sources import parse_input_shapes

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    npz = _gru_npz(tmp_path / "s.npz")
    out = tmp_path / "s.pt2"
    rep = prune_and_distill("test_sweep8_distill:streaming_gru", out, data=str(npz), distill_steps=20, batch_size=8,
                            prune_macs=0.3, input_shapes=parse_input_shapes(["feats=1x10x8", "h0=1x1x8"]))
    d = rep["distill"]
    assert d["steps"] == 20 and d["batch_size"] == 8
    assert d["held_out_loss_after"] <= d["held_out_loss_before"]
    prog = torch.export.load(str(out)).module()
    feed = np.load(npz)
    logits, hn = prog(torch.as_tensor(feed["feats"][:1]), torch.as_tensor(feed["h0"][:1]))
    assert logits.shape == (1, 4) and hn.shape == (1, 1, 8)


_NT = collections.namedtuple("_NT", ["logits", "feat"])


@dataclasses.dataclass
class _DC:
    logits: torch.Tensor
    feat: torch.Tensor


class _Structured(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.a, self.fc = kind, nn.Sequential(nn.Linear(16, 32), nn.ReLU()), nn.Linear(32, 5)

    def forward(self, x):
        f = self.a(x)
        return (_NT if self.kind == "nt" else _DC)(self.fc(f), f)


def namedtuple_model() -> nn.Module:
    torch.manual_seed(0)
    return _Structured("nt").eval()


def dataclass_model() -> nn.Module:
    torch.manual_seed(0)
    return _Structured("dc").eval()


@pytest.mark.parametrize("factory", ["namedtuple_model", "dataclass_model"])
def test_namedtuple_and_dataclass_outputs_are_distilled_and_saved(tmp_path, monkeypatch, factory) -> None:
    """A dataclass output failed when the model was loaded ('Out' object has no attribute 'ndim', exit 1) and a
    namedtuple when the .pt2 was saved (torch.export cannot serialize a user's namedtuple, exit 1). Saved as a
    tuple / a dict of the fields, input names kept; both outputs distilled."""
    from edgekit.prune.run import prune_and_distill
    from edgekit.sources import load_model, parse_input_shapes

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    npz = tmp_path / "v.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32))
    out = tmp_path / "m.pt2"
    shapes = parse_input_shapes(["x=1x16"])
    rep = prune_and_distill(f"test_sweep8_distill:{factory}", out, data=str(npz), distill_steps=10, batch_size=8,
                            input_shapes=shapes)
    assert rep["distill"]["task"] == "generic"
    lm = load_model(str(out), input_shapes=shapes)
    assert [i.name for i in lm.inputs] == ["x"] and len(lm.output_names) == 2
    x = torch.as_tensor(np.load(npz)["x"][:3])
    got, ref = lm.module(x), globals()[factory]()(x)
    got = list(got.values()) if isinstance(got, dict) else list(got)
    for g, r in zip(got, (ref.logits, ref.feat)):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("labels, match", [(np.arange(64) % 7, "range over 0..6, but the model has 5 classes"),
                                           (np.linspace(0, 1, 64), "not class indices"),
                                           (np.zeros((64, 2), np.int64), "one class index per sample")])
def test_labels_that_are_not_class_indices_are_bad_input(labels, match) -> None:
    """Out-of-range, fractional or 2-D labels reached cross-entropy mid-training: an internal error (exit 1,
    'IndexError: Target 14 is out of bounds', 'multi-target not supported')."""
    from edgekit.errors import DataError

    torch.manual_seed(0)
    teacher = _OptionalArgs().eval()
    with pytest.raises(DataError, match=match):
        distill(teacher, copy.deepcopy(teacher), _vectors(labels=labels), steps=5, batch_size=16, augment=False)
    rep = distill(teacher, copy.deepcopy(teacher), _vectors(labels=np.arange(64) % 5 * 1.0), steps=5, batch_size=16)
    assert 0.0 <= rep["held_out_accuracy_after"] <= 1.0  # whole-number float labels are class indices


def optional_args_model() -> nn.Module:
    torch.manual_seed(0)
    return _OptionalArgs().eval()


def test_cli_train_data_is_distilled_on_and_calibration_prunes(tmp_path, monkeypatch) -> None:
    """`--calibration A --train-data B` silently dropped A (B did both); the report names both, the distillation
    split covers B, and the same seed writes the same .pt2 bytes."""
    import json

    from click.testing import CliRunner

    from edgekit.cli import cli

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    rng = np.random.default_rng(0)
    calib, train = tmp_path / "calib.npz", tmp_path / "train.npz"
    np.savez(calib, x=rng.standard_normal((24, 16)).astype(np.float32))
    np.savez(train, x=rng.standard_normal((50, 16)).astype(np.float32))
    outs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        outs.append(tmp_path / run / "m.pt2")
        res = CliRunner().invoke(cli, ["distill", "test_sweep8_distill:optional_args_model", "--input-shape", "x=1x16",
                                       "--calibration", str(calib), "--train-data", str(train), "--prune-macs", "0.4",
                                       "--distill-steps", "6", "--batch-size", "16", "--seed", "3", "-o", str(outs[-1]),
                                       "--json"])
        assert res.exit_code == 0, res.output
        rep = json.loads(res.stdout)
        assert (rep["data"], rep["train_data"]) == (str(calib), str(train))
        assert rep["distill"]["samples_train"] + rep["distill"]["samples_held_out"] == 50
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_convert_distills_and_exports_a_dataclass_output(tmp_path, monkeypatch) -> None:
    """The ONNX export refused a dataclass result (exit 2, 'Only tuples, lists and Variables are supported as JIT
    inputs/outputs ... received Out'); it is flattened to its fields like a dict."""
    from edgekit import api
    from edgekit.sources import parse_input_shapes

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    npz = tmp_path / "v.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32))
    result = api.convert("test_sweep8_distill:dataclass_model", ["onnxruntime"], tmp_path / "out",
                         input_shapes=parse_input_shapes(["x=1x16"]), calibration=str(npz), distill_steps=5)
    assert result["artifacts"][0]["verification"]["passed"]
    assert result["prune"]["distill"]["steps"] == 5


@pytest.mark.parametrize("kw, data_n, match", [({"lr": -1.0}, 40, "must be positive"),
                                               ({"distill_steps": -3}, 40, "must be positive"),
                                               ({}, 1, "at least 2 samples")])
def test_bad_distillation_settings_are_refused_before_pruning(tmp_path, monkeypatch, kw, data_n, match) -> None:
    """A negative lr or step count, or a 1-sample set, was refused only after the whole pruning run (minutes of
    sensitivity measurements on a real model)."""
    import edgekit.prune
    from edgekit.errors import EdgekitError
    from edgekit.prune.run import prune_and_distill
    from edgekit.sources import parse_input_shapes

    def no_pruning(*a, **k):
        raise AssertionError("pruned before the settings were checked")

    monkeypatch.setattr(edgekit.prune, "prune_model", no_pruning)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    npz = tmp_path / "v.npz"
    np.savez(npz, x=np.random.default_rng(0).standard_normal((data_n, 16)).astype(np.float32))
    with pytest.raises(EdgekitError, match=match):
        prune_and_distill("test_sweep8_distill:optional_args_model", tmp_path / "m.pt2", data=str(npz),
                          input_shapes=parse_input_shapes(["x=1x16"]), prune_macs=0.4,
                          **{"distill_steps": 5, **kw})
    assert not (tmp_path / "m.pt2").exists()
