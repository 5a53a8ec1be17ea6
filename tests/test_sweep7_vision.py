"""Constructs found by the vision-architecture sweep (EfficientNet, ShuffleNetV2, DenseNet, GhostNet, YOLO, Swin,
DeepLab, HRNet-style models): pruning couplings and conversion paths."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from test_prune_coupling import _zeroed_equivalent  # noqa: E402
from torch import nn  # noqa: E402

from edgekit.prune import prune_model  # noqa: E402

IMG = {"x": torch.randn(2, 3, 16, 16)}


class MultiScale(nn.Module):
    """HRNet / FPN / YOLO-neck fusion: a low-resolution branch upsampled (nn.Upsample, F.interpolate) and added to
    or concatenated with a high-resolution one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.hi = nn.Conv2d(16, 32, 3, padding=1)
        self.lo = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.lo2 = nn.Conv2d(16, 32, 3, stride=4, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(64, 8, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.hi(x) + self.up(self.lo(x)))
        z = F.interpolate(self.lo2(x), size=y.shape[-2:], mode="bilinear", align_corners=True)
        return self.head(torch.cat([y, F.relu(z)], 1))


def test_upsampled_branches_are_pruned():
    """nn.Upsample and F.interpolate pass channels through; they were unknown ops that kept every branch feeding
    them (HRNet fusion, YOLO/FPN necks, DeepLab's ASPP) whole."""
    torch.manual_seed(0)
    m = MultiScale().eval()
    p, _ = prune_model(m, IMG, ratio=0.5)
    assert p.hi.out_channels == p.lo.out_channels == 16 and p.lo2.out_channels == 16
    assert p.head.in_channels == 32
    _zeroed_equivalent(m, IMG)


class ChunkHalves(nn.Module):
    """YOLOv8's C2f / ShuffleNetV2: chunk(2) of one conv's output, each half feeding its own layers."""

    def __init__(self):
        super().__init__()
        self.cv1 = nn.Conv2d(3, 32, 1)
        self.m = nn.Conv2d(16, 16, 3, padding=1)
        self.cv2 = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat([a, F.relu(self.m(b))], 1))


def test_chunk_halves_keeping_different_counts():
    """The two halves of a chunk are separate groups; when they kept different counts (any non-uniform allocation)
    chunk(2) cut the pruned tensor in the middle and the pruned model did not run ('expected input[2, 56, 2, 2] to
    have 64 channels'). It becomes split with the kept sizes."""
    torch.manual_seed(0)

    def uneven(groups):
        halves = [g for g in groups if ("cv1", "weight", 0) in g.signature]
        assert len(halves) == 2
        return {u.root for u in halves[0].units[:8]} | {u.root for u in halves[1].units[:4]}

    _zeroed_equivalent(ChunkHalves(), IMG, pick=uneven)


