"""Ledgers that are not ours (issue 19): commands that only read (plan, diff, status, export,
report) open the ledger read-only and never create, migrate or switch its journal mode; another
application's database is "not a batchgen ledger" (exit 2) and left byte for byte as it was;
an older ledger says to run `batchgen db upgrade`; only `run` creates a ledger. Through the CLI,
on real SQLite files (and PostgreSQL where the server is up)."""

from __future__ import annotations

from test_environment_errors import one_line_error

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from batchgen.ledger import migrations_dir, make_engine, schema_revisions
from conftest import run_args, run_cli, write_csv_manifest

MANIFEST = "defaults: {model: grok-imagine-text-to-video, prompt: a lighthouse}\njobs:\n  - {name: a, duration: 4}\n"


def _read_only_commands(tmp_path: Path, ledger: Path | str) -> list[list[str]]:
    m = tmp_path / "m.yaml"
    m.write_text(MANIFEST)
    return [["status"], ["export"], ["export", "--json"], ["report", "-o", str(tmp_path / "r.html")],
            ["plan", str(m)], ["plan", str(m), "--explain"], ["plan", str(m), "--retry-failed", "--max-attempts", "5", "--explain"],
            ["diff", str(m)], ["plan", str(m), "--diff"]]


def _every_command(tmp_path: Path) -> list[list[str]]:
    return [*_read_only_commands(tmp_path, ""), ["verify"], ["db", "upgrade"], ["stop"], ["cancel", "--run", "1"],
            ["resolve", "abcdef", "--abandon"]]


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _error(r, code: int, *needles: str) -> None:
    one_line_error(r, code, *needles)


def test_another_applications_database_is_refused_and_left_unchanged(tmp_path):
    folder = tmp_path / "firefox"
    folder.mkdir()
    places = folder / "places.sqlite"
    con = sqlite3.connect(places)
    con.execute("PRAGMA journal_mode=DELETE")  # a rollback-journal file: WAL would be a change
    con.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    con.execute("INSERT INTO moz_places (url) VALUES ('https://example.com')")
    con.commit()
    con.close()
    before = _snapshot(folder)
    for cmd in _every_command(tmp_path):
        _error(run_cli([*cmd, "--ledger", str(places)]), 2, "not a batchgen ledger", "moz_places", str(places))
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    _error(run_cli(["run", str(m), "--simulate", "--ledger", str(places), "--out", str(tmp_path / "out")]), 2,
           "not a batchgen ledger")
    assert _snapshot(folder) == before  # no new table, no -wal/-shm/.lock file, same bytes
    con = sqlite3.connect(places)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()


def test_a_wal_database_of_another_application_gets_no_side_files(tmp_path):
    folder = tmp_path / "app"
    folder.mkdir()
    db = folder / "app.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE things (x)")
    con.commit()
    con.close()
    before = _snapshot(folder)
    for cmd in _read_only_commands(tmp_path, db):
        _error(run_cli([*cmd, "--ledger", str(db)]), 2, "not a batchgen ledger")
    assert _snapshot(folder) == before


def test_an_empty_file_is_refused_by_every_command_run_included(sim, tmp_path):
    """An empty file is an empty database to SQLite, but never a ledger batchgen made (its first
    connection writes the header): a ledger that lost everything, or a file made by hand. A run
    that started a new ledger in it would submit every job again, paid twice where the lost
    ledger held their task ids (issue 28): every command refuses it (exit 7), unchanged."""
    empty = tmp_path / "l.db"
    empty.touch()
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    for args in [*([*cmd, "--ledger", str(empty)] for cmd in _every_command(tmp_path)),
                 run_args(sim, m, tmp_path, "-q")]:  # run_args names tmp_path/l.db too
        _error(run_cli(args), 7, f"ledger {empty} is empty (0 bytes)", "restore it from a backup", "delete it")
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("l.db")) == ["l.db"]
    assert sim.truth()["creates"] == []
    empty.unlink()  # what the line says to do when the file was made by hand
    assert run_cli(run_args(sim, m, tmp_path, "-q")).exit_code == 0


