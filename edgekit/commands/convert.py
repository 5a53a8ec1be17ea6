"""`edgekit convert`."""

from __future__ import annotations

import click

from edgekit.commands._common import emit_json, handle_errors, json_option
from edgekit.distill import TASK_CHOICES, TASK_HELP
from edgekit.prune import ALLOCATION_CHOICES, IMPORTANCE_CHOICES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--target", "-t", "targets", multiple=True, required=True,
              help="Target name or alias (repeatable); see `edgekit targets`.")
@click.option("-o", "--output", "outdir", default="out", show_default=True, type=click.Path(),
              help="Output folder for the artifacts.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]),
              help="Override the target's default precision (fp16: float16 weights, half the size; openvino, tflite, arm).")
@click.option("--input-shape", "input_shapes", multiple=True,
              help="name=1x3x224x224 (repeatable), or 1x3x224x224 for a single-input model; "
                   "a :int64 suffix gives a torch model's input dtype (input_ids=1x128:int64).")
@click.option("--weights", type=click.Path(), help="state_dict (.safetensors or a weights-only .pt) for a factory.")
@click.option("--calibration", help="Calibration/verification data: .npz/.npy, image folder, text file or shipped set.")
@click.option("--calibration-size", type=int, help="Use N samples, picked reproducibly (seeded).")
@click.option("--calibration-method", type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
              help="Range calibration method (default: the target's).")
@click.option("--max-drop", type=float, help="Accuracy budget for int8: keep sensitive layers in float until met.")
@click.option("--fallback-order", type=click.Choice(["e2e", "e2e-cost", "e2e-greedy", "layer"]), default="e2e",
              show_default=True,
              help="Order in which --max-drop keeps layers float: by each layer's measured effect on the model "
                   "output (e2e; e2e-cost per float MAC; e2e-greedy re-measured after each pick) or by its "
                   "local error (layer).")
@click.option("--int8-finetune", type=int, metavar="STEPS",
              help="End-to-end int8 fine-tuning steps against the fp32 model on the calibration data "
                   "(learns weight rounding, biases and activation ranges; default: the target's, 0).")
@click.option("--eval", "eval_data", help="Labelled data (.npz with 'labels') for a user metric.")
@click.option("--prune", type=float, help="Fraction of channels to remove (structured pruning).")
@click.option("--prune-macs", type=float, help="Target fraction of MACs to remove.")
@click.option("--prune-exclude", multiple=True, help="Module name kept unpruned (repeatable).")
@click.option("--round-to", type=int, default=8, show_default=True, help="Round kept channel counts to a multiple.")
@click.option("--importance", type=click.Choice(IMPORTANCE_CHOICES), default="auto",
              show_default=True, help="Channel importance criterion for pruning (auto: variance with calibration data, else l2).")
@click.option("--allocation", type=click.Choice(ALLOCATION_CHOICES), default="auto",
              show_default=True, help="Pruning allocation: the same fraction per layer, one threshold across layers, or per layer from "
                   "its measured output loss on the calibration data (sensitivity; auto: sensitivity with "
                   "calibration data, else uniform).")
@click.option("--layout-by-latency", is_flag=True,
              help="With --prune-macs: among channel layouts near the MAC target, keep the one the targets' "
                   "runtimes run fastest on this machine (measured; geometric mean over the runtimes).")
@click.option("--distill-steps", type=int, default=0, help="Knowledge-distillation steps after pruning.")
@click.option("--io-layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True,
              help="TFLite model I/O layout.")
@click.option("--io-dtype", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="TFLite int8 model I/O type.")
@click.option("--profile", "profile_device", help="Profile every artifact on this device (local, profile, ssh://, adb:).")
@click.option("--name", help="Base name of the artifacts (default: the model's).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (sample picks, synthetic inputs).")
@click.option("--task", type=click.Choice(TASK_CHOICES), default="auto", show_default=True, help=TASK_HELP)
@click.option("--no-verify", is_flag=True, help="Keep artifacts without checking them against the source model.")
@click.option("--verbose", "-v", is_flag=True, help="More progress detail.")
@json_option
@handle_errors
def convert(model: str, targets: tuple[str, ...], outdir: str, precision: str | None, input_shapes: tuple[str, ...],
            weights: str | None, calibration: str | None, calibration_size: int | None,
            calibration_method: str | None, max_drop: float | None, fallback_order: str, int8_finetune: int | None, eval_data: str | None, prune: float | None,
            prune_macs: float | None, prune_exclude: tuple[str, ...], round_to: int, importance: str, allocation: str, layout_by_latency: bool,
            distill_steps: int, io_layout: str, io_dtype: str, profile_device: str | None, name: str | None,
            seed: int, task: str, no_verify: bool, verbose: bool, as_json: bool) -> None:
    """Convert MODEL into verified artifacts for each --target.

    MODEL is an .onnx file, a torch.export .pt2, a TorchScript file, a factory pkg.module:fn
    (with --weights), or zoo:NAME (see `edgekit zoo`).

    \b
    Examples:
      edgekit convert zoo:mnist_cnn --target onnxruntime --target openvino
      edgekit convert model.onnx --target arm --precision int8 --calibration images/
    """
    from edgekit import api, progress
    from edgekit.sources import parse_input_shapes

    progress.set_verbose(verbose)
    result = api.convert(
        model, list(targets), outdir, precision=precision, input_shapes=parse_input_shapes(input_shapes),
        weights=weights, calibration=calibration, calibration_size=calibration_size,
        calibration_method=calibration_method, verify=not no_verify, io_layout=io_layout, io_dtype=io_dtype,
        prune=prune, prune_macs=prune_macs, prune_exclude=prune_exclude, round_to=round_to, importance=importance, allocation=allocation,
        layout_by_latency=layout_by_latency,
        distill_steps=distill_steps, max_drop=max_drop, eval_data=eval_data, int8_finetune=int8_finetune,
        fallback_order=fallback_order, profile=profile_device, name=name,
        seed=seed, task=task,
    )
    if as_json:
        emit_json(result)
        return
    for art in result["artifacts"]:
        v = art["verification"]
        status = "not verified" if v is None else ("verified" if v["passed"] else "FAILED")
        click.echo(f"{art['path']}  {art['target']} {art['precision']}  {art['size_bytes'] / 1e6:.2f} MB  {status}")
