"""Distillation's input augmentation ("function matching": the teacher is queried on many more distinct inputs
than the set holds; the same augmented batch goes to teacher and student). Seeded through a torch.Generator.

- Colour images (3-channel, 16+ pixels): random resized crop with a wide scale range, horizontal flip, colour
  jitter, then mixup / CutMix between images.
- Other images (grayscale digits, small inputs; flips and colour would change the meaning): a random shift by up
  to 1/8 of the size and mixup.
- Token sequences: TOKEN_SWAP of a sentence's inner tokens swapped for tokens of other sentences, and half the
  rows take a span from another row (a CutMix for text); first and last valid tokens, lengths and masks stay.
"""

from __future__ import annotations

import math
from typing import Any


def _resized_crop(x, gen, scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (0.75, 4 / 3)):
    """Per sample, a random-area (fraction in `scale`), random-aspect region resized back to the full size."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen))
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=gen)
    ch = (area / logr.exp()).sqrt().round().clamp(2, h).long()
    cw = (area * logr.exp()).sqrt().round().clamp(2, w).long()
    top = (torch.rand(n, generator=gen) * (h - ch + 1).float()).long()
    left = (torch.rand(n, generator=gen) * (w - cw + 1).float()).long()
    return torch.cat([F.interpolate(x[i:i + 1, :, top[i]:top[i] + ch[i], left[i]:left[i] + cw[i]], size=(h, w),
                                    mode="bilinear", align_corners=False) for i in range(n)])


def _colour_jitter(x, gen, strength: float = 0.3):
    """Brightness, contrast and saturation changes, done in the input's own (normalized) scale: a shift by a
    fraction of the batch's per-channel spread, a gain around each image's mean, a blend with its gray."""
    import torch

    n = x.shape[0]
    spread = x.std(dim=(0, 2, 3), keepdim=True)
    u = lambda: (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1) * strength  # noqa: E731
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + u()) + mean + u() * spread  # contrast, brightness
    gray = x.mean(dim=1, keepdim=True)
    return gray + (x - gray) * (1 + u())  # saturation


def _mix(y, gen):
    """Mixup on the first quarter of the batch, CutMix (a pasted box from another image) on the second;
    the teacher labels the result, so a small set yields many distinct inputs."""
    import torch

    n, _, h, w = y.shape
    if n < 2:
        return y
    q = max(1, n // 4)
    partner = torch.randint(0, n, (2 * q,), generator=gen)
    lam = 0.5 + 0.5 * torch.rand(q, 1, 1, 1, generator=gen)  # the first image stays dominant
    y = y.clone()
    y[:q] = lam * y[:q] + (1 - lam) * y[partner[:q]]
    for j, i in enumerate(range(q, min(2 * q, n))):
        bh = int(h * (0.2 + 0.4 * float(torch.rand(1, generator=gen))))
        bw = int(w * (0.2 + 0.4 * float(torch.rand(1, generator=gen))))
        t = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        y[i, :, t:t + bh, left:left + bw] = y[partner[q + j], :, t:t + bh, left:left + bw]
    return y


TOKEN_SWAP = 0.2  # fraction of a sentence's inner tokens replaced by tokens of other sentences of the batch


def _token_rows(feed: dict[str, Any]) -> tuple[str | None, Any]:
    """(name of the token-id input, its valid positions) or (None, None): the 2-D integer input with values
    beyond 0/1; valid = where an input named like a mask is 1, else where the ids are not 0 (padding)."""
    ids = next((k for k, x in feed.items() if not x.is_floating_point() and x.dim() == 2 and int(x.max()) > 1), None)
    if ids is None:
        return None, None
    mask = next((x for k, x in feed.items() if "mask" in k.lower() and x.shape == feed[ids].shape), None)
    return ids, (mask == 1) if mask is not None else feed[ids] != 0


def _augment_tokens(feed: dict[str, Any], gen) -> dict[str, Any]:
    """Token sequences: in each row, TOKEN_SWAP of the inner valid tokens (the first and last, typically the
    [CLS]/[SEP] markers, stay) become tokens drawn from the batch's own inner tokens, and half of the rows
    take a contiguous span from another row (the CutMix of text). Lengths and masks are unchanged; the
    teacher labels the result, so a few hundred sentences give many distinct inputs (TinyBERT-style)."""
    import torch

    name, valid = _token_rows(feed)
    if name is None:
        return feed
    x = feed[name].clone()
    n, t = x.shape
    pos = torch.arange(t).expand(n, t)
    first = torch.where(valid, pos, t).min(1, keepdim=True).values
    last = torch.where(valid, pos, -1).max(1, keepdim=True).values
    inner = valid & (pos > first) & (pos < last)
    pool = x[inner]
    if pool.numel() < 2:
        return feed
    swap = inner & (torch.rand(n, t, generator=gen) < TOKEN_SWAP)
    x[swap] = pool[torch.randint(0, pool.numel(), (int(swap.sum()),), generator=gen)]
    if n > 1:
        partner = torch.randint(0, n, (n // 2,), generator=gen)
        for i, j in enumerate(partner.tolist()):
            span = inner[i] & inner[j]
            cols = span.nonzero().flatten()
            if len(cols) < 2:
                continue
            a, b = sorted(torch.randint(0, len(cols), (2,), generator=gen).tolist())
            x[i, cols[a]:cols[b] + 1] = x[j, cols[a]:cols[b] + 1]
    return {**feed, name: x}


def _augment(feed: dict[str, Any], gen) -> dict[str, Any]:
    """Images (4-D float inputs). Colour (3-channel) images: random resized crop with a wide scale range,
    horizontal flip, colour jitter, then mixup / CutMix between images ("function matching": the teacher
    is queried on many more distinct inputs than the set holds). Other images (e.g. grayscale digits,
    where flips and colour change the meaning): a random shift by up to 1/8 of the size (zero fill) and
    mixup. The same augmented batch goes to teacher and student. Token sequences: `_augment_tokens`."""
    import torch

    feed = _augment_tokens(feed, gen)
    out = {}
    for k, x in feed.items():
        if not (x.is_floating_point() and x.dim() == 4):
            out[k] = x
            continue
        n, c, h, w = x.shape
        if c == 3 and min(h, w) >= 16:
            y = _resized_crop(x, gen)
            flip = torch.rand(n, generator=gen) < 0.5
            y[flip] = y[flip].flip(-1)
            out[k] = _mix(_colour_jitter(y, gen), gen)
            continue
        pad = max(1, min(h, w) // 8)
        xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        y = torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        if c == 3:
            flip = torch.rand(n, generator=gen) < 0.5
            y[flip] = y[flip].flip(-1)
        if n > 1:
            half = n // 2
            lam = 0.5 + 0.5 * torch.rand(half, 1, 1, 1, generator=gen)
            partner = torch.randint(0, n, (half,), generator=gen)
            y[:half] = lam * y[:half] + (1 - lam) * y[partner]
        out[k] = y
    return out
