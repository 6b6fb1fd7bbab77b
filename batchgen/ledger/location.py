"""Where a ledger is, as the command line and the environment name it: ``ledger_url``
(``--ledger``, BATCHGEN_LEDGER, the default file), ``ledger_named`` and ``ledger_file``. Imports
nothing but the standard library, so a command can tell a SQLite file from a database server
without loading SQLAlchemy (``status`` reads a SQLite file with the standard library alone)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_LEDGER = "batchgen.db"
DEFAULT_SIM_LEDGER = "batchgen-sim.db"  # --simulate and its placeholder videos never share the real ledger


class DefaultLedger(str):
    """A default ledger file (``--simulate``'s ./batchgen-sim.db) passed on as a value: still the
    default, not a named ledger, so a missing one is planned against as "never run" like a missing
    ./batchgen.db, where a ledger named by ``--ledger`` or BATCHGEN_LEDGER must exist."""


def named_ledger(value: str | None, *, simulated: bool = False) -> str:
    """The ledger as it was named: ``value``, else BATCHGEN_LEDGER, else the default file."""
    default = DEFAULT_SIM_LEDGER if simulated else DEFAULT_LEDGER
    return value or os.environ.get("BATCHGEN_LEDGER") or DefaultLedger(default)


def ledger_url(value: str | None, *, simulated: bool = False) -> str:
    """The ledger to use: ``value`` (``--ledger``), else the environment variable
    BATCHGEN_LEDGER (read here and nowhere else), else ``./batchgen.db`` (``./batchgen-sim.db``
    for runs against the embedded simulator). A file path or a SQLAlchemy URL."""
    value = named_ledger(value, simulated=simulated)
    if "://" in value:
        return value
    return "sqlite:///" + str(Path(value).expanduser().absolute())


def ledger_file(value: str | None, *, simulated: bool = False) -> Path | None:
    """The SQLite file of a ledger named as a plain file path (``value``, else BATCHGEN_LEDGER,
    else the default), as ``ledger_url`` makes it absolute; None when it is named by a URL (a
    ``sqlite:///`` one included: SQLAlchemy decides what its path is) — or, like the URL would
    be, when the path holds a ``?`` or a ``%`` (SQLAlchemy reads them as a query and escapes)."""
    value = named_ledger(value, simulated=simulated)
    if "://" in value or "?" in value or "%" in value:
        return None
    return Path(value).expanduser().absolute()


def ledger_named(value: str | None) -> bool:
    """Whether a ledger was named — ``--ledger`` or BATCHGEN_LEDGER — rather than left to the
    default ``./batchgen.db``. One rule for both ways of naming it: a named ledger that does not
    exist is an error for every command but ``run`` (which creates it); only the default may be
    absent, for ``plan`` and ``diff`` (planning before the first run)."""
    return bool((value and not isinstance(value, DefaultLedger)) or os.environ.get("BATCHGEN_LEDGER"))
