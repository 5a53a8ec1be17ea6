"""`edgekit distill`: prune a torch model and/or recover it by distillation from the original; save a .pt2."""

from __future__ import annotations

import click

from edgekit.commands._common import emit_json, handle_errors, json_option
from edgekit.distill import TASK_CHOICES, TASK_HELP
from edgekit.prune import ALLOCATION_CHOICES, IMPORTANCE_CHOICES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(), help="Output .pt2 (torch.export program).")
@click.option("--prune", type=float, help="Fraction of channels to remove (structured pruning).")
@click.option("--prune-macs", type=float, help="Target fraction of MACs to remove.")
@click.option("--prune-exclude", multiple=True, help="Layer name (or glob) whose output channels are kept (repeatable).")
@click.option("--round-to", type=int, default=8, show_default=True, help="Kept channel counts are multiples of this.")
@click.option("--importance", type=click.Choice(IMPORTANCE_CHOICES),
              default="auto", show_default=True, help="Channel importance criterion (auto: variance with data, else l2).")
@click.option("--allocation", type=click.Choice(ALLOCATION_CHOICES), default="auto",
              show_default=True, help="uniform | global | sensitivity (per layer from its measured output loss on the "
              "data) | auto (sensitivity with data, else uniform)")
@click.option("--no-reconstruct", is_flag=True,
              help="Skip the least-squares refit of the layers after the pruned channels (needs data; on by default).")
@click.option("--distill-steps", type=int, default=0, show_default=True, help="Distillation steps (0 = none).")
@click.option("--calibration", help="Unlabeled data: .npz/.npy, image folder, text file or shipped set name.")
@click.option("--train-data", help="Data for distillation (default: --calibration, else the model's shipped set).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=None,
              help="Learning rate (AdamW, cosine decay); default 1e-3 for classifiers, 1e-4 for other models.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softmax temperature (classifiers).")
@click.option("--feature-layer", "feature_layers", multiple=True, help="Also match this layer's output (repeatable; 'auto': the repeated blocks, the default for "
              "embedding and other non-classifier models; 'none': no feature loss).")
@click.option("--no-augment", is_flag=True, help="No image augmentation during distillation.")
@click.option("--train-precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="Training-step precision: fp32 (auto), or bf16 autocast on CPUs with bfloat16 instructions "
              "(2-3x faster steps for convolutional models, less exact). Held-out checks are always fp32.")
@click.option("--input-shape", "input_shapes", multiple=True, help="name=1x3x224x224 (repeatable); name=1x128:int64 for integer inputs.")
@click.option("--weights", type=click.Path(), help="state_dict for a factory pkg.module:fn model.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (training, sample picks).")
@click.option("--task", type=click.Choice(TASK_CHOICES), default="auto", show_default=True, help=TASK_HELP)
@json_option
@handle_errors
def distill(model: str, output: str, prune: float | None, prune_macs: float | None, prune_exclude: tuple[str, ...],
            round_to: int, importance: str, allocation: str, no_reconstruct: bool, distill_steps: int, calibration: str | None,
            train_data: str | None, batch_size: int, lr: float | None, temperature: float, feature_layers: tuple[str, ...],
            no_augment: bool, train_precision: str, input_shapes: tuple[str, ...], weights: str | None, seed: int, task: str, as_json: bool) -> None:
    """Prune MODEL (a torch model with its torch.nn layers: a Python factory pkg.module:fn, or zoo:NAME; a .pt2 or
    TorchScript file has none) and recover it by distilling from the original on unlabeled data. Writes a
    torch.export program (-o OUT.pt2).

    \b
    Examples:
      edgekit distill zoo:mnist_cnn --prune-macs 0.5 --distill-steps 300 -o small.pt2
      edgekit distill zoo:mobilenet_v2 --prune 0.3 --distill-steps 200 --calibration natural_images -o mb.pt2
    """
    from pathlib import Path

    from edgekit.prune.run import prune_and_distill
    from edgekit.sources import parse_input_shapes

    result = prune_and_distill(
        model, Path(output), prune=prune, prune_macs=prune_macs, exclude=prune_exclude, round_to=round_to,
        importance=importance, allocation=allocation, distill_steps=distill_steps, data=calibration, train_data=train_data,
        batch_size=batch_size, lr=lr, temperature=temperature, feature_layers=list(feature_layers),
        augment=not no_augment, train_precision=train_precision, reconstruct=not no_reconstruct, input_shapes=parse_input_shapes(input_shapes), weights=weights, seed=seed,
        task=task)
    if as_json:
        emit_json(result)
        return
    p = result
    click.echo(f"{p['output']}  params {p['params_before']:,} -> {p['params_after']:,}  "
               f"MACs {p['macs_before']:,} -> {p['macs_after']:,}  {p['size_bytes'] / 1e6:.2f} MB")
    if p.get("distill"):
        d = p["distill"]
        click.echo(f"distill: {d['steps']} steps, held-out loss {d['held_out_loss_before']:.4g} -> "
                   f"{d['held_out_loss_after']:.4g}")
