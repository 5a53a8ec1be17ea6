"""Pruning + distillation sweep on architectures the earlier sweeps did not cover (models in
tests/fixtures/sweep9_prune_models.py): MobileNetV3 (SE, hardswish), ShuffleNetV2 (chunk, channel shuffle),
DenseNet concat chains, a U-Net (ConvTranspose2d + interpolate skips), GhostNet, RepVGG, EfficientNet with
stochastic depth, a tiny ViT (cls token, learned positions), a 1-D keyword-spotting net, weight sharing and
dict/tuple outputs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import sweep9_prune_models as zoo  # noqa: E402  (tests/fixtures is on sys.path: conftest.py)
from test_prune_coupling import _tensors, _zeroed_equivalent  # noqa: E402
from torch import nn  # noqa: E402

from edgekit.data import SampleSet  # noqa: E402
from edgekit.distill import distill  # noqa: E402
from edgekit.prune import prune_model  # noqa: E402


def _feeds(name: str, batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(batch, *s[1:], generator=g) for k, s in zoo.FACTORIES[name][1].items()}


# --- channel coupling: pruned model == original with the removed channels' inputs zeroed (test_prune_coupling) ---
@pytest.mark.parametrize("name", sorted(zoo.FACTORIES))
def test_pruned_equals_original_with_removed_channels_zeroed(name: str) -> None:
    fn, _ = zoo.FACTORIES[name]
    _zeroed_equivalent(fn(), _feeds(name))


@pytest.mark.parametrize("name", sorted(zoo.FACTORIES))
def test_macs_target_reached_and_outputs_keep_their_shapes(name: str) -> None:
    fn, _ = zoo.FACTORIES[name]
    model = fn()
    pruned, rep = prune_model(model, _feeds(name), macs_ratio=0.3, round_to=4)
    x = _feeds(name, batch=3, seed=1)
    with torch.no_grad():
        got, want = _tensors(pruned(**x)), _tensors(model(**x))
    assert [t.shape for t in got] == [t.shape for t in want]
    for g in rep["groups"]:
        assert 0 < g["channels_after"] <= g["channels_before"]
        assert g["channels_after"] % math.lcm(4, g["unit_size"]) == 0 or g["channels_after"] == g["channels_before"]


# --- distillation ---------------------------------------------------------------------------------------------
def _images(n: int = 24, size: int = 32) -> SampleSet:
    data = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
    return SampleSet("images", n, lambda i: {"image": data[i:i + 1]})


def test_distillation_runs_the_student_without_stochastic_depth() -> None:
    """distill(dropout=False) turned off nn.Dropout layers only: EfficientNet's stochastic depth (drop_path on
    self.training, like timm's DropPath or torchvision's StochasticDepth, neither a Dropout class) stayed on, so a
    student identical to its teacher had a training loss of 0.36 at the first step (noise against exact targets).
    The student now runs its inference forward while training, BatchNorm aside."""
    teacher = zoo.efficientnet()
    student = copy.deepcopy(teacher)
    rep = distill(teacher, student, _images(), steps=1, batch_size=4, lr=1e-9, augment=False, freeze_bn=True,
                  task="classification")
    assert rep["train_loss_first"] == pytest.approx(0.0, abs=1e-6)
    assert not student.training  # handed back in inference mode


# --- sizes read from a channel axis ----------------------------------------------------------------------------
def test_se_layer_reading_its_channel_count_keeps_the_expansion_prunable() -> None:
    """SENet's SE layer (`b, c, _, _ = x.size(); pool(x).view(b, c); fc(y).view(b, c, 1, 1)`, as in many
    MobileNetV3 ports) made c a fixed number and kept x whole: every SE block's expansion and depthwise channels
    stayed unpruned (--prune 0.5: 44.8% of MACs removed against 52.2% with the conv SE). A size used only as a
    reshape's axis size now follows the channels; the model keeps its class (no graph constant changed)."""
    feeds = _feeds("mobilenet_v3_se_linear")
    model = zoo.mobilenet_v3_se_linear()
    pruned, rep = prune_model(model, feeds, ratio=0.5, round_to=1)
    assert type(pruned) is type(model) and not rep["graph_rewritten"]
    for i in (3, 4):  # SE blocks with an expansion (block 0 reads the stem, a first layer: kept)
        blk = pruned.blocks[i]
        assert blk.dw[0].out_channels == blk.se.fc[2].out_features < model.blocks[i].dw[0].out_channels
    _, conv_se = prune_model(zoo.mobilenet_v3(), feeds, ratio=0.5, round_to=1)
    assert rep["macs_removed"] == pytest.approx(conv_se["macs_removed"], abs=0.02)
    x = _feeds("mobilenet_v3_se_linear", batch=3, seed=1)
    assert pruned(**x).shape == (3, 10)


