"""Command line: click only, over the library (``runner`` runs manifests, ``operations`` does
everything around runs). Data goes to stdout, progress and messages to stderr. Every
``BatchgenError`` a command raises ends in one handler (``handler.Group.invoke``) as one line
(or the list of a manifest's problems) and its documented exit code. Nothing in ``batchgen``
imports this package.

One module per group of commands — ``run`` (the run), ``reads`` (plan, diff, status, export,
report, verify), ``care`` (resolve, recover, deliver, stop, cancel, db), ``catalog`` (models),
``sim`` (simulator, demo), ``review`` (the morning review) — over ``options`` (shared options), ``handler`` (errors → exit
codes) and ``printers`` (how results read). This module only assembles the ``batchgen`` group.
Command modules import click and batchgen's light modules only; everything heavy loads inside
the command that needs it, so ``batchgen --help`` and ``batchgen models`` start at once."""

from __future__ import annotations

import click

from .. import __version__, logs
from .care import cancel, db, deliver, recover, resolve, stop
from .catalog import models
from .handler import Group
from .reads import diff, export, plan, report, status, verify
from .review import retake, review
from .run import EXIT_CODES_HELP, run
from .sim import demo, simulator

__all__ = ["EXIT_CODES_HELP", "cli", "main"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchgen")
@click.option("-v", "--verbose", is_flag=True,
              help="Debug logs on stderr, every per-job event included (what --log-file records).")
def cli(verbose: bool) -> None:
    """batchgen: run manifests of paid video generations (foxapi grok-imagine) crash-safely.

    Every state change is recorded in a ledger before and after each paid request, so an
    interrupted run resumes without paying twice. The API key is read from the environment
    variable BATCHGEN_API_KEY only. NO_COLOR (any value) turns every colour and style off."""
    logs.VERBOSE = verbose
    logs.setup()  # plain text on stderr unless a command asks for more (run --log-format json)


for _command in (plan, diff, models, run, export, resolve, status, verify, deliver, recover, report, review, retake, stop,
                 cancel, db, simulator, demo):
    cli.add_command(_command)


def main() -> None:
    cli(standalone_mode=True)
