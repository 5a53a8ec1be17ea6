"""`edgekit build`: build every model of edgekit.toml (cached, reproducible) + edgekit-manifest.json."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path),
              help="edgekit.toml or pyproject.toml with [tool.edgekit] (default: the one in the current folder).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output folder (default: [build] output in the config, else edgekit-out next to it).")
@click.option("--no-cache", is_flag=True, help="Rebuild everything (the fresh results still refresh the cache).")
@click.option("--warn-only", is_flag=True, help="An exceeded budget is a warning, not a failure (exit code 5).")
@click.option("-m", "--model", "models", multiple=True, help="Build only this model (repeatable).")
@click.option("-t", "--target", "targets", multiple=True, help="Build only these targets for every model (repeatable); the config's other artifacts stay installed.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="Override every model's precision.")
@click.option("--verbose", "-v", is_flag=True, help="More progress detail.")
@json_option
@handle_errors
def build(config_path: Path | None, output: Path | None, no_cache: bool, warn_only: bool, models: tuple[str, ...],
          targets: tuple[str, ...], precision: str | None, verbose: bool, as_json: bool) -> None:
    """Build every [[models]] entry of edgekit.toml for its targets.

    Artifacts are cached by a content hash of their inputs (model bytes, config entry, calibration
    data, edgekit and runtime versions): an unchanged build copies them from the cache in well under
    a second, without importing torch. Writes edgekit-manifest.json next to the artifacts.
    Exit code 5 when a budget (max_size_mb, max_latency_ms, max_accuracy_drop) is exceeded.

    \b
    Examples:
      edgekit build                       # edgekit.toml in the current folder
      edgekit build -c app/edgekit.toml -o app/src/main/assets/models --json
      edgekit build --model digits --target openvino --warn-only
    """
    from edgekit import progress
    from edgekit.build import load_config, run_build

    progress.set_verbose(verbose)
    config = load_config(config_path)
    summary = run_build(config, output=output, use_cache=not no_cache, warn_only=True if warn_only else None,
                        only=models, targets=targets, precision=precision)
    if as_json:
        emit_json(summary)
        return
    for a in summary["artifacts"]:
        state = "cached" if a["cached"] else "built "
        click.echo(f"{state}  {a['model']} [{a['target']} {a['precision']}]  {a['file']}  "
                   f"{a['size_bytes'] / 1e6:.2f} MB")
    click.echo(f"{len(summary['artifacts'])} artifact(s): {summary['built']} built, {summary['cached']} cached, "
               f"in {summary['seconds']:.2f} s; manifest {summary['manifest']}")