class _SizeForOtherTensor(nn.Module):
    """c read from `a` sizes the view of another tensor (an FC output): each is its own channel group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc, self.g, self.b, self.out = nn.Linear(16, 16), nn.Conv2d(16, 12, 1), nn.Conv2d(16, 12, 1), nn.Conv2d(12, 4, 1)

    def forward(self, x):
        a = torch.relu(self.a(torch.relu(self.stem(x))))
        b, c, h, w = a.shape
        g = torch.relu(self.fc(a.mean((2, 3)))).view(b, c, 1, 1)
        return self.out(torch.relu(self.b(a) + self.g(g)))


@pytest.mark.parametrize("exclude", [(), ("fc",), ("a",)])
def test_a_size_sizing_another_tensor_becomes_a_literal_when_the_counts_differ(exclude) -> None:
    torch.manual_seed(0)
    model = _SizeForOtherTensor().eval()
    feeds = {"x": torch.randn(2, 3, 8, 8)}
    pruned, rep = prune_model(model, feeds, ratio=0.5, round_to=1, exclude=exclude)
    assert rep["graph_rewritten"] == bool(exclude)  # equal counts: c follows `a` at run time; else a literal
    assert len(rep["groups"]) == 3 - len(exclude)
    assert pruned(torch.randn(3, 3, 10, 10)).shape == (3, 4, 10, 10)
    for seed in range(3):  # uneven removals: the two groups keep different counts
        rng = np.random.default_rng(seed)
        _zeroed_equivalent(_SizeForOtherTensor().eval(), feeds, pick=lambda gs, rng=rng: {
            g.units[i].root for g in gs for i in rng.choice(len(g.units), rng.integers(1, len(g.units)), replace=False)})


# --- the CLI end to end ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dict_out", "tuple_out"])
def test_models_with_dict_or_nested_outputs_verify_after_export(name: str, invoke, tmp_path) -> None:
    """A forward() returning a dict or a nested tuple is exported through a wrapper module, created in training
    mode; torch's exporter puts the model back in the wrapper's mode afterwards, so the references ran the model
    with BatchNorm on batch statistics (and updated them): every such model failed fp32 verification (exit 3,
    cosine 0.51) with or without pruning although the artifact was right."""
    res = invoke("convert", f"sweep9_prune_models:{name}", "--input-shape", "image=1x3x32x32", "--prune", "0.3",
                 "-t", "onnxruntime", "-t", "openvino", "-o", str(tmp_path / "out"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.json()
    assert out["prune"]["prune"]["macs_removed"] > 0.1
    for art in out["artifacts"]:
        assert art["verification"]["passed"] and art["verification"]["cosine"] > 0.9999


def test_an_unreachable_mac_target_says_how_far_it_falls_short(capsys) -> None:
    """The channel shuffle fixes all but one group: 30% cannot be reached, and the warning read 'cannot remove
    30% of MACs (at most 30% ...)' for 29.5%."""
    _, rep = prune_model(zoo.flatten_shuffle(), _feeds("flatten_shuffle"), macs_ratio=0.3, round_to=4)
    err = capsys.readouterr().err
    assert rep["macs_removed"] < 0.3 and f"at most {100 * rep['macs_removed']:.1f}%" in err