def test_read_only_commands_never_change_a_ledger(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    assert run_cli(run_args(sim, m, tmp_path, "-q")).exit_code == 0
    ledger = tmp_path / "l.db"
    digest = hashlib.sha256(ledger.read_bytes()).hexdigest()
    assert _sqlite_files(tmp_path) == ["l.db"]  # the run's last connection closed: its log went with it
    for cmd in _read_only_commands(tmp_path, ledger):
        r = run_cli([*cmd, "--ledger", str(ledger)])
        assert r.exit_code == 0, (cmd, r.output)
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == digest
    # ... and no reader left SQLite's -wal/-shm beside it (a mode=ro reader cannot remove them).
    assert _sqlite_files(tmp_path) == ["l.db"]
    doc = json.loads(run_cli(["status", "--ledger", str(ledger), "--json"]).stdout)
    assert [r["status"] for r in doc["runs"]] == ["finished"]


def _sqlite_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("l.db") and not p.name.startswith("l.db."))


def test_readers_of_a_ledger_whose_log_holds_frames_change_neither_file(sim, tmp_path):
    # A run that died leaves committed frames in its -wal: a reader reads them (mode=ro) and
    # never copies them into the file (the next run does, after checking the log is its own).
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    assert run_cli(run_args(sim, m, tmp_path, "-q")).exit_code == 0
    ledger = tmp_path / "l.db"
    con = sqlite3.connect(ledger, isolation_level=None)
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("UPDATE jobs SET polls = polls + 1")
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for name in ("l.db", "l.db-wal"):  # copied while open: what a crash leaves
        (crashed / name).write_bytes((tmp_path / name).read_bytes())
    con.close()
    before = {n: hashlib.sha256((crashed / n).read_bytes()).hexdigest() for n in ("l.db", "l.db-wal")}
    assert (crashed / "l.db-wal").stat().st_size > 0
    for cmd in _read_only_commands(tmp_path, crashed / "l.db"):
        r = run_cli([*cmd, "--ledger", str(crashed / "l.db")])
        assert r.exit_code == 0, (cmd, r.output)
    assert {n: hashlib.sha256((crashed / n).read_bytes()).hexdigest() for n in ("l.db", "l.db-wal")} == before


