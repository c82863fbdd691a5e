"""The ``sta-deploy`` command group: one subcommand per module, imported lazily.

Errors are one line on stderr: exit code 2 for usage errors, 1 for failures.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading

import click

from .._version import __version__

# name -> (module, attribute); modules are imported only when their command runs or --help lists them.
COMMANDS = {
    "models": ("sta_deploy.cli.models_cmd", "models"),
    "flops": ("sta_deploy.cli.flops_cmd", "flops"),
    "export": ("sta_deploy.cli.export_cmd", "export"),
    "validate": ("sta_deploy.cli.validate_cmd", "validate"),
    "bench": ("sta_deploy.cli.bench_cmd", "bench"),
    "build": ("sta_deploy.cli.build_cmd", "build"),
    "quantize": ("sta_deploy.cli.quantize_cmd", "quantize"),
    "predict": ("sta_deploy.cli.predict_cmd", "predict"),
    "visualize": ("sta_deploy.cli.visualize_cmd", "visualize"),
    "evaluate": ("sta_deploy.cli.evaluate_cmd", "evaluate"),
    "tune": ("sta_deploy.cli.tune_cmd", "tune"),
    "triton-repo": ("sta_deploy.cli.triton_repo_cmd", "triton_repo"),
    "serve": ("sta_deploy.cli.serve_cmd", "serve"),
    "protocol": ("sta_deploy.cli.protocol_cmd", "protocol"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sta-deploy")
def cli():
    """Prune video transformers with STA (Ding et al., ICCV 2023) and deploy them: ONNX, TensorRT, benchmarks."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


TERMINATED = "sta-deploy: error: terminated (SIGTERM); unfinished outputs were removed"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: ``finally`` blocks remove partial outputs and release locks."""


@contextlib.contextmanager
def _sigterm_raises():
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Console entry point; returns the process exit code."""
    from .. import _progress

    with _sigterm_raises(), _progress.enabled():
        return _run(argv)


def _invoke(argv) -> None:
    from .. import _progress

    try:
        cli.main(args=argv, prog_name="sta-deploy", standalone_mode=False)
    except BaseException:
        _progress.abandon()  # clear a terminal's half-drawn step line before the error line
        raise


def _run(argv) -> int:
    try:
        _invoke(argv)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.exceptions.Abort as error:
        # click turns Ctrl-C (and our SIGTERM, a KeyboardInterrupt) into Abort: keep the signal's exit code
        if isinstance(error.__cause__, Terminated):
            click.echo(TERMINATED, err=True)
            return 143
        if isinstance(error.__cause__, KeyboardInterrupt):
            click.echo("sta-deploy: error: interrupted", err=True)
            return 130
        click.echo("sta-deploy: error: aborted", err=True)
        return 1
    except click.exceptions.NoArgsIsHelpError as error:
        # Bare `sta-deploy` (or a group without a subcommand): show the help, not an error line.
        click.echo(error.ctx.get_help() if error.ctx is not None else cli.get_help(click.Context(cli)))
        return 0
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "sta-deploy"
        click.echo(f"sta-deploy: error: {_one_line(error.format_message())} (see '{command} --help')", err=True)
        return 2
    except click.ClickException as error:
        click.echo(f"sta-deploy: error: {_one_line(error.format_message())}", err=True)
        return error.exit_code
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        click.echo(f"sta-deploy: error: {_one_line(error)}", err=True)
        return 1
    except Terminated:
        click.echo(TERMINATED, err=True)
        return 143
    except KeyboardInterrupt:
        click.echo("sta-deploy: error: interrupted", err=True)
        return 130
    except Exception as error:  # a bug or an error type nobody mapped: still one line, never a traceback
        if os.environ.get("STA_DEPLOY_DEBUG"):
            raise
        click.echo(
            f"sta-deploy: error: unexpected {type(error).__name__}: {_one_line(error)[:300]} "
            "(run with STA_DEPLOY_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        return 1
    return 0


def entry_point():  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())