class _TiedAutoencoder(nn.Module):
    """The decoder reuses the encoder's conv weights (F.conv_transpose2d(h, self.enc2.weight)): tied weights."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = nn.Conv2d(3, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1)
        self.mid1, self.mid2 = nn.Conv2d(32, 48, 1), nn.Conv2d(48, 32, 1)

    def forward(self, image):
        h = torch.relu(self.enc2(torch.relu(self.enc1(image))))
        h = torch.relu(self.mid2(torch.relu(self.mid1(h))))
        d = torch.relu(torch.nn.functional.conv_transpose2d(h, self.enc2.weight, stride=2, padding=1, output_padding=1))
        return torch.nn.functional.conv_transpose2d(d, self.enc1.weight, stride=2, padding=1, output_padding=1)


def test_a_layer_weight_also_read_whole_keeps_its_channels() -> None:
    """enc2's output channels were pruned although the decoder reads enc2.weight whole: the pruned model did not
    run (exit 4, 'weight of size [16, 8, 3, 3], expected input ... to have 16 channels, but got 32'). A weight
    read whole by a graph op keeps every channel of the layer; the rest of the model still prunes."""
    torch.manual_seed(0)
    model = _TiedAutoencoder().eval()
    feeds = {"image": torch.randn(1, 3, 16, 16)}
    pruned, rep = prune_model(model, feeds, ratio=0.5, round_to=1, keep_first_last=False)
    assert [g["modules"] for g in rep["groups"]] == [["mid1", "mid2"]]
    assert pruned.mid1.out_channels == 24 and pruned.enc2.weight.shape == model.enc2.weight.shape
    _zeroed_equivalent(_TiedAutoencoder().eval(), feeds)


class _TwoHeadDetector(nn.Module):
    """Boxes from one branch, scores from another (a detector's heads): two outputs, each its own channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.box = zoo.cbn(3, 16, 3, 2), zoo.cbn(16, 32), nn.Conv2d(32, 4, 1)
        self.b1, self.b2, self.score = zoo.cbn(16, 64), zoo.cbn(64, 32), nn.Conv2d(32, 3, 1)

    def forward(self, image):
        x = self.stem(image)
        return self.box(self.a(x)).flatten(1), self.score(self.b2(self.b1(x))).flatten(1)


def test_sensitivity_allocation_measures_every_output_of_a_generic_model(monkeypatch) -> None:
    """The sensitivity allocation measured the first output only: pruning the score branch of a (boxes, scores)
    model cost 'nothing', so its channels were the free ones to cut (allocation by a loss of exactly 0). Every
    float output of a generic model now counts, as in distillation."""
    import edgekit.prune.sensitivity as sens

    measured = {}
    real = sens.curves

    def spy(groups, *a, **k):
        out = real(groups, *a, **k)
        measured.update({tuple(g.modules()): float(losses.max()) for g, (_, losses) in zip(groups, out)})
        return out

    monkeypatch.setattr(sens, "curves", spy)
    torch.manual_seed(0)
    model = zoo._stats(_TwoHeadDetector())
    calib = [{"image": torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    prune_model(model, {"image": calib[0]["image"][:1]}, macs_ratio=0.4, allocation="sensitivity", calib=calib,
                task="generic", importance="variance", round_to=4)
    assert any("b1.0" in m for m in measured) and all(loss > 0 for loss in measured.values()), measured


def test_taylor_importance_on_a_model_returning_a_dict() -> None:
    """--importance taylor took `out[0]` of a tuple and the result as is otherwise: a dict-returning model ended
    in an internal error (exit 1, "'dict' object has no attribute 'mean'"). Its gradients now come from every
    float output (generic) or the first (classification)."""
    calib = [_feeds("dict_out", batch=4, seed=i) for i in range(2)]
    for task in ("generic", "classification"):
        pruned, rep = prune_model(zoo.dict_out(), _feeds("dict_out"), ratio=0.5, importance="taylor", calib=calib,
                                  task=task, round_to=4)
        assert rep["importance"] == "taylor" and rep["macs_removed"] > 0.2
        assert set(pruned(**calib[0])) == {"logits", "embedding"}


def test_functional_layers_count_in_the_macs() -> None:
    """F.conv_transpose2d / F.conv2d / F.linear on a weight tensor were not counted: the tied decoder's 101,376 of
    251,904 MACs were missing, so --prune-macs fractions and the report's MACs were off by 40%."""
    from edgekit.prune import count_macs

    assert count_macs(_TiedAutoencoder().eval(), {"image": torch.randn(1, 3, 16, 16)}) == 251_904

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.v = nn.Parameter(torch.randn(8, 4, 3, 3)), nn.Parameter(torch.randn(5, 8))

        def forward(self, x):
            y = torch.nn.functional.conv2d(x, self.w, padding=1, groups=2)  # (1, 8, 6, 6), 4 inputs per output
            return torch.nn.functional.linear(y.mean((2, 3)), self.v)

    assert count_macs(Functional(), {"x": torch.randn(1, 8, 6, 6)}) == 8 * 36 * 4 * 9 + 5 * 8


class _InplaceHardSwishBlock(nn.Module):
    """h-swish / h-sigmoid written with in-place and less common tensor math, as older MobileNetV3 ports do."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.expand = zoo.cbn(3, 16, 3, 2, act=None), zoo.cbn(16, 64, 1, act=None)
        self.dw, self.project = zoo.cbn(64, 64, 3, groups=64, act=None), zoo.cbn(64, 16, 1, act=None)
        self.se1, self.se2 = nn.Conv2d(64, 16, 1), nn.Conv2d(16, 64, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, image):
        x = self.stem(image)
        y = self.expand(x)
        y = y * torch.nn.functional.relu6(y + 3.0).div_(6.0)  # h-swish, in place
        y = self.dw(y).clamp_(min=-6.0, max=6.0)
        s = torch.clip(self.se2(torch.relu(self.se1(y.mean((2, 3), keepdim=True)))) + 3, 0, 6) / 6  # h-sigmoid
        y = torch.square(y * s).sqrt_()  # |y * s|
        return self.fc((x + self.project(y)).mean((2, 3)))


def test_in_place_and_other_elementwise_math_keeps_channels_prunable() -> None:
    """x.div_(6), x.clamp_(), torch.clip, torch.square, x.sqrt_() ... were unknown operators, so every channel
    they touched stayed whole (this block: only the SE squeeze was prunable, the 64 expansion channels never)."""
    torch.manual_seed(0)
    model = zoo._stats(_InplaceHardSwishBlock())
    feeds = {"image": torch.randn(1, 3, 32, 32)}
    pruned, rep = prune_model(model, feeds, ratio=0.5, round_to=1)
    assert pruned.expand[0].out_channels == pruned.dw[0].out_channels == pruned.se2.out_channels == 32
    torch.manual_seed(0)
    _zeroed_equivalent(zoo._stats(_InplaceHardSwishBlock()), feeds)


class _FrozenBatchNorm2d(nn.Module):
    """torchvision.ops.misc.FrozenBatchNorm2d (detection backbones: Faster R-CNN, RetinaNet, DETR): statistics
    and affine as buffers, applied with tensor math."""

    def __init__(self, n: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.rand(n) + 0.5)
        self.register_buffer("bias", torch.randn(n) * 0.1)
        self.register_buffer("running_mean", torch.randn(n) * 0.1)
        self.register_buffer("running_var", torch.rand(n) + 0.5)

    def forward(self, x):
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        return x * scale + (self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale)


class _FrozenBNBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 16, 3, 2, 1, bias=False), _FrozenBatchNorm2d(16)
        self.c2, self.n2 = nn.Conv2d(16, 32, 3, 1, 1, bias=False), _FrozenBatchNorm2d(32)
        self.c3, self.n3 = nn.Conv2d(32, 16, 1, bias=False), _FrozenBatchNorm2d(16)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, image):
        x = torch.relu(self.n1(self.c1(image)))
        return self.head(torch.relu(x + self.n3(self.c3(torch.relu(self.n2(self.c2(x)))))))


def test_frozen_batchnorm_buffers_follow_the_channels() -> None:
    """FrozenBatchNorm2d keeps its per-channel statistics in buffers, which were taken for fixed whole tensors:
    every channel they touched stayed (this backbone: 0% removed at --prune 0.5, silently). A floating-point
    buffer with one wide axis is sliced with its channels and stays a buffer."""
    torch.manual_seed(0)
    model = _FrozenBNBackbone().eval()
    feeds = {"image": torch.randn(1, 3, 16, 16)}
    pruned, rep = prune_model(model, feeds, ratio=0.5, round_to=1)
    assert pruned.c2.out_channels == pruned.n2.running_var.numel() == pruned.c3.in_channels == 16
    assert dict(pruned.n2.named_buffers()).keys() == dict(model.n2.named_buffers()).keys()
    assert not dict(pruned.n2.named_parameters()) and rep["macs_removed"] > 0.4
    torch.manual_seed(0)
    _zeroed_equivalent(_FrozenBNBackbone().eval(), feeds)


def test_a_prune_ratio_that_removes_nothing_warns(capsys) -> None:
    """--prune 0.5 on a model whose channels are all fixed (here: by the first layer and the output) removed
    nothing and said so only in the log line 'pruned: ... (0.0% removed)'; --prune-macs warned."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    _, rep = prune_model(model, {"input": torch.randn(1, 3, 8, 8)}, ratio=0.5)
    assert rep["macs_removed"] == 0
    assert "warning: --prune 0.5: only 0.0% of MACs removed: no channel group can be pruned" in capsys.readouterr().err


def test_yolov8_c2f_list_of_chunks_traces_and_prunes() -> None:
    """Ultralytics' C2f builds `y = list(self.cv1(x).chunk(2, 1))`: list() asks the traced value for its length,
    which torch.fx refuses, so --prune refused every YOLOv8 model (exit 4, "'len' is not supported in symbolic
    tracing"). A chunk / split whose arguments give the part count has that length while tracing."""
    model = zoo.tiny_yolo()
    pruned, rep = prune_model(model, _feeds("tiny_yolo"), macs_ratio=0.4, round_to=4)
    assert rep["macs_removed"] >= 0.4
    assert pruned.c2f2.m[0].cv1.conv.in_channels < model.c2f2.m[0].cv1.conv.in_channels  # a chunk half pruned
    assert pruned(**_feeds("tiny_yolo", batch=2)).shape == (2, 19, 64)


class _SEExpand(nn.Module):
    """SE whose gate is expanded to x's size read from x: `.view(b, c, 1, 1).expand(b, c, h, w)`."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.exp, self.proj = zoo.cbn(3, 16, 3, 2), zoo.cbn(16, 64, 1), zoo.cbn(64, 16, 1, act=None)
        self.fc1, self.fc2, self.fc = nn.Linear(64, 16), nn.Linear(16, 64), nn.Linear(16, 10)

    def forward(self, image):
        x = self.stem(image)
        y = self.exp(x)
        b, c, h, w = y.size()
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3)))))).view(b, c, 1, 1).expand(b, c, h, w)
        return self.fc((x + self.proj(y * gate)).mean((2, 3)))


def test_sizes_read_for_an_expand_follow_the_channels_too() -> None:
    torch.manual_seed(0)
    model = zoo._stats(_SEExpand())
    feeds = {"image": torch.randn(1, 3, 32, 32)}
    pruned, rep = prune_model(model, feeds, ratio=0.5, round_to=1)
    assert type(pruned) is type(model) and pruned.exp[0].out_channels == pruned.fc2.out_features == 32
    assert pruned(torch.randn(2, 3, 40, 40)).shape == (2, 10)  # h, w stay read from the input
    torch.manual_seed(0)
    _zeroed_equivalent(zoo._stats(_SEExpand()), feeds)


def test_pruned_distilled_se_mobilenet_converts_and_verifies_on_every_runtime(invoke, tmp_path) -> None:
    """The SENet-style MobileNetV3 end to end: --prune-macs with calibration data (sensitivity allocation,
    variance importance, refit), a few distillation steps, then ONNX Runtime fp32 and TFLite full int8, each
    verified; the pruned channel counts are what the report says."""
    rng = np.random.default_rng(0)
    npz = tmp_path / "calib.npz"
    np.savez(npz, image=rng.standard_normal((16, 3, 32, 32)).astype(np.float32))
    res = invoke("convert", "sweep9_prune_models:mobilenet_v3_se_linear", "--input-shape", "image=1x3x32x32",
                 "--calibration", str(npz), "--prune-macs", "0.4", "--distill-steps", "2", "-t", "onnxruntime",
                 "-t", "arm", "-o", str(tmp_path / "out"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.json()
    prune = out["prune"]["prune"]
    assert prune["allocation"] == "sensitivity" and prune["macs_removed"] >= 0.4
    assert any("blocks.4.dw.0" in g["modules"] and g["channels_after"] < g["channels_before"] for g in prune["groups"])
    assert {a["target"]: a["precision"] for a in out["artifacts"]} == {"onnxruntime": "fp32", "arm": "int8"}
    assert all(a["verification"]["passed"] for a in out["artifacts"])
    import onnx

    graph = onnx.load(str(tmp_path / "out" / "mobilenet_v3_se_linear.onnxruntime.onnx")).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    dw = [d for n, d in weights.items() if len(d) == 4 and d[1] == 1 and d[0] > 16]  # depthwise kernels
    assert dw and max(d[0] for d in dw) < 120  # the last block's 120 expansion channels are pruned in the file
