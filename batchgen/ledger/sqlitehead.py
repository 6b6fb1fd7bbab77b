"""A new SQLite ledger made at once in the schema the migrations leave, instead of through them.

Running the 17 migrations on an empty file costs every new ledger about a third of a second of
CPU (alembic imported, each migration's module loaded, 0009's rebuild of the jobs table): each
first `batchgen run` of a project pays it, and the test suite paid it some hundred times. What the
migrations leave is captured in ``sqlite_head.json`` beside this module: the revision, and the
``CREATE`` statements exactly as SQLite keeps them in ``sqlite_master`` (a column added by a
migration sits where ``ALTER TABLE`` put it, so ``create_all`` of ``schema.py`` would not be the
same table). ``create`` runs those statements and stamps the revision in one transaction.

The capture is used only when its revision is this batchgen's head (``schema_revisions``, read
from the migration files): a migration added without capturing again is never skipped, the
migrations simply run. tests/test_fresh_ledger.py proves a captured ledger identical to a
migrated one (``iterdump``: every statement and row, and the header's pragmas) and the capture
current; ``python -m batchgen.ledger.sqlitehead`` captures again after a new migration.
PostgreSQL ledgers are always migrated (made once per fleet, by the first worker)."""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from .revisions import schema_revisions

CAPTURE = Path(__file__).with_name("sqlite_head.json")


@functools.lru_cache(maxsize=1)
def _capture() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CAPTURE.read_text(encoding="utf-8"))
    return loaded


def create(engine: Engine) -> bool:
    """Give the empty SQLite ledger behind ``engine`` the head schema from the capture; False
    (nothing done) when the capture is not of this batchgen's head: then it must be migrated."""
    capture = _capture()
    if engine.dialect.name != "sqlite" or capture["revision"] != schema_revisions()[0]:
        return False
    with engine.begin() as c:  # all or nothing: a crash leaves an empty file, made again next time
        if c.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return False  # not empty after all (a view, say): the migrations decide what to do
        for statement in capture["statements"]:
            c.exec_driver_sql(statement)
        c.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (capture["revision"],))
    return True


def capture_of(path: Path) -> dict[str, Any]:
    """The schema of the SQLite file at ``path`` (a freshly migrated ledger), as ``create`` runs it:
    its revision and the statements of ``sqlite_master`` in the order SQLite made them."""
    with sqlite3.connect(path) as c:
        statements = [row[0] for row in c.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")]
        (revision,), = c.execute("SELECT version_num FROM alembic_version").fetchall()
    c.close()
    return {"revision": revision, "statements": statements}


def migrated_capture() -> dict[str, Any]:
    """The capture of a new ledger made by running every migration (what the shipped one must be)."""
    from .engine import make_engine, upgrade

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "head.db"
        engine = make_engine(f"sqlite:///{path}")
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        return capture_of(path)


def main() -> int:
    """Capture again (after adding a migration): writes ``sqlite_head.json``."""
    CAPTURE.write_text(json.dumps(migrated_capture(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {CAPTURE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
