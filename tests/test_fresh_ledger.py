"""A new SQLite ledger gets the captured head schema (batchgen/ledger/sqlitehead.py) instead of
running every migration: it must be the very ledger the migrations make, statement for statement."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from batchgen.ledger import sqlitehead
from batchgen.ledger.database import Database
from batchgen.ledger.engine import make_engine, upgrade
from batchgen.ledger.revisions import schema_revisions

# What a ledger's header and connection settings say, besides its statements and rows.
_PRAGMAS = ("page_size", "encoding", "auto_vacuum", "journal_mode")


def _items(create_table: str) -> tuple[str, list[str], list[str], str]:
    """A CREATE TABLE statement cut at its top-level commas: (head, columns in order, table
    constraints sorted, tail). The migrations themselves leave a rebuilt table's constraints in an
    order that changes from run to run (alembic's batch mode keeps them in a set): two migrated
    ledgers differ so, and SQLite means the same by either order."""
    start, end = create_table.index("("), create_table.rindex(")")
    parts, depth, quote, item = [], 0, "", ""
    for ch in create_table[start + 1:end]:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(item.strip())
            item = ""
            continue
        item += ch
    parts.append(item.strip())
    constraints = sorted(p for p in parts if p.startswith("CONSTRAINT"))
    return create_table[:start], [p for p in parts if not p.startswith("CONSTRAINT")], constraints, create_table[end:]


def _picture(path: Path) -> dict[str, object]:
    """A ledger as SQLite sees it: each table's statement (constraints in a fixed order), its
    columns in order, its indexes by what they index, its foreign keys; every other statement
    (indexes); every row of every table; the header's pragmas."""
    c = sqlite3.connect(path)
    try:
        master = c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        tables = sorted(name for kind, name, _, _ in master if kind == "table")

        def indexes(t: str) -> list[object]:
            return sorted((unique, origin, partial, c.execute(f"PRAGMA index_xinfo('{name}')").fetchall())
                          for _, name, unique, origin, partial in c.execute(f"PRAGMA index_list('{t}')"))

        return {
            "tables": {name: _items(sql) for kind, name, _, sql in master if kind == "table"},
            "other": sorted((kind, name, tbl, sql) for kind, name, tbl, sql in master
                            if kind != "table" and not name.startswith("sqlite_autoindex_")),
            "columns": {t: c.execute(f"PRAGMA table_xinfo('{t}')").fetchall() for t in tables},
            "indexes": {t: indexes(t) for t in tables},
            "foreign_keys": {t: sorted(c.execute(f"PRAGMA foreign_key_list('{t}')").fetchall()) for t in tables},
            "rows": {t: sorted(c.execute(f"SELECT * FROM \"{t}\"").fetchall()) for t in tables},
            "pragmas": {p: c.execute(f"PRAGMA {p}").fetchall() for p in _PRAGMAS},
        }
    finally:
        c.close()


def _migrated(path: Path) -> Path:
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert upgrade(engine)  # every migration ran
    finally:
        engine.dispose()
    return path


def _opened_new(path: Path) -> Path:
    Database(str(path)).engine.dispose()
    return path


def test_a_new_ledger_is_exactly_the_migrated_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    migrated = _picture(_migrated(tmp_path / "migrated.db"))
    # Opened as every command that creates a ledger opens it, with the migrations made to fail:
    # the capture alone made it.
    monkeypatch.setattr("batchgen.ledger.database.upgrade", lambda *a, **k: pytest.fail("migrated"))
    captured = _picture(_opened_new(tmp_path / "new.db"))
    assert captured == migrated
    assert len(migrated["tables"]) >= 9 and migrated["indexes"]["jobs"]  # the picture does see the schema
    assert captured["rows"]["alembic_version"] == [(schema_revisions()[0],)]


def test_the_shipped_capture_is_of_this_batchgens_head() -> None:
    """After a new migration: `python -m batchgen.ledger.sqlitehead` captures again (until then every
    new ledger is migrated, slower but right: the next test)."""
    shipped = json.loads(sqlitehead.CAPTURE.read_text(encoding="utf-8"))
    migrated = sqlitehead.migrated_capture()
    canonical = [_items(s) if s.startswith("CREATE TABLE") else s for s in migrated["statements"]]
    assert sorted(map(str, canonical)) == sorted(
        str(_items(s) if s.startswith("CREATE TABLE") else s) for s in shipped["statements"]), (
        "batchgen/ledger/sqlite_head.json is not what the migrations make: run `python -m batchgen.ledger.sqlitehead`")
    assert shipped["revision"] == migrated["revision"] == schema_revisions()[0]


def test_a_capture_of_another_revision_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = {**sqlitehead._capture(), "revision": "0001"}
    monkeypatch.setattr(sqlitehead, "_capture", lambda: stale)
    migrated = []
    real = upgrade

    def counting(engine, **kw):  # type: ignore[no-untyped-def]
        migrated.append(engine.url)
        return real(engine, **kw)

    monkeypatch.setattr("batchgen.ledger.database.upgrade", counting)
    new = _picture(_opened_new(tmp_path / "new.db"))
    assert len(migrated) == 1
    assert new == _picture(_migrated(tmp_path / "migrated.db"))


def test_a_file_that_is_not_empty_is_never_given_the_capture(tmp_path: Path) -> None:
    """Only an empty file is made at once; a database holding anything (here a view, which is no
    table) is left to the migrations and the checks around them, as before."""
    path = tmp_path / "view.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE VIEW v AS SELECT 1")
    c.close()
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert sqlitehead.create(engine) is False
    finally:
        engine.dispose()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT name FROM sqlite_master").fetchall() == [("v",)]
    c.close()
