"""Audio and sequence models mobile apps ship (keyword spotting, CRNN, TCN, Conformer, wav2vec / Whisper-style
encoders, text CNN, GPT-2 style decoder): each case is a construct that once ended in an internal error, a model
pruning left whole, or a wrong result. The models are tiny so a case runs in a few seconds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class _CausalTCN(nn.Module):
    """Dilated causal Conv1d blocks with residuals; the causal left padding is F.pad or a padding module."""

    def __init__(self, module_pad: bool) -> None:
        super().__init__()
        self.module_pad = module_pad
        self.inp = nn.Conv1d(8, 16, 1)
        self.c1, self.c2 = nn.Conv1d(16, 16, 3, dilation=2), nn.Conv1d(16, 16, 3, dilation=2)
        self.pad = nn.ConstantPad1d((4, 0), 0.0)
        self.head = nn.Conv1d(16, 4, 1)

    def _pad(self, x):
        return self.pad(x) if self.module_pad else F.pad(x, (4, 0))

    def forward(self, x):
        x = self.inp(x)
        y = F.relu(self.c1(self._pad(x)))
        return self.head(F.relu(x + self.c2(self._pad(y))))


@pytest.mark.parametrize("module_pad", [False, True])
def test_causal_padding_keeps_channels_prunable(module_pad: bool) -> None:
    """F.pad and the nn padding modules (ZeroPad1d, ConstantPad1d, ReflectionPad ...) were unknown to pruning, so
    every channel they touched was blocked: a causal TCN lost no channel at any --prune-macs (0 MACs removed, no
    message). Padding the time axis leaves the channel axis alone; pruned = the original with the removed
    channels' weights zeroed."""
    from edgekit.prune import prune_model

    torch.manual_seed(0)
    m = _CausalTCN(module_pad).eval()
    feeds = {"x": torch.randn(2, 8, 20)}
    pruned, rep = prune_model(m, feeds, ratio=0.5, round_to=4, keep_first_last=False)
    assert pruned.c1.out_channels == 8 and pruned.c2.in_channels == 8
    assert pruned.inp.out_channels == 8 and pruned.head.in_channels == 8  # the residual couples inp/c2 outputs
    hid = [next(i for i in range(16) if m.c1.bias[i] == b) for b in pruned.c1.bias]
    res = [next(i for i in range(16) if m.inp.bias[i] == b) for b in pruned.inp.bias]
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    gone_h = [i for i in range(16) if i not in hid]
    gone_r = [i for i in range(16) if i not in res]
    sd["c2.weight"][:, gone_h] = 0.0
    sd["head.weight"][:, gone_r] = 0.0
    sd["c1.weight"][:, gone_r] = 0.0
    ref = _CausalTCN(module_pad).eval()
    ref.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(pruned(**feeds), ref(**feeds), rtol=1e-4, atol=1e-4)