class WindowAttention(nn.Module):
    """Swin's window attention: sizes read from x.shape, fused qkv, a relative position bias table (positions,
    heads) gathered by an index buffer, added per head."""

    def __init__(self, dim=32, ws=3, heads=4):
        super().__init__()
        self.heads = heads
        self.table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads))
        self.register_buffer("index", torch.randint(0, (2 * ws - 1) ** 2, (ws * ws, ws * ws)))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attn = WindowAttention()

    def forward(self, x):
        x = self.embed(x)
        b, n, c = x.shape  # the block reads the trunk width first (window partition): the trunk stays whole
        return self.attn(x.view(b * n // 9, 9, c))


def test_window_attention_with_position_bias_table_prunes_heads():
    """Heads of Swin's window attention were never pruned: a size read from an axis an earlier read had already
    kept whole was not known to be fixed (the final reshape(b, n, c) blocked the heads), and the bias table, a 2-D
    parameter, was a fixed whole tensor. Now both follow the heads (table columns are sliced with them)."""
    torch.manual_seed(0)
    m = SwinLike().eval()
    feeds = {"x": torch.randn(2, 18, 8)}
    p, rep = prune_model(m, feeds, ratio=0.5, round_to=1)
    assert p.attn.qkv.out_features == 48 and p.attn.proj.in_features == 16 and p.attn.table.shape[1] == 2
    assert p.embed.out_features == 32  # the trunk read by x.shape stays whole
    _zeroed_equivalent(m, feeds, frac=0.5)


def test_untraceable_forward_names_the_model_line():
    """Swin's window_reverse computes B = int(windows.shape[0] / ...): torch.fx cannot trace it, and the refusal
    said only "int() argument must be ... not 'Proxy'"; it now names the file, line and code."""
    from edgekit.errors import UnsupportedModelError

    class IntOfSize(nn.Module):
        def forward(self, x):
            return x.view(int(x.shape[0] / 1), -1)

    with pytest.raises(UnsupportedModelError) as info:
        prune_model(IntOfSize(), {"x": torch.randn(2, 3)}, ratio=0.5)
    msg = str(info.value)
    assert "test_sweep7_vision.py:" in msg and "int(x.shape[0] / 1)" in msg and "\n" not in msg


def test_int8_concat_of_far_apart_ranges_keeps_the_narrow_part(tmp_path):
    """A YOLO head concatenates decoded boxes (hundreds of pixels) with class probabilities (0..1) and slices the
    scores back out: one int8 scale for the concat crushed the probabilities to 0 (all-zero scores on ONNX Runtime,
    OpenVINO and TFLite while the boxes kept the overall cosine at 0.98). That concat and the moves after it stay
    float; the scores are quantized with their own range."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from edgekit.data import InputSpec, load_samples
    from edgekit.quantize import quantize_model
    from edgekit.targets import get_target

    rng = np.random.default_rng(0)
    w = {"wa": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3,
         "wb": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "k": np.array(300.0, np.float32),
         "s0": np.array([4], np.int64), "s1": np.array([8], np.int64), "ax": np.array([1], np.int64)}
    nodes = [helper.make_node("Conv", ["input", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["a"], ["prob"]),
             helper.make_node("Conv", ["input", "wb"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Abs", ["b"], ["babs"]),
             helper.make_node("Mul", ["babs", "k"], ["box"]),
             helper.make_node("Concat", ["box", "prob"], ["dec"], axis=1),
             helper.make_node("Slice", ["dec", "s0", "s1", "ax"], ["scores"]),
             helper.make_node("Relu", ["scores"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", 1, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", 1, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in w.items()])
    src = tmp_path / "head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    calib, held = load_samples("natural_images", [InputSpec("input", ("batch", 3, 32, 32))]).select(20, seed=0).split(
        held_out=0.2, seed=0)
    quantize_model(src, tmp_path / "head.int8.onnx", get_target("onnxruntime"), calib, held_out=held, task="other")
    x = {"input": held.make(held._idx()[0])["input"]}
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(str(tmp_path / "head.int8.onnx"), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.abs(got - ref).max() < 0.05, np.abs(got - ref).max()


def test_verification_judges_each_output_on_its_own():
    """A detector's boxes (hundreds of pixels) next to its scores (0..1): with the outputs flattened into one vector
    an all-zero scores output still scored cosine 0.98 and int8 artifacts shipped without scores."""
    from edgekit.verify import compare

    rng = np.random.default_rng(0)
    refs = [[rng.uniform(0, 400, (1, 50, 4)), rng.uniform(0, 1, (1, 50, 4))] for _ in range(3)]
    zeroed = [[boxes, np.zeros_like(scores)] for boxes, scores in refs]
    assert compare(refs, zeroed, "detection")["cosine_mean"] < 0.5
    assert compare(refs, refs, "detection")["cosine"] == pytest.approx(1.0)


class Ghost(nn.Module):
    """GhostNet's module: a primary conv, a cheap depthwise conv on its output, concat, then [:, :oup]."""

    def __init__(self, oup=15):
        super().__init__()
        self.oup = oup
        self.primary = nn.Conv2d(3, 8, 1)
        self.cheap = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.short = nn.Conv2d(3, oup, 1)
        self.head = nn.Conv2d(oup, 4, 1)

    def forward(self, x):
        x1 = F.relu(self.primary(x))
        y = torch.cat([x1, F.relu(self.cheap(x1))], 1)[:, :self.oup]
        return self.head(y + self.short(x))


def test_slice_bounds_follow_the_kept_channels():
    """x[:, :oup] kept its literal bound after the concat lost channels: the pruned GhostNet did not run ('size of
    tensor a (50) must match the size of tensor b (49)'). Bounds become the number of kept channels before them."""
    torch.manual_seed(0)
    m = Ghost().eval()

    def keep_the_cut_unit(groups):  # the last cheap channel is cut by [:, :15]: its unit is kept, others go
        return {u.root for g in groups for u in g.units[:3]}

    _zeroed_equivalent(m, IMG, pick=keep_the_cut_unit)
    p, _ = prune_model(m, IMG, ratio=0.5, round_to=1)
    assert p(**IMG).shape == (2, 4, 16, 16)
