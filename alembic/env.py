"""Alembic environment for the batchgen ledger.

batchgen passes an open connection in ``config.attributes["connection"]`` (migrate on open);
run by hand, the URL comes from BATCHGEN_LEDGER."""

from __future__ import annotations

from alembic import context

from batchgen.schema import metadata

config = context.config


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    from batchgen.ledger import make_engine, ledger_url

    engine = make_engine(ledger_url(None))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
