"""`edgekit devices`."""

from __future__ import annotations

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


def _rate(v: float | None) -> str:
    return f"{v:,.0f}" if v else "?"


@click.command()
@json_option
@handle_errors
def devices(as_json: bool) -> None:
    """List the device profiles (devices/*.toml; `local` is this host, detected at run time).

    \b
    --device accepts: local | a profile name | ssh://user@host[:port] | adb:SERIAL.
    A profile whose [access] is filled in (host / serial) is measured there; otherwise
    `edgekit profile --device NAME` gives a roofline estimate from its peak rates.
    Your own profiles: $EDGEKIT_DEVICE_PATH or ~/.config/edgekit/devices/*.toml."""
    from edgekit.profile.devices import list_profiles

    profiles = list_profiles()
    if as_json:
        emit_json({"devices": [p.to_dict() for p in profiles]})
        return
    click.echo(f"{'name':<22} {'kind':<7} {'cores':>5} {'GHz':>5} {'GB/s':>6} {'fp32 GOPS':>10} {'int8 GOPS':>10}  "
               f"{'units':<12} {'access':<7} description")
    for p in profiles:
        acc = p.access.get("kind", "none")
        reach = p.access.get("host") or p.access.get("serial")
        access = acc if acc == "local" or reach else f"{acc}?"
        bw = f"{p.memory_bandwidth_gbs:.1f}" if p.memory_bandwidth_gbs else "?"
        click.echo(f"{p.name:<22} {p.kind:<7} {p.cores or '?':>5} {p.clock_ghz or '?':>5} {bw:>6} "
                   f"{_rate(p.peak_gops('CPU', 'fp32')):>10} {_rate(p.peak_gops('CPU', 'int8')):>10}  "
                   f"{','.join(p.units) or '-':<12} {access:<7} {p.description}")
    click.echo("\n(access 'ssh?'/'adb?': not configured, so profiling it gives a roofline estimate; CPU peaks shown)")
    from edgekit.resources import data_dir

    shipped = data_dir("devices").resolve()
    own = [f"{p.name} ({p.source})" for p in profiles if p.source and p.source.resolve().parent != shipped]
    if own:  # a copy of a shipped profile keeping its name replaces it: say which file --device NAME reads
        click.echo(f"your profiles: {', '.join(own)}")
