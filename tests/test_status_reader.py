"""`batchgen status` on a SQLite file reads through ``SqliteReader`` (the standard library's
sqlite3, no SQLAlchemy: issue 28's start-up target); through ``Ledger`` otherwise. The two must
answer the same: every output of ``status`` (plain, --json, --runs, --expiring-within, --prices)
is compared byte for byte, at one frozen clock, on a ledger with every job state, several runs (one
running with a deadline, one that died, one asked to stop), open and closed breakers, review decisions, a retake,
takes of one shot, verification outcomes and deliveries owed, made and refused. The reader's
refusals (missing, foreign, outdated ledgers) are those of ``Ledger``, and it writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen import operations
from batchgen.cli import cli
from batchgen.cli.printers import print_json, print_status
from batchgen.errors import LedgerMissing, LedgerOutdated, NotALedger
from batchgen.jobs import Verdict
from batchgen.ledger import Change, Ledger, SqliteReader
from batchgen.ledger.sqlitereads import JOB_BOOLEANS, JOB_DIGESTS, RUN_BOOLEANS
from batchgen.schema import Digest, jobs, runs
from batchgen.simulator import SimConfig
from conftest import KEY, SimThread, run_args, run_cli, write_csv_manifest

PRICES = "unit: credits\nper_second:\n  grok-imagine-text-to-video: {480p: 2.5, 720p: 3.5}\n"
NOW = 1_900_000_000.0  # the frozen clock of every comparison


def _sql(ledger: Path, *statements: tuple[str, tuple]) -> None:
    con = sqlite3.connect(ledger, isolation_level=None)
    try:
        for sql, params in statements:
            con.execute(sql, params)
    finally:
        con.close()


@pytest.fixture(scope="module")
def rich_ledger(tmp_path_factory) -> Path:
    """A ledger with everything `status` shows, made by real runs and then moved by hand."""
    tmp = tmp_path_factory.mktemp("rich")
    env = {"BATCHGEN_API_KEY": KEY}
    # failures and ambiguous creates (in doubt) from a faulty API, then none for two takes
    sim = SimThread(SimConfig(render_min=0.01, render_max=0.05, media="stub", seed=4, p_fail=0.2,
                              p500_after=0.1)).start()
    try:
        for name in ("a", "b", "t"):
            if name == "t":  # two takes of one shot (the same request): its pick decides what is owed
                sim.set(p_fail=0.0, p500_after=0.0)
                m = tmp / "t.yaml"
                m.write_text("defaults: {model: grok-imagine-text-to-video, prompt: a lighthouse at dusk}\n"
                             "jobs:\n  - {name: t1, duration: 4, take: '1'}\n  - {name: t2, duration: 4, take: '2'}\n")
            else:
                m = write_csv_manifest(tmp / f"{name}.csv", 24 if name == "a" else 12, prefix=name)
            r = CliRunner().invoke(cli, run_args(sim, m, tmp, "-q", "--no-verify"), env=env, catch_exceptions=False)
            assert r.exit_code in (0, 1), r.output
    finally:
        sim.stop()
    ledger = tmp / "l.db"
    led = Ledger(str(ledger))
    try:
        done = [j["id"] for j in led.jobs_in_state("done")]
        assert len(done) >= 14, len(done)
        take_ids = [j["id"] for j in led.jobs_in_state("done") if j["name"] in ("t1", "t2")]
        assert len(take_ids) == 2
        done = [i for i in done if i not in take_ids]
        led.decide([Change(done[0], verdict=Verdict.APPROVE), Change(done[1], verdict=Verdict.REJECT, note="soft"),
                    Change(done[2], verdict=Verdict.RETAKE), Change(done[3], verdict=Verdict.APPROVE),
                    Change(done[3], verdict=None)], reviewer="ann")  # the last: an undo back to pending
        led.decide([Change(take_ids[0], verdict=Verdict.APPROVE), Change(take_ids[1], verdict=Verdict.APPROVE, pick=True)],
                   reviewer="bob")
        led.trip_breaker("grok-imagine-text-to-video", "5 failures in a row", 600)
        led.trip_breaker("grok-imagine-image-to-video", "timeouts", 30)
        led.trip_breaker("old-model", "was open", 30)
        led.close_breaker("old-model")
    finally:
        led.close()
    r = run_cli(["retake", "--yes", "--ledger", str(ledger), "-q"])
    assert r.exit_code == 0, r.output
    q = "UPDATE jobs SET {} WHERE id = ?"
    _sql(ledger,
         # every state, and results about to expire undownloaded
         (q.format("state='queued'"), (done[4],)),
         (q.format("state='submitting', submitted_at=NULL"), (done[5],)),
         (q.format("state='submitted'"), (done[6],)),
         (q.format("state='rendering'"), (done[7],)),
         (q.format("state='completed', result_at=?"), (NOW - 23.5 * 3600, done[8])),
         (q.format("state='completed', result_at=?"), (NOW - 10 * 3600, done[9])),
         (q.format("state='cancelled'"), (done[10],)),
         (q.format("state='in_doubt', error_code='create_timeout'"), (done[11],)),
         # verification outcomes, deliveries made, owed, refused and owed only once approved
         (q.format("verify='ok', verified_at=1"), (done[0],)),
         (q.format("verify='mismatch', verify_detail='duration 4≠6', verified_at=2"), (done[1],)),
         (q.format("verify='missing', verified_at=3"), (done[2],)),
         (q.format("deliver_to='s3://b/x', delivered_url='s3://b/x/a.mp4'"), (done[0],)),
         (q.format("deliver_to='s3://b/x', delivery_error='AccessDenied'"), (done[1],)),
         (q.format("deliver_to='s3://b/x', deliver_only='approved'"), (done[3],)),
         (q.format("deliver_to='s3://b/x', deliver_only='approved'"), (done[12],)),
         *((q.format("deliver_to='s3://b/t', deliver_only='approved'"), (i,)) for i in take_ids),
         # runs: one still running (a live pid), one that died (a pid that is gone), one asked to stop
         ("UPDATE runs SET status='running', finished_at=NULL, host=?, pid=?, heartbeat_at=?, finish_by=? WHERE id=1",
          (socket.gethostname(), os.getpid(), NOW - 12.34, NOW + 3600)),
         ("UPDATE runs SET status='running', finished_at=NULL, host=?, pid=?, stop_requested=1 WHERE id=2",
          (socket.gethostname(), 2 ** 22 + 17)),
         )
    return ledger


@pytest.fixture
def frozen(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: NOW)


def _both(ledger: Path, capsys, **kwargs) -> tuple[list[str], list[str]]:
    """(the reader's, Ledger's) status as printed plain and as JSON, at the frozen clock."""
    out = []
    for source in (str(ledger), None):
        led = Ledger(str(ledger), readonly=True, create=False) if source is None else None
        try:
            doc = operations.status(source if led is None else led, **kwargs)
        finally:
            if led is not None:
                led.close()
        printed = []
        for show in (lambda: print_status(doc, kwargs.get("expiring_within_h", 6.0)), lambda: print_json(doc)):
            show()
            printed.append(capsys.readouterr().out)
        out.append(printed)
    return out[0], out[1]


@pytest.mark.parametrize("kwargs", [{}, {"runs": 1}, {"runs": 2, "expiring_within_h": 0.25},
                                    {"expiring_within_h": 48}, {"prices": "custom"}])
def test_the_reader_and_the_ledger_print_the_same_status(rich_ledger, frozen, capsys, tmp_path, kwargs):
    if kwargs.get("prices") == "custom":
        from batchgen.cost import PriceTable

        (tmp_path / "p.yaml").write_text(PRICES)
        kwargs = {"prices": PriceTable.load(tmp_path / "p.yaml")}
    before = hashlib.sha256(rich_ledger.read_bytes()).hexdigest()
    mine, theirs = _both(rich_ledger, capsys, **kwargs)
    assert mine == theirs
    doc = json.loads(mine[1])
    assert hashlib.sha256(rich_ledger.read_bytes()).hexdigest() == before
    if kwargs:
        return
    # the ledger does hold what the comparison is about
    states = {s for r in doc["runs"] for s in r["counts"]}
    assert {"queued", "submitting", "submitted", "rendering", "completed", "done", "failed", "in_doubt",
            "cancelled"} <= states, states
    assert [r["status"] for r in doc["runs"]][-2:] == ["died", "running"] and doc["runs"][-2]["stop_requested"]
    # run --finish-by; a SQLite run's heartbeat is its start's only (no worker leases): not shown as one
    assert doc["runs"][-1]["heartbeat_age_s"] is None and doc["runs"][-1]["deadline"]
    assert "♥" not in mine[0] and "holds" not in mine[0]
    assert doc["in_doubt"] and doc["credits_at_risk"] > 0 and len(doc["expiring"]) == 1
    assert doc["verified"] == {"missing": 1, "mismatch": 1, "ok": 1}
    assert doc["review"]["approve"] >= 1 and doc["review"]["reject"] == 1 and doc["review"]["retake"] == 1
    # owed: the refused one, and the picked take (its approved sibling is not; nor an unapproved clip)
    assert doc["delivered"] == 1 and doc["undelivered"] == 2 and len(doc["not_delivered"]) == 2
    assert set(doc["breakers"]) == {"grok-imagine-text-to-video", "grok-imagine-image-to-video"}
    assert any(j["error"] == "create_timeout" for j in doc["in_doubt"])


def test_the_reader_answers_each_question_as_the_ledger(rich_ledger, frozen):
    """Method by method, every value (hex digests, booleans, whole requests) and every row order."""
    reader = SqliteReader(rich_ledger)
    led = Ledger(str(rich_ledger), readonly=True, create=False)
    try:
        for name, args in (("runs", (1000,)), ("unfinished", (1000,)), ("jobs_in_state", ("done",)),
                           ("jobs_in_state", ("in_doubt",)), ("expiring", (48 * 3600, 24 * 3600)),
                           ("verify_counts", ()), ("verdict_counts", ()), ("not_as_asked", ()),
                           ("delivery_counts", ()), ("delivery_problems", (1000,)), ("open_breakers", ())):
            mine, theirs = getattr(reader, name)(*args), getattr(led, name)(*args)
            assert mine == theirs, name  # rows in the same order, each with the same columns and values
        retakes = [j for j in reader.unfinished(1000) if j["retake_of"] is not None]
        assert retakes and all(isinstance(j["key"], str) and len(j["key"]) == 64 for j in retakes)
        assert any(j["retryable"] is not None for j in reader.jobs_in_state("failed"))
    finally:
        reader.close()
        led.close()


def test_the_type_conversions_follow_the_schema():
    """``SqliteReader`` converts the columns schema.py gives a converting type: if a column is
    added with one, the reader must learn it too."""
    def of(table, kind):
        return {c.name for c in table.columns if isinstance(c.type, kind)}

    from sqlalchemy import Boolean

    assert of(jobs, Digest) == set(JOB_DIGESTS)
    assert of(jobs, Boolean) == set(JOB_BOOLEANS)
    assert of(runs, Boolean) == set(RUN_BOOLEANS)
    assert not of(runs, Digest)


def test_the_cli_reads_a_sqlite_file_without_the_ledger_object(rich_ledger, monkeypatch, tmp_path):
    """`batchgen status --ledger FILE` (and BATCHGEN_LEDGER=FILE) never opens ``Ledger``; a URL
    does, and so does a running run's --finish-by forecast (its reads are Ledger's)."""
    from batchgen.operations import runstate

    def refuse(*_a, **_k):
        raise AssertionError("status opened Ledger")

    ledger = tmp_path / "l.db"
    ledger.write_bytes(rich_ledger.read_bytes())
    _sql(ledger, ("UPDATE runs SET finish_by = NULL", ()))
    monkeypatch.setattr(runstate, "open_ledger", refuse)
    for args, env in ((["--ledger", str(ledger)], {}), ([], {"BATCHGEN_LEDGER": str(ledger)})):
        for extra in ([], ["--json"]):
            r = run_cli(["status", *args, *extra], **env)
            assert r.exit_code == 0, r.output
    for other in (f"sqlite:///{ledger}", str(rich_ledger)):  # a URL; a running run with a deadline
        with pytest.raises(AssertionError, match="opened Ledger"):
            run_cli(["status", "--ledger", other])


def test_the_reader_refuses_as_the_ledger_does(tmp_path, rich_ledger):
    """Missing, a folder, another application's database, an older and a newer schema: the same
    error, word for word, from both; no file changed, and nothing left beside it that ``Ledger``
    would not leave (SQLite's empty -wal and -shm beside a WAL ledger it read)."""
    folder = tmp_path / "dir.db"
    folder.mkdir()
    foreign = tmp_path / "app.db"
    _sql(foreign, ("CREATE TABLE things (x)", ()))
    older, newer, unversioned = (tmp_path / f"{n}.db" for n in ("older", "newer", "unversioned"))
    for path, stamp in ((older, "0003"), (newer, "9999")):
        path.write_bytes(rich_ledger.read_bytes())
        _sql(path, ("UPDATE alembic_version SET version_num = ?", (stamp,)))
    unversioned.write_bytes(rich_ledger.read_bytes())
    _sql(unversioned, ("DROP TABLE alembic_version", ()))
    cases = ((tmp_path / "none.db", LedgerMissing), (folder, NotALedger), (foreign, NotALedger),
             (older, LedgerOutdated), (newer, LedgerOutdated), (unversioned, LedgerOutdated))
    for path, kind in cases:
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        left = []
        for open_ in (SqliteReader, lambda p: Ledger(str(p), readonly=True, create=False)):
            with pytest.raises(kind) as refused:
                open_(path)
            left.append((str(refused.value), sorted(p.name for p in tmp_path.iterdir())))
            for p in tmp_path.iterdir():  # what SQLite's reader leaves beside a WAL ledger (see below)
                if p.is_file() and p.name not in before:
                    p.unlink()
            assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before, path
        assert left[0][0] == left[1][0], path
        assert set(left[0][1]) <= set(left[1][1]), path  # nothing beside it that Ledger would not leave


def test_the_reader_leaves_a_ledger_as_the_ledger_does(rich_ledger, tmp_path):
    """Read-only: the ledger's bytes unchanged, and nothing beside it that ``Ledger`` (read-only)
    would not leave too (SQLite's empty -wal and its -shm index, for a WAL ledger); no .lock."""
    def snapshot(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    after = {}
    for name in ("reader", "ledger"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "l.db").write_bytes(rich_ledger.read_bytes())
        before = snapshot(folder)
        reader = SqliteReader(folder / "l.db") if name == "reader" else Ledger(str(folder / "l.db"), readonly=True,
                                                                              create=False)
        assert reader.runs(10) and reader.unfinished(10)
        reader.close()
        after[name] = snapshot(folder)
        assert after[name]["l.db"] == before["l.db"], name
    assert after["reader"] == after["ledger"]
    assert "l.db.lock" not in after["reader"]


@pytest.mark.postgres
def test_status_still_reads_a_postgresql_ledger(pg_url, sim, tmp_path):
    """A PostgreSQL ledger keeps the SQLAlchemy path (``Ledger``): status reads it as before."""
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(["run", str(m), "--api-base", sim.url, "--ledger", pg_url, "--out", str(tmp_path / "out"), "--rpm",
                 "0", "--poll-min", "0.05", "-q", "--no-verify"])
    assert r.exit_code == 0, r.output
    led = Ledger(pg_url)
    try:
        led.trip_breaker("grok-imagine-text-to-video", "5 failures in a row", 600)
    finally:
        led.close()
    r = run_cli(["status", "--ledger", pg_url, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["runs"][0]["counts"] == {"done": 3} and doc["runs"][0]["status"] == "finished"
    assert list(doc["breakers"]) == ["grok-imagine-text-to-video"]
    r = run_cli(["status", "--ledger", pg_url])
    assert r.exit_code == 0 and "runs" in r.stdout


def test_every_public_method_of_the_reader_is_behind_the_error_boundary(tmp_path):
    import inspect

    for name, member in vars(SqliteReader).items():
        if (name == "__init__" or not name.startswith("_")) and inspect.isfunction(member):
            assert hasattr(member, "__wrapped__"), f"SqliteReader.{name} is outside the error boundary"
    # a driver error of a read is one LedgerError naming the ledger
    from batchgen.errors import LedgerError

    Ledger(str(tmp_path / "l.db")).close()
    reader = SqliteReader(tmp_path / "l.db")
    try:
        reader.close()
        reader._con = sqlite3.connect(":memory:")
        reader._con.close()
        with pytest.raises(LedgerError, match=str(tmp_path / "l.db")):
            reader.runs()
    finally:
        reader.close()
