"""An artifact never replaces one of the files it was made from.

`edgekit convert m.onnxruntime.onnx -t onnxruntime --name m -o .` (re-converting an earlier artifact in its own
folder) renamed the new artifact over the source model: the user's file was gone. In `edgekit build`, a source
kept in the output folder under an artifact's name was overwritten by every build, which then saw a changed
source and rebuilt, forever. Both refuse instead, naming the file and the way out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from edgekit.errors import UsageError

_ROLES = ("model source", "--weights", "calibration data", "--eval data")


def input_files(source: str | os.PathLike | None, weights: str | os.PathLike | None = None,
                calibration: str | os.PathLike | None = None,
                eval_data: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(role, path) of the given inputs that are existing files (zoo:, pkg.mod:fn and shipped sets are not)."""
    out = []
    for role, spec in zip(_ROLES, (source, weights, calibration, eval_data)):
        if spec and Path(spec).is_file():
            out.append((role, Path(spec)))
    return out


def check_not_inputs(destinations: Iterable[Path], inputs: list[tuple[str, Path]], *, hint: str) -> None:
    """UsageError when a destination is (the same file as) one of the inputs."""
    for dst in destinations:
        if not dst.exists() or dst.is_symlink():  # a rename replaces a link, not the file it points to
            continue
        for role, src in inputs:
            try:
                same = os.path.samefile(dst, src)
            except OSError:
                continue
            if same:
                raise UsageError(f"the artifact {dst.name} would replace the {role} {src} it is made from", hint=hint)
