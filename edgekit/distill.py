"""Knowledge distillation: recover a pruned student by imitating the original model (the teacher).

Unlabeled data is enough: classifiers learn the teacher's temperature-softened logits (KL), embedding
models its embeddings (MSE + cosine); labels, when given, add a cross-entropy term. Optional feature
loss on named layers (a learned 1x1 adapter bridges pruned widths). The student's BatchNorm statistics
are re-estimated first (channel removal invalidates them). Inputs are augmented (distill_augment.py: crops,
flips, colour jitter, mixup/CutMix for images; token swaps and spliced spans for text); the teacher labels
each augmented batch. Seeded and deterministic; a
held-out split measures the loss before and after; training stops early when the loss flattens and the
weights with the best held-out loss are kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgekit.distill_augment import _augment
from edgekit.errors import DataError, UsageError
from edgekit.progress import Progress, log, warn

TASKS = ("classification", "embedding", "generic")
# --task: "auto" takes the source's own (a zoo model's, else classification for one (N, C) output, else generic)
TASK_CHOICES = ("auto", *TASKS)
TASK_HELP = ("What the model's outputs are, for verification, --max-drop and distillation: classification (top-1 "
             "agreement; KL on logits), embedding (cosine), generic (error, cosine); auto: a zoo model's own, "
             "classification for a single (N, C) output of class scores (logits, or probabilities), else generic.")


MATERIALIZE_MAX = 4096  # larger sample sets (e.g. fresh generated crops, one per training image) are read lazily


class _Lazy:
    """Sample i of a large SampleSet, built on access (bounded memory for sets of any size)."""

    def __init__(self, samples) -> None:
        self.make, self.idx = samples.make, list(samples._idx())

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return dict(self.make(self.idx[int(i)]))


def _materialize(samples):
    """(items: a list, or a lazy sequence for large SampleSets, labels or None)."""
    labels = samples.label_array() if hasattr(samples, "label_array") else None
    if hasattr(samples, "make") and hasattr(samples, "_idx") and len(samples) > MATERIALIZE_MAX:
        return _Lazy(samples), labels
    items = [dict(s) for s in samples]
    if not items:
        raise DataError("distillation needs at least 2 samples, got none", hint="pass --calibration DATA")
    return items, labels


def _training_modes(student, freeze_bn: bool, dropout: bool) -> None:
    """The student's modes for a training step. Without `dropout` it runs its inference forward and only its
    BatchNorm layers train (unless `freeze_bn`): anything else a model does differently in training mode
    (stochastic depth / DropPath written on self.training, auxiliary outputs) would be noise or a different
    output against the teacher's exact targets. With `dropout` the whole student is in training mode."""
    import torch

    student.train(dropout)
    for m in student.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train(not freeze_bn)


def _stack(items: list[dict[str, np.ndarray]], axes: dict[str, int] | None = None) -> dict[str, Any]:
    """Concatenate batch-1 samples along each input's batch axis (`axes`, default 0); ragged axes (token
    sequences) are zero-padded to the longest."""
    import torch

    out = {}
    for k in items[0]:
        arrs = [np.asarray(it[k]) for it in items]
        shape = np.max([a.shape for a in arrs], axis=0)
        if any(tuple(a.shape) != tuple(shape) for a in arrs):
            arrs = [np.pad(a, [(0, int(s - d)) for d, s in zip(a.shape, shape)]) for a in arrs]
        out[k] = torch.as_tensor(np.concatenate(arrs, axis=(axes or {}).get(k, 0)))
    return out


def batch_axes(model, items) -> dict[str, int] | None:
    """The axis each input's samples stack along: 0, unless the model refuses two samples stacked there (a
    recurrent state (layers, batch, hidden), a time-major sequence); then the first assignment of size-1 axes
    it runs on. None when it runs on none: one sample per batch."""
    import itertools

    import torch

    if len(items) < 2:
        return {}
    pair = [items[0], items[1]]
    choices = [[0] + [a for a in range(1, np.ndim(v)) if np.shape(v)[a] == 1] for v in pair[0].values()]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # a probe: no BatchNorm statistics or dropout draws
    try:
        for axes in itertools.islice(itertools.product(*choices), 64):
            feed = dict(zip(pair[0], axes))
            try:
                with torch.no_grad():
                    model(**_stack(pair, feed))
            except Exception:  # noqa: BLE001 - any refusal of the stacked shapes
                continue
            return feed
        return None
    finally:
        for m, mode in modes:
            m.training = mode


