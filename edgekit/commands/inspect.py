"""`edgekit inspect ARTIFACT`: I/O names, shapes, dtypes, layout and quantization of any artifact."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands._common import emit_json, handle_errors, json_option


def _fmt_tensor(t: dict) -> str:
    shape = "x".join("?" if d is None else str(d) for d in t["shape"]) or "scalar"
    q = t.get("quantization")
    qs = ""
    if q:
        scale = q["scale"][0] if len(q["scale"]) == 1 else f"{len(q['scale'])} scales"
        zp = q["zero_point"][0] if len(q["zero_point"]) == 1 else "per-channel"
        qs = f"  scale={scale:.6g} zero_point={zp}" if isinstance(scale, float) else f"  {scale}"
    return f"  {t['name']}  {shape}  {t['dtype']}  {t.get('layout') or '-'}{qs}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact", type=click.Path(path_type=Path))
@json_option
@handle_errors
def inspect(artifact: Path, as_json: bool) -> None:
    """Print what app code needs to feed ARTIFACT (.onnx, .ort, .xml, .tflite).

    When an edgekit-manifest.json next to it lists the artifact, its verification and profiling
    figures and the build's versions are included.
    """
    from edgekit.build.manifest import find_record
    from edgekit.inspect import inspect_artifact

    info = inspect_artifact(artifact)
    rec = find_record(artifact)
    if rec:
        for key in ("model", "target", "verification", "quantization", "profile", "budgets", "edgekit_version",
                    "runtimes"):
            info[key] = rec.get(key)
    if as_json:
        emit_json(info)
        return
    click.echo(f"{info['path']}  ({info['format']}, {info['backend']}, {info['precision']})")
    click.echo(f"size: {info['size_bytes']} bytes; sha256 {info['sha256']}")
    if len(info["files"]) > 1:
        click.echo("files: " + ", ".join(f["path"] for f in info["files"]))
    click.echo("inputs:")
    for t in info["inputs"]:
        click.echo(_fmt_tensor(t))
    click.echo("outputs:")
    for t in info["outputs"]:
        click.echo(_fmt_tensor(t))
    if info.get("ops"):
        click.echo("ops: " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()))
    v = info.get("verification")
    if v:
        click.echo(f"verification: max abs error {v.get('max_abs_error')}, cosine {v.get('cosine')}, "
                   f"top-1 agreement {v.get('top1_agreement')} on {v.get('samples')} samples")
    for k, val in (info.get("metadata") or {}).items():
        click.echo(f"{k}: {val}")
