"""How a command ends: the one place where errors become exit codes.

``Group.invoke`` catches every ``BatchgenError`` a command raises and prints it as one line (or
the list of a manifest's problems) with its documented exit code; an ``OSError`` that escaped a
command is an environment failure (exit 7), a Ctrl-C outside a run's own handling exit 130,
never a traceback. With ``--json`` the failure is also one JSON object on stdout. ``Command``
answers a key given on the command line with where the key comes from. Imports nothing heavy:
``batchgen --help`` loads this module."""

from __future__ import annotations

import json
from typing import Any

import click

from .. import logs
from ..errors import EXIT_BROKEN_PIPE, EXIT_ENVIRONMENT, EXIT_INTERRUPTED, BatchgenError, ManifestError

_JSON = False  # the command was given --json: its errors are JSON on stdout too


def echo_err(msg: str) -> None:
    """A message or progress line: stderr, never mixed with the data on stdout."""
    click.echo(msg, err=True)


def json_mode(_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """Callback of every ``--json`` flag (eager): from then on the command's errors are JSON too."""
    global _JSON
    _JSON = _JSON or value
    return value


def _silence_stdout() -> None:
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (CliRunner's): nothing to flush at exit
        pass


def _json_error(message: str, exit_code: int, problems: list[str]) -> None:
    """With --json every outcome is JSON on stdout: a failure is one object (the exit code is unchanged)."""
    click.echo(json.dumps({"error": message, "exit_code": exit_code, "problems": problems}, ensure_ascii=False))


def _report_error(e: BatchgenError) -> None:
    if _JSON:
        problems = [str(p) for p in e.problems] if isinstance(e, ManifestError) else []
        msg = (f"{e.subject} has {len(e.problems) + e.truncated} problem(s)" if isinstance(e, ManifestError)
               else str(e))
        _json_error(msg, e.exit_code, problems)
    if logs.FORMAT == "json":  # --log-format json: every stderr line is a JSON object
        if isinstance(e, ManifestError):
            echo_err(logs.json_line("error", f"{e.subject} has {len(e.problems) + e.truncated} problem(s)",
                                    event="error", exit_code=e.exit_code, problems=[str(p) for p in e.problems]))
        else:
            echo_err(logs.json_line("error", str(e), event="error", exit_code=e.exit_code))
        return
    if isinstance(e, ManifestError):
        echo_err(f"error: {e.subject} has {len(e.problems) + e.truncated} problem(s):")
        for line in str(e).splitlines():
            echo_err(f"  {line}")
    else:
        echo_err(f"error: {e}")


class Group(click.Group):
    """The one place where errors become exit codes: a ``BatchgenError`` prints its message and
    exits with its ``exit_code``; an ``OSError`` that escaped a command (a folder that cannot be
    created, a full disk) is an environment failure, printed as one line, never a traceback."""

    group_class = type  # `db` and its commands get the same handling

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_class = Command

    def invoke(self, ctx: click.Context) -> Any:
        global _JSON
        _JSON = False
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            if _JSON:  # a usage error of a --json command: JSON too, click's own exit code
                _json_error(e.format_message(), e.exit_code, [])
            raise
        except BatchgenError as e:
            _report_error(e)
            ctx.exit(e.exit_code)
        except BrokenPipeError:
            # The reader of stdout went away (`batchgen export | head`): nothing is wrong
            # with the command, so no "error:" line. Ends as a Unix filter ends when its pipe
            # closes (128 + SIGPIPE), with stdout pointed at /dev/null so that the interpreter's
            # own flush at exit does not raise again.
            _silence_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            echo_err(f"error: {e.strerror or e}{where}")
            ctx.exit(EXIT_ENVIRONMENT)
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, see __main__) outside a run's own handling
            echo_err("interrupted")
            ctx.exit(EXIT_INTERRUPTED)


_KEY_OPTIONS = ("--api-key", "--key", "--token", "--api_key", "--apikey")


class Command(click.Command):
    """A command whose unknown ``--api-key`` is answered with where the key comes from, instead
    of click's "Did you mean '--api-base'?"."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        global _JSON
        # --json seen before parsing: a usage error of the same command line is JSON too
        _JSON = _JSON or ("--json" in args and any(p.name == "as_json" for p in self.params))
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            if e.option_name.split("=")[0].lower() in _KEY_OPTIONS:
                raise click.UsageError(
                    f"{e.option_name}: batchgen takes no key on the command line (other users and the shell history "
                    "would see it); set the environment variable BATCHGEN_API_KEY", ctx) from None
            raise
