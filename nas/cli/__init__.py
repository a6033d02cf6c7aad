"""The ``nas`` command line.

Every command parses its input fully before doing work. Bad input (an unknown space, a
malformed arch string, a bad ``--param``) prints one line ``error: ...`` naming the field,
what was given and what is allowed, and exits with status 2; ``--debug`` shows the
traceback instead.

One module per command group: :mod:`~nas.cli.spaces` (``spaces``, ``arch``),
:mod:`~nas.cli.latency`, :mod:`~nas.cli.runs` (``search``, ``export``, ``report``) and
:mod:`~nas.cli.bench`; :mod:`~nas.cli.common` holds what they share. The commands parse and
print; the work is in the domain modules they call.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from nas.cli import install
from nas.cli.bench import bench_cmd
from nas.cli.latency import latency
from nas.cli.runs import export_cmd, report_cmd, search_cmd
from nas.cli.spaces import arch, spaces

__all__ = ["cli", "main"]

# TensorFlow's C++ start-up chatter would bury the one-line results and errors (the commands
# import TensorFlow only when they need it, after this).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="edgetpu-nas", prog_name="nas")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Hardware-aware neural architecture search for Keras and the Coral Edge TPU."""
    ctx.obj = {"debug": debug}
    install.check()  # none or two TensorFlow builds: one line and exit 2, before any command
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")


for command in (spaces, arch, latency, search_cmd, export_cmd, report_cmd, bench_cmd):
    cli.add_command(command)
del command


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nas`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="nas", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as e:
        # One line instead of click's usage block; the hint says where the full help is.
        cmd = e.ctx.command_path if e.ctx else "nas"
        click.echo(f"error: {e.format_message()} (see '{cmd} --help')", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except ValueError as e:
        # Library validation errors are user input errors by convention (see docs/design.md).
        if debug:
            raise
        click.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        return 2
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        if debug:
            raise
        from latency_models.errors import LatencyError, MissingHardware  # here: the package loads its predictors

        if isinstance(e, MissingHardware):
            click.echo(f"error: {e}", err=True)
            return 2
        if isinstance(e, LatencyError):  # conversion errors too
            click.echo(f"failed: {str(e).splitlines()[0]}", err=True)
            return 1
        raise
    return 0