def test_the_demo_leaves_the_ledger_alone_in_its_folder(tmp_path):
    # Its export and report read the ledger after the run: they left SQLite's -wal and -shm
    # beside it (a mode=ro connection cannot remove them when it closes last).
    m = tmp_path / "m.yaml"
    m.write_text(MANIFEST)
    r = run_cli(["demo", "-o", str(tmp_path / "d"), "--manifest", str(m)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir() if p.name.startswith("batchgen.db")) == [
        "batchgen.db", "batchgen.db.lock", "batchgen.db.sim.jsonl"]


def test_a_ledger_named_but_missing_is_an_error_for_every_command_but_run(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "l.db"
    for cmd in [*_every_command(tmp_path), ["deliver"], ["recover"]]:
        _error(run_cli([*cmd, "--ledger", str(missing)]), 2, "no ledger at", str(missing))
        # Named through the environment (the cron recipe's way): one rule for both (issue 28)
        _error(run_cli(cmd, BATCHGEN_LEDGER=str(missing)), 2, "no ledger at", str(missing))
    assert not (tmp_path / "nowhere").exists()
    # Planning before the first run: with no ledger named, a missing default ./batchgen.db is "never run".
    monkeypatch.delenv("BATCHGEN_LEDGER", raising=False)
    monkeypatch.chdir(tmp_path)
    m = tmp_path / "m.yaml"
    r = run_cli(["diff", str(m), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["last_run"] is None
    r = run_cli(["plan", str(m), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["states"]["new"] == 1
    assert not (tmp_path / "batchgen.db").exists()


def _old_ledger(path: Path, revision: str) -> None:
    engine = make_engine(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as c:
        cfg.attributes["connection"] = c
        command.upgrade(cfg, revision)
    engine.dispose()


def test_an_older_ledger_is_left_to_db_upgrade(tmp_path):
    old = tmp_path / "old.db"
    _old_ledger(old, "0003")
    digest = hashlib.sha256(old.read_bytes()).hexdigest()
    for cmd in [*_read_only_commands(tmp_path, old), ["verify"]]:
        _error(run_cli([*cmd, "--ledger", str(old)]), 2, "older batchgen", "0003", "batchgen db upgrade")
    assert hashlib.sha256(old.read_bytes()).hexdigest() == digest
    r = run_cli(["db", "upgrade", "--ledger", str(old)])
    assert r.exit_code == 0, r.output
    head = schema_revisions()[0]
    assert f"ledger {old} upgraded from schema 0003 to {head}" in r.output  # says what it did
    again = run_cli(["db", "upgrade", "--ledger", str(old)])
    assert again.exit_code == 0 and f"ledger {old} is up to date (schema {head})" in again.output, again.output
    assert run_cli(["status", "--ledger", str(old)]).exit_code == 0


def test_a_newer_ledger_is_refused_by_every_command(tmp_path):
    newer = tmp_path / "new.db"
    _old_ledger(newer, "head")
    con = sqlite3.connect(newer)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    for cmd in [*_read_only_commands(tmp_path, newer), ["db", "upgrade"], ["verify"]]:
        _error(run_cli([*cmd, "--ledger", str(newer)]), 2, "newer batchgen", "9999")


def test_status_says_a_crashed_run_died_without_writing(tmp_path):
    ledger = tmp_path / "l.db"
    _old_ledger(ledger, "head")
    engine = make_engine(f"sqlite:///{ledger}")
    import socket
    with engine.begin() as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                       "VALUES ('m', 'x', 1, 'running', :h, 999999999)"), {"h": socket.gethostname()})
    engine.dispose()
    digest = hashlib.sha256(ledger.read_bytes()).hexdigest()
    doc = json.loads(run_cli(["status", "--ledger", str(ledger), "--json"]).stdout)
    assert [r["status"] for r in doc["runs"]] == ["died"]
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == digest


@pytest.mark.postgres
def test_read_only_commands_on_postgresql_never_create_or_migrate(pg_url, tmp_path):
    from sqlalchemy import create_engine, inspect

    for cmd in _read_only_commands(tmp_path, pg_url):
        _error(run_cli([*cmd, "--ledger", pg_url]), 2, "not a batchgen ledger")
    engine = create_engine(pg_url)
    assert inspect(engine).get_table_names() == []
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    with engine.begin() as c:
        cfg.attributes["connection"] = c
        command.upgrade(cfg, "0003")
    for cmd in _read_only_commands(tmp_path, pg_url):
        _error(run_cli([*cmd, "--ledger", pg_url]), 2, "older batchgen", "batchgen db upgrade")
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    engine.dispose()
    up = run_cli(["db", "upgrade", "--ledger", pg_url])
    assert up.exit_code == 0 and f"upgraded from schema 0003 to {schema_revisions()[0]}" in up.output, up.output
    assert run_cli(["status", "--ledger", pg_url]).exit_code == 0


@pytest.mark.postgres
def test_a_read_only_postgresql_engine_refuses_writes_and_keeps_the_urls_own_options(pg_url):
    """The READ ONLY session comes from the connection's startup options: the URL's own
    ``options`` (here the private search_path) must survive beside it, on every connection of
    the pool, first or later."""
    writer = make_engine(pg_url)
    with writer.begin() as c:
        c.execute(text("CREATE TABLE probe (x integer)"))
    writer.dispose()
    reader = make_engine(pg_url, readonly=True)
    try:
        for _ in range(2):  # the pool's first connection and a fresh one
            with reader.connect() as c:
                assert c.execute(text("SELECT count(*) FROM probe")).scalar() == 0  # search_path kept
                assert c.execute(text("SHOW default_transaction_read_only")).scalar() == "on"
                with pytest.raises(Exception, match="read-only transaction"):
                    c.execute(text("INSERT INTO probe VALUES (1)"))
            reader.dispose()
    finally:
        reader.dispose()


def test_a_ledger_path_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "l.fifo"
    os.mkfifo(fifo)  # opening it to read its header would wait for a writer forever
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    for ledger in (fifo, tmp_path):
        for cmd in [*_every_command(tmp_path), ["run", str(m), "--simulate", "--out", str(tmp_path / "out")]]:
            _error(run_cli([*cmd, "--ledger", str(ledger)]), 2, "not a regular file")
