"""The `edgekit` command. Thin: each subcommand is one small module in edgekit/commands/,
registered in COMMANDS and imported only when it runs (so `edgekit build` on a warm cache
never imports torch)."""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EXIT_CODES

# name -> (module:attribute, one-line help). Adding a command is one entry here plus one module.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("edgekit.commands.convert:convert", "Convert a model into verified artifacts for one or more targets."),
    "build": ("edgekit.commands.build:build", "Build every model of edgekit.toml (cached, reproducible)."),
    "profile": ("edgekit.commands.profile:profile", "Measure an artifact's latency on a device, per model and per layer."),
    "inspect": ("edgekit.commands.inspect:inspect", "Print an artifact's inputs, outputs, quantization and metadata."),
    "distill": ("edgekit.commands.distill:distill", "Prune and/or distill a torch model (teacher = original)."),
    "zoo": ("edgekit.commands.zoo:zoo", "List the built-in models (zoo:NAME)."),
    "targets": ("edgekit.commands.targets:targets", "List the targets (targets/*.toml)."),
    "devices": ("edgekit.commands.devices:devices", "List the device profiles (devices/*.toml)."),
    "cache": ("edgekit.commands.cache:cache", "Show or clean the build cache."),
}


def _terminate_like_ctrl_c() -> Any:
    """SIGTERM (a build system cancelling the step) cleans up as Ctrl-C does; Python's default would die on
    the spot and leave .edgekit-tmp-* folders in the output folder. Returns the previous handler."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    try:
        return signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _json_error(type_: str, message: str, exit_code: int) -> None:
    from edgekit.commands._common import emit_json

    emit_json({"error": {"type": type_, "message": message, "exit_code": exit_code}})


_EPILOG = "Exit codes:\n\n" + "\n\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        mod_name, attr = target.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                return None  # command not built yet
            raise
        cmd = getattr(mod, attr)
        for c in [cmd, *getattr(cmd, "commands", {}).values()]:  # every command's --help lists the exit codes
            c.epilog = c.epilog or _EPILOG
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        """Errors click raises itself (a bad option or value, an unknown command) and Ctrl-C keep the
        contract: one error object on stdout under --json, and Ctrl-C exits 130, SIGTERM 143 (click's "Aborted!"
        exits 1, which means an internal error here). Cleanup already ran: the pipeline removes its temp folder."""
        as_json = "--json" in ctx.args
        previous = _terminate_like_ctrl_c()
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if not as_json:
                raise
            exc.show()
            _json_error("UsageError", exc.format_message(), exc.exit_code)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = exc.args[0] if exc.args and isinstance(exc.args[0], int) else signal.SIGINT
            name = signal.Signals(signum).name
            click.echo(f"edgekit: interrupted ({name})", err=True)
            if as_json:
                _json_error("Interrupted", f"interrupted ({name}); nothing was written", 128 + signum)
            sys.exit(128 + signum)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: from a trained PyTorch or ONNX model to small, fast, verified artifacts for
    ONNX Runtime, TFLite/LiteRT and OpenVINO, with measured latency on the device.

    \b
    Quick start:
      edgekit convert zoo:mnist_cnn --target onnxruntime --target openvino -o out/
      edgekit profile out/mnist_cnn.onnxruntime.onnx --json
    """


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover
        click.echo("edgekit: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
