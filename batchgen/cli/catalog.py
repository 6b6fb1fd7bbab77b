"""``batchgen models``: the model catalog batchgen validates against. Reads the shipped
``models.yaml`` (and a ``--models`` file) only: no ledger, no network, so it loads neither
SQLAlchemy nor aiohttp."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from .handler import Command
from .options import format_options, models_option
from .printers import print_json, print_models


@click.command(cls=Command)
@click.argument("names", nargs=-1)
@models_option
@format_options
def models(names: tuple[str, ...], models_file: Path | None, as_json: bool) -> None:
    """The model catalog batchgen validates against: each model's fields (type, default,
    allowed values), rules, output length and audio. NAMES: only these models (a prefix such
    as `veo-3.1` matches the family).

    Entries come from the shipped models.yaml; --models FILE (or a manifest's `models:`) adds
    or replaces entries, so a model the provider changes is usable without a new release."""
    from .. import operations

    docs = operations.models(operations.catalog(models_file))
    if names:
        docs = [d for d in docs if any(d["model"] == n or d["model"].startswith(n) for n in names)]
        if not docs:
            raise UsageError(f"no model in the catalog matches {', '.join(names)} (`batchgen models` lists them)")
    if as_json:
        print_json(docs)
        return
    print_models(docs)
