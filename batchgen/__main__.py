"""``python -m batchgen`` and the ``batchgen`` command.

A signal at any moment of a command's life ends in a documented exit code, never a traceback:
SIGTERM is made to behave like Ctrl-C before the command line's (slow) imports (and Ctrl-C is
Ctrl-C even when the process was started with SIGINT ignored), and an
interrupt during them ends in one line and exit 130. ``batchgen run`` handles both itself
while it runs (signals.py). Once the command is over, a signal during the process's teardown
(threads joined, files closed) ends it at once with the command's own exit code, and one while
Python unloads its modules is ignored: there is nothing left to stop, and Python's default
would turn it into a KeyboardInterrupt traceback or a death by SIGINT after the summary."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Any, NoReturn

from batchgen.errors import EXIT_INTERRUPTED  # (errors imports nothing heavy)


def main() -> None:
    # Ctrl-C as Python's default even when the process was started with SIGINT ignored: a
    # shell without job control (a cron script's `batchgen run … &`, a CI step) starts
    # background commands so, and Python then keeps the ignore. The run's own handler
    # (signals.py) is installed regardless, so a SIGINT before it was silently dropped and the
    # run went on to the end (exit 0) while one after it stopped the run: any moment must do.
    # Inside the try: a signal landing while `signal.signal` itself runs (its Python half, once
    # the handler is in) raised the KeyboardInterrupt outside it, as a traceback.
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        # Registered first, so it runs last of the exit handlers: from there on Python unloads its
        # modules, and a handler written in Python would be reset to the default (death by SIGINT).
        atexit.register(_ignore_signals)
        from batchgen.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        _interrupted_exit()
    try:
        cli_main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        _exit_on_signal(code)
        if code == EXIT_INTERRUPTED:
            _interrupted_exit()
        raise
    except KeyboardInterrupt:  # between the command's own handling and here
        _exit_on_signal(EXIT_INTERRUPTED)
        sys.stderr.write("interrupted\n")
        _interrupted_exit()


def _interrupted_exit() -> NoReturn:
    """Exit 130 after a caught KeyboardInterrupt, without returning through the interpreter.

    CPython marks a KeyboardInterrupt as unhandled when it leaves code run from a string
    (``exec``/``eval`` of source: dataclasses, namedtuple and friends build their methods so,
    often during imports) even if an outer ``except`` catches it; under ``python -m`` the
    interpreter then ends by killing itself with SIGINT once ``sys.exit(130)`` returns through
    it (seen: a SIGTERM 0.3 s into ``python -m batchgen run`` died by SIGINT after printing
    "interrupted"). A nightly wrapper must see 130, the documented code, so the logs and
    streams are flushed here and the process ends at once: nothing else is open by then."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    _flush()
    os._exit(EXIT_INTERRUPTED)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _ignore_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _exit_on_signal(code: int) -> None:
    def now(_signum: int, _frame: Any) -> None:
        _flush()
        os._exit(code)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, now)


if __name__ == "__main__":
    main()
