"""Shared by every command: error -> one line + exit code, JSON output, option helpers."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from edgekit.errors import EdgekitError
from edgekit.json_stdout import json_stream, stdout_reserved_for_json

json_option = click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")


def emit_json(obj: Any) -> None:
    out = json_stream()  # the real stdout, also while stdout_reserved_for_json sends prints to stderr
    out.write(json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n")
    out.flush()


def _default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgekitError into one clear stderr line (and a JSON error object with --json) + its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            with stdout_reserved_for_json(as_json):  # a model's print() must not land before the JSON object
                return fn(*args, **kwargs)
        except EdgekitError as exc:
            click.echo(f"edgekit: error: {exc}", err=True)
            if as_json:
                emit_json({"error": {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}})
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:  # `edgekit devices | head`: the reader left; not an error of ours
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            click.echo(f"edgekit: internal error: {type(exc).__name__}: {exc} (please report this)", err=True)
            if as_json:
                emit_json({"error": {"type": "InternalError", "message": str(exc), "exit_code": 1}})
            sys.exit(1)

    return wrapper
