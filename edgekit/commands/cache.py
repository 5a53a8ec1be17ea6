"""`edgekit cache info|clean`: the build cache ($EDGEKIT_CACHE_DIR, default ~/.cache/edgekit)."""

from __future__ import annotations

import time

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cache() -> None:
    """Show or clean the build cache used by `edgekit build`.

    The cache lives in $EDGEKIT_CACHE_DIR (default ~/.cache/edgekit): one entry per model and target,
    keyed by a content hash of everything that shapes the artifact.
    """


@cache.command()
@json_option
@handle_errors
def info(as_json: bool) -> None:
    """Where the cache is, its entries and their size."""
    from edgekit.build import Cache

    data = Cache().info()
    if as_json:
        emit_json(data)
        return
    click.echo(f"cache: {data['path']}")
    click.echo(f"entries: {data['entries']}, {data['size_bytes'] / 1e6:.2f} MB")
    now = time.time()
    for item in data["items"]:
        if not item["complete"]:
            click.echo(f"  {item['key'][:12]}  (incomplete)")
            continue
        age = (now - item["created"]) / 3600 if item.get("created") else 0.0
        click.echo(f"  {item['key'][:12]}  {item['model']} [{item['target']} {item['precision']}]  "
                   f"{item['size_bytes'] / 1e6:.2f} MB  {age:.1f} h old")


@cache.command()
@click.option("--older-than", "older_than_days", type=click.FloatRange(min=0),
              help="Remove only entries created more than this many days ago.")
@json_option
@handle_errors
def clean(older_than_days: float | None, as_json: bool) -> None:
    """Remove cache entries (each under its lock: a build using one finishes first)."""
    from edgekit.build import Cache

    c = Cache()
    res = c.clean(older_than_s=older_than_days * 86400 if older_than_days is not None else None)
    res["path"] = str(c.root)
    if as_json:
        emit_json(res)
        return
    click.echo(f"removed {res['removed']} entr{'y' if res['removed'] == 1 else 'ies'}, "
               f"{res['freed_bytes'] / 1e6:.2f} MB freed ({res['path']})")
