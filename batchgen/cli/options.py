"""Options several commands share, each defined once (same name, type, help everywhere), and
the small helpers their values go through (the ledger a read command means, the price table).
Imports nothing heavy: the ledger and the price table load inside the functions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import UsageError
from ..jobs import DEFAULT_MAX_ATTEMPTS
from .handler import echo_err, json_mode

if TYPE_CHECKING:
    from ..cost import PriceTable

F = TypeVar("F", bound=Callable[..., Any])


def ledger_option(f: F) -> F:
    return click.option("--ledger", default=None, metavar="PATH|URL",
                        help="Ledger: a SQLite file path or a SQLAlchemy URL (env BATCHGEN_LEDGER; "
                             "default ./batchgen.db).")(f)


def read_ledger_options(f: F) -> F:
    """``--ledger`` and ``--simulate`` for every command but ``run`` (whose --simulate also starts the
    simulator): ``--simulate`` means the ledger ``run --simulate`` writes (./batchgen-sim.db) by
    default. The command receives one resolved ``ledger``; the URL is checked (postgres:// hint)
    and a missing ./batchgen.db beside an existing ./batchgen-sim.db is named, not taken as empty."""
    @functools.wraps(f)
    def wrapper(*args: Any, ledger: str | None = None, simulate: bool = False, **kwargs: Any) -> Any:
        return f(*args, ledger=pick_ledger(ledger, simulate), **kwargs)

    opt = click.option("--simulate", is_flag=True,
                       help="Default to the ledger `run --simulate` writes (./batchgen-sim.db) instead of ./batchgen.db.")
    return ledger_option(opt(wrapper))  # type: ignore[return-value]


def pick_ledger(ledger: str | None, simulate: bool) -> str | None:
    """The ledger a read command means, from ``--ledger``/``--simulate`` (``None``: env or default)."""
    from ..errors import LedgerMissing
    from ..ledger import DEFAULT_LEDGER, DEFAULT_SIM_LEDGER, ledger_file, ledger_named, ledger_url, named_ledger

    if simulate and ledger is not None:
        raise UsageError("--simulate and --ledger both name a ledger: give one of them")
    if simulate:
        ledger = named_ledger(None, simulated=True)
    if ledger_file(ledger) is None:  # a URL: SQLAlchemy checks it (a file path needs no check, nor SQLAlchemy)
        from ..ledger import check_url

        if problem := check_url(ledger_url(ledger)):
            raise UsageError(problem)
    if (not simulate and not ledger_named(ledger) and not Path(DEFAULT_LEDGER).exists()
            and Path(DEFAULT_SIM_LEDGER).is_file()):
        raise LedgerMissing(f"no ledger at ./{DEFAULT_LEDGER}, but ./{DEFAULT_SIM_LEDGER} (written by `run --simulate`) "
                            f"is here: add --simulate, or --ledger {DEFAULT_SIM_LEDGER}")
    return ledger


def prices_option(f: F) -> F:
    # Not click's exists/dir checks: batchgen's reader says what is wrong (FIFO, device, loop…).
    return click.option("--prices", type=click.Path(path_type=Path), default=None,
                        help="Price table overriding the shipped placeholder (YAML, see batchgen/prices.yaml).")(f)


def format_options(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=json_mode,
                        help="Machine-readable JSON on stdout (errors too).")(f)


def models_option(f: F) -> F:
    return click.option("--models", "models_file", type=click.Path(path_type=Path), default=None,
                        help="A models file (YAML, the shape of the shipped models.yaml; docs/models.md: Adding a model) adding or "
                             "replacing catalog entries; a manifest's `models:` key adds more.")(f)


def retry_options(f: F) -> F:
    """``--retry-failed`` and ``--max-attempts``, one definition for ``run`` (which resubmits) and
    ``plan`` (which counts what that run would resubmit, by the same rule: ``retry_verdict``)."""
    f = click.option("--max-attempts", type=click.IntRange(1, 20), default=DEFAULT_MAX_ATTEMPTS, show_default=True,
                     help="Creates per job at most, counting the first (with --retry-failed).")(f)
    return click.option("--retry-failed", is_flag=True,
                        help="Jobs whose task failed for a retryable reason (timeout, generation_failed, "
                             "model_unavailable…) are resubmitted, up to --max-attempts creates per job: each a new "
                             "paid task (`plan --retry-failed` counts them, with their credits and time).")(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="No confirmation line on stderr (errors still appear).")(f)


def done(quiet: bool, msg: str) -> None:
    """A command's confirmation line on stderr, unless --quiet."""
    if not quiet:
        echo_err(msg)


def load_prices(path: Path | None) -> PriceTable:
    """The price table: ``--prices`` or the shipped placeholder."""
    from ..cost import PriceTable

    return PriceTable.load(path)


class RpmType(click.ParamType["float | str"]):
    """``--rpm``: a number of requests a minute (0: unlimited) or ``auto``."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if isinstance(value, (int, float)) or str(value).strip().lower() != "auto":
            try:
                n = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
            if n < 0 or n != n:
                self.fail(f"{value!r} is negative", param, ctx)
            return n
        return "auto"
