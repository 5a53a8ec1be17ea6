"""Sensitivity allocation: per-group output loss measured on calibration data decides how many channels
each group keeps (edgekit/prune/sensitivity.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_prune_api import X, small_cnn  # noqa: E402

from edgekit.errors import UsageError  # noqa: E402
from edgekit.prune import count_macs, prune_model  # noqa: E402
from edgekit.prune.sensitivity import allocate_by_sensitivity, curves  # noqa: E402


def _group(n: int):
    return SimpleNamespace(units=[SimpleNamespace(size=1, root=i) for i in range(n)], unit_size=1)


def test_greedy_takes_channels_where_the_measured_loss_is_flat():
    """Two groups of equal MAC cost: the one whose loss curve is flat gives up the channels; the MAC target
    is met and not overshot by more than one rounding step."""
    groups = [_group(64), _group(64)]
    steep = (np.array([16.0, 32, 48, 64]), np.array([9.0, 4.0, 1.0, 0.0]))
    flat = (np.array([16.0, 32, 48, 64]), np.array([0.3, 0.1, 0.02, 0.0]))

    def removed(c):
        return 1 - sum(c) / 128

    counts = allocate_by_sensitivity(groups, [steep, flat], 8, removed, 0.3)
    assert counts[1] < counts[0] and counts[0] == 64
    assert 0.3 <= removed(counts) < 0.3 + 8 / 128


def test_curves_reach_the_floor_so_no_step_is_free():
    """The measured widths go down to the fewest units a group may keep (10%, rounded up to a step): a
    step below the lowest measured width would otherwise be priced at zero loss (np.interp clamps)."""
    groups = [_group(384), _group(20)]
    seen: list[list[int]] = []

    def loss_at(c: list[int]) -> float:
        seen.append(list(c))
        return float(sum(n - k for n, k in zip((384, 20), c)))

    (ks, ls), (ks2, _) = curves(groups, [384, 20], 8, loss_at)
    assert ks.min() == 40 and ls[0] == 344 and list(ks) == sorted(ks)
    assert ks2.min() == 8 and all(c[0] == 384 or c[1] == 20 for c in seen)  # one group at a time


def test_sensitivity_allocation_beats_global_and_uniform_on_mnist_cnn():
    """On the trained zoo:mnist_cnn at 50% of MACs (no refit, so the allocation alone is compared), the
    measured allocation keeps held-out digits' outputs clearly closer to the original than global and
    uniform allocation, with the same MAC target met."""
    from pathlib import Path

    from edgekit.sources import load_model

    root = Path(__file__).resolve().parent.parent / "calibration" / "mnist"
    m = load_model("zoo:mnist_cnn").module.eval()
    train, test = np.load(root / "train_sample.npz")["input"], np.load(root / "test.npz")["input"][:300]
    calib = [{"input": torch.as_tensor(train[i:i + 32])} for i in (0, 32)]
    example = {"input": torch.as_tensor(train[:1])}
    with torch.no_grad():
        ref = torch.log_softmax(m(torch.as_tensor(test)), -1)
    err = {}
    for alloc in ("sensitivity", "global", "uniform"):
        p, rep = prune_model(m, example, macs_ratio=0.5, allocation=alloc, calib=calib, importance="l2")
        assert 0.5 <= rep["macs_removed"] <= 0.51 and count_macs(p, example) == rep["macs_after"]
        with torch.no_grad():
            out = torch.log_softmax(p(torch.as_tensor(test)), -1)
        err[alloc] = float(torch.nn.functional.kl_div(out, ref, reduction="batchmean", log_target=True))
    assert err["sensitivity"] < 0.8 * min(err["global"], err["uniform"]), err


def test_sensitivity_needs_calibration_data():
    with pytest.raises(UsageError, match="needs calibration"):
        prune_model(small_cnn(), X, macs_ratio=0.3, allocation="sensitivity")


def test_convert_with_sensitivity_allocation(invoke, tmp_path) -> None:
    """`convert --allocation sensitivity` reaches the pruner and gives a verified artifact at the MAC target;
    without real data it is one usage error naming --calibration, and nothing is written."""
    res = invoke("convert", "zoo:mnist_cnn", "-t", "onnxruntime", "--prune-macs", "0.5", "--allocation", "sensitivity",
                 "--calibration", "mnist", "--calibration-size", "64", "-o", str(tmp_path / "a"), "--json")
    assert res.returncode == 0, res.stderr
    out = res.json()
    prune = out["prune"]["prune"]
    assert prune["allocation"] == "sensitivity" and prune["macs_removed"] >= 0.5
    assert out["artifacts"][0]["verification"]["passed"]
    bad = invoke("convert", "tinymodels:tiny_cnn", "--input-shape", "1x3x16x16", "-t", "onnxruntime",
                 "--prune-macs", "0.5", "--allocation", "sensitivity", "-o", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--calibration" in bad.stderr and not (tmp_path / "bad").exists()


def test_suffix_runs_give_the_full_runs_outputs_and_share_the_prefix():
    """Sensitivity curves evaluate a one-group-pruned graph from its first changed layer on (suffix.py): the
    outputs equal a full run of the pruned graph bit for bit, the original's prefix is computed once per cut
    (not once per width), and a residual model pruned in its trunk (cut at the first layer) still works."""
    from edgekit.prune.apply import pruned_graph
    from edgekit.prune.graph import analyze
    from edgekit.prune.suffix import PrefixRunner

    class Res(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.a = torch.nn.Conv2d(16, 32, 3, padding=1)
            self.b = torch.nn.Conv2d(32, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            y = y + self.b(torch.relu(self.a(y)))
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(0)
    model = Res().eval()
    batches = [{"x": torch.randn(4, 3, 12, 12)} for _ in range(3)]
    an = analyze(model, {"x": batches[0]["x"][:1]})
    groups = an.groups(set())
    runner = PrefixRunner(an.gm, batches)
    prefix_runs = []
    real = runner._frontier

    def counting(cut):
        if runner._memo is None or runner._memo[0] != cut:
            prefix_runs.append(cut)
        return real(cut)

    runner._frontier = counting
    for g in groups:
        for k in (1, 3):  # two widths of the same group: one prefix run
            removed = frozenset(u.root for u in g.units[:k])
            gm, changed = pruned_graph(an, removed, {"x": batches[0]["x"][:1]})
            got = runner.outputs(gm.eval(), changed)
            with torch.no_grad():
                want = [gm(**b) for b in batches]
            assert all(torch.equal(a, b) for a, b in zip(got, want))
    inner = next(g for g in groups if any(m == "a" for m in g.modules()) and "stem" not in g.modules())
    assert len(groups) == 2 and inner
    assert len(prefix_runs) == len(groups)  # once per group, not per width
