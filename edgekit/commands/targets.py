"""`edgekit targets`."""

from __future__ import annotations

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


@click.command()
@json_option
@handle_errors
def targets(as_json: bool) -> None:
    """List the targets (one targets/*.toml each)."""
    from edgekit.targets import list_targets

    rows = [{"name": t.name, "backend": t.backend, "precision": t.precision, "precisions": list(t.precisions),
             "aliases": list(t.aliases), "default_device": t.default_device, "description": t.description,
             "quantization": t.quantization} for t in list_targets()]
    if as_json:
        emit_json({"targets": rows})
        return
    for r in rows:
        alias = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
        click.echo(f"{r['name']:<12} {r['backend']:<12} {r['precision']:<5} {r['description']}{alias}")
