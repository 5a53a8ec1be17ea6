"""`edgekit zoo`."""

from __future__ import annotations

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


@click.command()
@json_option
@handle_errors
def zoo(as_json: bool) -> None:
    """List the built-in models, usable as zoo:NAME."""
    from edgekit.zoo import DEFAULT_MODEL, ZOO

    rows = [{"name": e.name, "task": e.task, "description": e.description, "default": e.name == DEFAULT_MODEL,
             "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in e.inputs],
             "calibration": e.calibration, "requires": e.requires} for e in ZOO.values()]
    if as_json:
        emit_json({"models": rows})
        return
    for r in rows:
        mark = " (default)" if r["default"] else ""
        click.echo(f"zoo:{r['name']:<14} {r['task']:<15} {r['description']}{mark}")