def model_outputs(out) -> list:
    """A forward()'s tensors in order: a tensor, a (nested) tuple/list/namedtuple, a dict's values or a
    dataclass's fields. None is no output (nanoGPT's (logits, loss) without targets), as in
    sources.torch_common.flat_outputs."""
    import dataclasses

    if out is None:
        return []
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in model_outputs(v)]
    return [out]


def recalibrate_bn(model, batches: list[dict[str, Any]]) -> int:
    """Re-estimate every BatchNorm's running mean/variance from `batches` (exact average over them, no
    momentum): after channels are removed (and biases compensated) the stored statistics no longer match
    what the layers see. Only the statistics change. Returns how many BatchNorm layers were updated."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats and m.running_mean is not None]
    if not bns or not batches:
        return 0
    saved = [(m, m.momentum, m.training) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight per batch
        m.train()
    try:
        with torch.no_grad():
            for feed in batches:
                model(**feed)
    finally:
        for m, mom, tr in saved:
            m.momentum = mom
            m.train(tr)
        model.train(was_training)
    return len(bns)


def _recalibrate_if_better(model, batches, evaluate, current: float) -> int:
    """Re-estimate BatchNorm statistics, but keep them only if the held-out loss (`evaluate()[0]`, now
    `current`) drops: a model whose layers already match the teacher's (e.g. least-squares
    reconstruction) does better with the original statistics than with ones from a small sample."""
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    n = recalibrate_bn(model, batches)
    if n and evaluate()[0] > current:
        model.load_state_dict(saved, strict=False)
        return 0
    return n


def first_output(out):
    """A model's first output: the tensor itself, the first of a tuple/list, the first value of a dict or the
    first field of a dataclass."""
    return model_outputs(out)[0]


def train_precision(precision: str) -> str:
    """"fp32" or "bf16" for the training steps. bf16 (autocast, channels-last) makes a step of mobilenet_v2 at
    batch 32 2.9x faster on an AVX-512 BF16 host (1.51 s -> 0.52 s), and its rounding adds ~10-20% to the
    distillation loss of a close student (KL x T^2 on 32 crops: 0.129 fp32, 0.139 bf16). On a 30% pruned
    mobilenet_v2 (256 held-out crops) the outcome was within run-to-run noise: 1,500 bf16 steps 0.859 top-1
    agreement, 1,200 fp32 steps 0.863, 600 fp32 steps 0.871. fp32 stays the default ("auto" = fp32): it is
    exact and gives the same student on every CPU (bf16 kernels exist only on some); bf16 is opt-in."""
    import torch

    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"unknown training precision '{precision}'", hint="choose auto, fp32 or bf16")
    if precision != "bf16":
        return "fp32"
    try:
        bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16 = False
    if not bf16:
        raise UsageError("bf16 training needs a CPU with bfloat16 instructions (AVX-512 BF16 or AMX)",
                         hint="use --train-precision fp32")
    return "bf16"


class _FastSteps:
    """Training-step settings for `precision`: bf16 autocast and channels-last weights/inputs while
    training (the held-out checks run outside autocast, in fp32); both models get their memory format
    back on exit."""

    def __init__(self, precision: str, *models) -> None:
        self.on, self.models = precision == "bf16", models

    def _format(self, fmt) -> None:
        for m in self.models:
            m.to(memory_format=fmt)

    def __enter__(self) -> _FastSteps:
        import torch

        if self.on:
            self._format(torch.channels_last)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.on:
            self._format(torch.contiguous_format)

    def inputs(self, feed: dict[str, Any]) -> dict[str, Any]:
        import torch

        if not self.on:
            return feed
        return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in feed.items()}

    def autocast(self):
        import contextlib

        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16) if self.on else contextlib.nullcontext()


def _loss_fn(task: str, temperature: float):
    import torch.nn.functional as F

    def loss(s, t, y=None):
        if task == "classification":
            T = temperature
            kd = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True)
            total = kd * T * T
            if y is not None:
                total = 0.5 * total + 0.5 * F.cross_entropy(s, y)
            return total
        if task == "embedding":
            s2, t2 = s.reshape(len(s), -1), t.reshape(len(t), -1)
            return F.mse_loss(s2, t2) * s2.shape[1] + (1 - F.cosine_similarity(s2, t2, dim=1)).mean()
        if isinstance(s, list):  # every output of a multi-output model (boxes and scores ...), not the first only
            return sum(F.mse_loss(a.float(), b.float()) for a, b in zip(s, t) if b.is_floating_point())
        return F.mse_loss(s, t)

    return loss


AUTO = "auto"  # feature_layers=["auto"]: the outputs of the model's repeated blocks (block_layers)


def block_layers(model) -> list[str]:
    """Names of the model's repeated blocks: the longest run of same-class children of one container
    (nn.ModuleList / nn.Sequential), e.g. a transformer's encoder layers or a CNN's residual stages' blocks.
    At least 2 in the run, else [] (nothing is repeated)."""
    from torch import nn

    best: list[str] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)):
            continue
        run: list[str] = []
        prev = None
        for child_name, child in mod.named_children():
            cls = type(child)
            run = run + [child_name] if cls is prev else [child_name]
            prev = cls
            if len(run) > len(best) and len(run) >= 2 and any(True for _ in child.parameters()):
                best = [f"{name}.{c}" if name else c for c in run]
    return best


def resolve_feature_layers(model, names: list[str] | None, task: str) -> list[str]:
    """The layers whose outputs are matched. Default (None): for an embedding or generic model, the outputs
    of its repeated blocks: one embedding per sample is a thin signal, every block's per-token hidden states
    a rich one (TinyBERT-style). Measured on zoo:minilm pruned by 25% of MACs, 480 steps, 65 held-out
    sentences: embedding loss alone 0.956 -> 0.956 cosine (training loss fell, held-out did not: 205
    sentences are memorised), with the six encoder layers' outputs 0.963, plus token augmentation 0.966.
    Classifiers: none (mobilenet_v2's softened 1000-class logits: 0.855 without, 0.852 with three
    blocks matched). "auto" asks for the blocks on any task; "none" for none."""
    if names is None:
        names = [AUTO] if task != "classification" else []
    if [n.lower() for n in names] == ["none"]:
        return []
    if AUTO in names:
        from edgekit.distill_taps import graph_blocks

        names = [n for n in names if n != AUTO] + (block_layers(model) or graph_blocks(model))
    return list(dict.fromkeys(names))


class _Features:
    """Forward hooks on named layers of teacher and student; adapters map student width -> teacher width."""

    def __init__(self, teacher, student, names: list[str]) -> None:
        import torch

        from edgekit.distill_taps import Taps

        self.t, self.s, self.hooks, self.adapters = {}, {}, [], torch.nn.ModuleDict()
        self.taps = (Taps(teacher), Taps(student))  # a block inlined in a pruned GraphModule (distill_taps.py)
        for name in names:
            try:
                tm, sm = self.taps[0].point(name), self.taps[1].point(name)
            except AttributeError as exc:
                raise UsageError(f"feature layer '{name}' is not a layer of both teacher and student",
                                 hint="give names from model.named_modules()") from exc
            self.hooks.append(tm.register_forward_hook(lambda m, i, o, n=name: self.t.__setitem__(n, first_output(o))))
            self.hooks.append(sm.register_forward_hook(lambda m, i, o, n=name: self.s.__setitem__(n, first_output(o))))

    def loss(self):
        import torch
        import torch.nn.functional as F

        total = 0.0
        for n, t in self.t.items():
            s = self.s.get(n)
            if not (isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor)) or s.dim() != t.dim() \
                    or not s.is_floating_point():
                continue
            differ = [i for i in range(s.dim()) if s.shape[i] != t.shape[i]]
            if len(differ) > 1:
                continue  # not a width change an adapter can bridge (e.g. a pruned sequence of shapes)
            axis = differ[0] if differ else (1 if s.dim() == 4 else s.dim() - 1)
            if s.shape[axis] != t.shape[axis]:
                key = n.replace(".", "_")
                if key not in self.adapters:
                    self.adapters[key] = torch.nn.Linear(s.shape[axis], t.shape[axis], bias=False)
                s = self.adapters[key](s.movedim(axis, -1)).movedim(-1, axis)
            total = total + F.mse_loss(s, t.detach())
        return total

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        for taps in self.taps:
            taps.remove()


def class_labels(labels, classes: int) -> np.ndarray:
    """`labels` as int64 class indices, checked: one whole number in [0, classes) per sample (cross-entropy
    raised IndexError / 'multi-target not supported' mid-training, an internal error)."""
    arr = np.asarray(labels)
    hint = f"give one class index 0..{classes - 1} per sample under the 'labels' key"
    if arr.ndim != 1:
        raise DataError(f"labels have shape {arr.shape}; a classifier needs one class index per sample", hint=hint)
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise DataError(f"labels are {arr.dtype} values, not class indices", hint=hint)
    if len(arr) and (arr.min() < 0 or arr.max() >= classes):
        raise DataError(f"labels range over {arr.min():g}..{arr.max():g}, but the model has {classes} classes", hint=hint)
    return arr.astype(np.int64)


def default_lr(task: str) -> float:
    """AdamW learning rate when none is given: 1e-3 for classifiers (small CNNs such as mnist_cnn recover
    fastest there), 1e-4 for embedding and other models, mostly pretrained transformers: zoo:minilm pruned
    by 25% of MACs gained nothing at 1e-3 or 2e-4 (held-out loss never below the start: the best weights
    were the first) and 0.956 -> 0.966 cosine at 1e-4 (480 steps, block features, token augmentation)."""
    return 1e-3 if task == "classification" else 1e-4


def check_settings(steps: int, batch_size: int, lr: float | None, temperature: float, task: str,
                   samples=None) -> float:
    """Refuse bad distillation settings (and a sample set of fewer than 2) before any work; returns the learning
    rate (`default_lr` when None). Callers that prune first call it before pruning."""
    if task not in TASKS:
        raise UsageError(f"unknown distillation task '{task}'", hint=f"choose one of: {', '.join(TASKS)}")
    lr = default_lr(task) if lr is None else lr
    if steps < 1 or batch_size < 1:
        raise UsageError(f"--distill-steps and batch size must be positive (got {steps}, {batch_size})")
    if not (lr > 0 and temperature > 0):  # lr -1 crashed in the optimizer; temperature 0 trained on NaN losses
        raise UsageError(f"--lr and --temperature must be positive (got {lr}, {temperature})")
    if samples is not None and hasattr(samples, "__len__") and len(samples) < 2:
        raise DataError(f"distillation needs at least 2 samples, got {len(samples)}", hint="give more calibration data")
    return lr


def distill(teacher, student, samples: Iterable[dict[str, np.ndarray]], *, steps: int = 300,
            task: str = "classification", lr: float | None = None, temperature: float = 4.0, batch_size: int = 32,
            seed: int = 0, feature_layers: list[str] | None = None, labels: np.ndarray | None = None,
            augment: bool = True, held_out: float = 0.2, feature_weight: float = 1.0,
            patience: int = 3, recalibrate: bool = True, freeze_bn: bool | None = None,
            weight_decay: float = 0.0, precision: str = "fp32", dropout: bool = False) -> dict[str, Any]:
    """Train `student` (in place) to imitate `teacher` on `samples`. Returns a report with the held-out
    loss before and after, agreement with the teacher (top-1 or cosine), steps run and time.

    recalibrate: re-estimate the student's BatchNorm statistics on (unaugmented) training samples first
    and again at the end (training on augmented batches drifts them). freeze_bn: keep BatchNorm in
    inference mode while training (default: when batch_size < 8). dropout: keep the student's dropout
    layers active while training; off by default, because the teacher's outputs on fresh inputs are
    exact targets, not labels to regularise against (30%-pruned mobilenet_v2, 600 bf16 steps: 0.832 ->
    0.832 top-1 agreement with dropout, 0.832 -> 0.859 without; 600 fp32 steps without dropout: held-out
    loss 0.117 -> 0.094, the largest drop measured, but agreement 0.848 against 0.871 with dropout). precision: "fp32" (default), or "bf16"
    (training steps under bfloat16 autocast, channels-last weights and inputs; the held-out checks stay
    fp32): faster, less exact (see `train_precision`)."""
    import torch

    lr = check_settings(steps, batch_size, lr, temperature, task)
    items, set_labels = _materialize(samples)
    labels = set_labels if labels is None else np.asarray(labels)
    if len(items) < 2:
        raise DataError(f"distillation needs at least 2 samples, got {len(items)}", hint="give more calibration data")
    if labels is not None and len(labels) != len(items):
        raise DataError(f"{len(labels)} labels for {len(items)} samples")
    axes = batch_axes(teacher, items)
    one = axes is None  # no stacked batches at all: training steps and held-out checks take one sample each
    if one:
        log("distillation: the model refuses samples stacked on any axis; one sample per step")
        batch_size, axes = 1, {}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    precision = train_precision(precision)
    perm = rng.permutation(len(items))
    n_held = min(max(1, int(round(len(items) * held_out))), 128)
    held_idx, train_idx = perm[:n_held], perm[n_held:]
    helds = [_stack([items[i]]) for i in held_idx] if one else [_stack([items[i] for i in held_idx], axes)]
    teacher.eval()
    loss_fn = _loss_fn(task, temperature)
    feature_layers = resolve_feature_layers(student, feature_layers, task)
    feats = _Features(teacher, student, feature_layers) if feature_layers else None

    # what the loss compares: the task's output, or every output of a generic model (boxes and scores ...)
    # (integer outputs, an argmax map or class ids, keep their type: the loss skips them, nothing flows through them)
    pick = (lambda o: [t.float() if t.is_floating_point() else t for t in model_outputs(o)]) if task == "generic" \
        else first_output
    with torch.no_grad():
        held_ts = [pick(teacher(**h)) for h in helds]
    floats = [t for t in (held_ts[0] if isinstance(held_ts[0], list) else [held_ts[0]]) if t.is_floating_point()]
    if not floats and feats is None:
        raise UsageError("distillation has nothing to learn from: every output of this model is integer (an argmax "
                         "map, class ids), which no gradient flows through",
                         hint="return the scores the integers are taken from (argmax after the model), name a "
                              "feature layer to match, or prune without --distill-steps")
    if task != "classification":
        labels = None  # the teacher's outputs are the targets; labels only add a classifier's cross-entropy
    elif labels is not None:
        labels = class_labels(labels, int(held_ts[0].shape[-1]))
    held_y = torch.as_tensor(labels[held_idx]) if labels is not None else None

    def evaluate() -> tuple[float, float]:
        """(held-out distillation loss, agreement with the teacher: top-1 or cosine of the first output)."""
        student.eval()
        losses, agrees = [], []
        with torch.no_grad():
            for h, ht in zip(helds, held_ts):
                s = pick(student(**h))
                losses.append(float(loss_fn(s, ht)))
                if isinstance(s, list):  # the first float output (an integer one has no cosine)
                    s, t = next((a, b) for a, b in zip(s, ht) if b.is_floating_point())
                else:
                    t = ht
                if task == "classification":
                    agrees.append(float((s.argmax(-1) == t.argmax(-1)).float().mean()))
                else:
                    agrees.append(float(torch.nn.functional.cosine_similarity(
                        s.reshape(len(s), -1), t.reshape(len(s), -1)).mean()))
        return float(np.mean(losses)), float(np.mean(agrees))

    raw_loss, raw_agree = evaluate()
    calib_batch = 1 if one else max(batch_size, 16)
    calib = [_stack([items[i] for i in train_idx[j:j + calib_batch]], axes)
             for j in range(0, min(len(train_idx), 256), calib_batch)] if recalibrate else []
    n_bn = _recalibrate_if_better(student, calib, evaluate, raw_loss)
    before, agree_before = evaluate()
    best = (before, {k: v.detach().clone() for k, v in student.state_dict().items()})
    params = list(student.parameters())
    if feats is not None:  # one pass creates the width adapters, so the optimizer sees them from the start
        with torch.no_grad():
            teacher(**helds[0])
            student(**helds[0])
            feats.loss()
        params += list(feats.adapters.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    check_every = max(10, steps // 10)
    ema, last_check, flat, step, stopped = None, None, 0, 0, False
    first_loss = None
    t0 = time.perf_counter()
    freeze_bn = batch_size < 8 if freeze_bn is None else freeze_bn
    fast = _FastSteps(precision, teacher, student)
    with fast, Progress("distill", total=steps) as bar:
        while step < steps:
            order = train_idx[rng.permutation(len(train_idx))] if len(train_idx) else held_idx
            for start in range(0, len(order), batch_size):
                if step >= steps:
                    break
                idx = order[start:start + batch_size]
                feed = _stack([items[i] for i in idx], axes)
                if augment:
                    feed = _augment(feed, gen)
                _training_modes(student, freeze_bn, dropout)
                feed = fast.inputs(feed)
                with fast.autocast():
                    with torch.no_grad():
                        t_out = pick(teacher(**feed))
                    s_out = pick(student(**feed))
                    t_out, s_out = (t_out, s_out) if task == "generic" else (t_out.float(), s_out.float())
                    y = torch.as_tensor(labels[idx]) if labels is not None else None
                    loss = loss_fn(s_out, t_out, y)
                    if feats is not None:
                        loss = loss + feature_weight * feats.loss()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                lv = float(loss.detach())
                first_loss = lv if first_loss is None else first_loss
                ema = lv if ema is None else 0.9 * ema + 0.1 * lv
                bar.update(1, loss=ema)
                if step % check_every == 0:
                    val, _ = evaluate()
                    if val < best[0]:
                        best = (val, {k: v.detach().clone() for k, v in student.state_dict().items()})
                    if last_check is not None and ema > last_check * (1 - 0.01):
                        flat += 1
                    else:
                        flat = 0
                    last_check = ema
                    if flat >= patience:
                        stopped = True
                        break
            if stopped:
                break
    if feats is not None:
        feats.remove()
    final, _ = evaluate()
    n_bn_end = 0
    if calib and not freeze_bn:
        n_bn_end = _recalibrate_if_better(student, calib, evaluate, final)
        final, _ = evaluate()
    kept_start = final > before and best[0] >= before  # no checkpoint beat the weights distillation started from
    if final > best[0]:
        student.load_state_dict(best[1])
    after, agree_after = evaluate()
    student.eval()
    accuracy = None
    if held_y is not None and task == "classification":
        with torch.no_grad():
            top1 = torch.cat([first_output(student(**h)).argmax(-1) for h in helds])
            accuracy = float((top1 == held_y).float().mean())
    report = {
        "task": task, "steps": step, "steps_requested": steps, "early_stopped": stopped,
        "samples_train": int(len(train_idx)), "samples_held_out": int(n_held), "batch_size": batch_size,
        "lr": lr, "temperature": temperature if task == "classification" else None, "augment": augment,
        "feature_layers": feature_layers,
        "train_loss_first": first_loss, "train_loss_last": ema,
        "bn_recalibrated": n_bn, "bn_recalibrated_end": n_bn_end, "freeze_bn": freeze_bn, "dropout": dropout,
        "held_out_loss_raw": raw_loss, "held_out_loss_before": before, "held_out_loss_after": after,
        ("held_out_top1_agreement_raw" if task == "classification" else "held_out_cosine_raw"): raw_agree,
        ("held_out_top1_agreement_before" if task == "classification" else "held_out_cosine_before"): agree_before,
        ("held_out_top1_agreement_after" if task == "classification" else "held_out_cosine_after"): agree_after,
        "seconds": round(time.perf_counter() - t0, 2), "seed": seed, "precision": precision,
    }
    if accuracy is not None:
        report["held_out_accuracy_after"] = accuracy
    report["kept_start"] = kept_start
    which = "top-1 agreement" if task == "classification" else "cosine"
    figures = f"held-out loss {before:.4g} -> {after:.4g}"
    if agree_before is not None and agree_after is not None:
        figures += f", {which} with the teacher {agree_before:.4f} -> {agree_after:.4f}"
    if kept_start:
        warn(f"distilled {step} steps: no checkpoint beat the starting weights on the held-out samples ({figures}); "
             "those weights are kept. More steps, another --lr or more (or augmented) training data may help")
    else:
        log(f"distilled {step} steps: {figures}")
    return report
