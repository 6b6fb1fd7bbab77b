from __future__ import annotations

import asyncio
import os
import stat

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from batchgen.errors import LedgerBusy
from batchgen.ledger import Ledger, Transition, Writer, migrations_dir
from batchgen.jobs import Job


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_migrate_on_open_upgrades_an_old_ledger_and_keeps_its_data(tmp_path):
    from conftest import ledger_at_revision

    with ledger_at_revision(f"sqlite:///{tmp_path / 'old.db'}", "0001") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                       "VALUES ('m', 'x', 1, 'finished', 'h', 1)"))
        c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, state, task_id, "
                       "created_at, updated_at) VALUES (:k, 1, 1, 'n', 's', 'm', '{}', 'o.mp4', 'submitted', 't-1', 1, 1)"),
                  {"k": "ab" * 32})  # a key as batchgen makes them (0009 stores its bytes)
    led = Ledger(str(tmp_path / "old.db"))
    try:
        run = led.run()
        assert run["manifest"] == "m" and run["stop_requested"] in (False, 0) and run["heartbeat_at"] is None
        job = led.job("t-1")
        assert job["state"] == "submitted" and job["worker_id"] is None  # data kept
        with pytest.raises(IntegrityError):  # and its constraints
            with led.engine.begin() as c:
                c.execute(text("UPDATE jobs SET state='bogus'"))
    finally:
        led.close()


def test_migrations_match_models_on_sqlite(tmp_path, monkeypatch):
    from alembic import command
    from alembic.config import Config

    Ledger(str(tmp_path / "c.db")).close()  # migrate on open
    monkeypatch.setenv("BATCHGEN_LEDGER", str(tmp_path / "c.db"))
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.check(cfg)  # raises if the models and the migrations disagree


def _job(i: int) -> Job:
    return Job(key=f"{i:064x}", seq=i, name=f"j{i}", source=f"row {i}", model="m", request={"model": "m", "i": i},
               output=f"j{i}.mp4")


@pytest.fixture
def led(tmp_path):
    l = Ledger(str(tmp_path / "l.db"))
    yield l
    l.close()


def test_sqlite_settings_and_file_mode(led, tmp_path):
    with led.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
    assert stat.S_IMODE(os.stat(tmp_path / "l.db").st_mode) == 0o600


def test_state_check_and_unique_task_id(led):
    run = led.start_run("m.yaml", "0" * 64, {}, 2)
    led.upsert_jobs(run, [_job(1), _job(2)])
    with pytest.raises(IntegrityError):
        with led.engine.begin() as c:
            c.execute(text("UPDATE jobs SET state='bogus' WHERE id=1"))
    assert led.apply([Transition(1, "submitting", ("queued",))]) == [True]
    assert led.apply([Transition(1, "submitted", ("submitting",), task_id="task-a")]) == [True]
    led.apply([Transition(2, "submitting", ("queued",))])
    with pytest.raises(Exception, match="UNIQUE"):
        led.apply([Transition(2, "submitted", ("submitting",), task_id="task-a")])
    assert led.job(2)["state"] == "submitting"  # the failed transition left no trace
    # a transition from an unexpected state is refused, not forced
    assert led.apply([Transition(1, "queued", ("submitting",))]) == [False]


def test_upsert_keeps_progress_and_events_are_appended(led):
    r1 = led.start_run("m.yaml", "0" * 64, {}, 1)
    led.upsert_jobs(r1, [_job(1)])
    led.apply([Transition(1, "submitting", ("queued",)), Transition(1, "submitted", ("submitting",), task_id="t1")])
    r2 = led.start_run("m.yaml", "0" * 64, {}, 1)
    led.upsert_jobs(r2, [_job(1)])
    j = led.job(1)
    assert j["state"] == "submitted" and j["task_id"] == "t1" and j["run_id"] == r2
    assert [e["to_state"] for e in led.events_for(1)] == ["submitting", "submitted"]
    assert led.known_task_ids() == {"t1"}


def test_orphans_become_in_doubt(led):
    run = led.start_run("m.yaml", "0" * 64, {}, 1)
    led.upsert_jobs(run, [_job(1)])
    led.apply([Transition(1, "submitting", ("queued",))])
    assert [j["id"] for j in led.orphans_to_in_doubt()] == [1]
    assert led.job(1)["state"] == "in_doubt"


def test_single_writer_lock(tmp_path):
    a, b = Ledger(str(tmp_path / "l.db")), Ledger(str(tmp_path / "l.db"))
    try:
        a.acquire_lock()
        with pytest.raises(LedgerBusy):
            b.acquire_lock()
        a.release_lock()
        b.acquire_lock()
    finally:
        a.close()
        b.close()


def test_writer_groups_commits_and_each_caller_waits_for_its_own(led):
    run = led.start_run("m.yaml", "0" * 64, {}, 200)
    led.upsert_jobs(run, [_job(i) for i in range(1, 201)])

    async def main():
        async with Writer(led) as w:
            results = await asyncio.gather(*(w.apply(Transition(i, "submitting", ("queued",))) for i in range(1, 201)))
            return results, w.commits

    results, commits = asyncio.run(main())
    assert all(results)
    assert commits < 200  # grouped
    assert led.counts() == {"submitting": 200}


# ------------------------------------------------------------------ reusing a validated expansion
def _prepare(led, path, out):
    from batchgen.manifest import Manifest
    from batchgen.runner import prepare
    from batchgen.scheduler import RunOptions

    p = prepare(led, Manifest(path), RunOptions(out_dir=out))
    led.release_lock()
    return p


def test_an_unchanged_manifest_is_not_expanded_again_and_its_unfinished_jobs_move_to_the_new_run(tmp_path):
    from conftest import write_csv_manifest

    m = write_csv_manifest(tmp_path / "m.csv", 30)
    led = Ledger(str(tmp_path / "l.db"))
    try:
        first = _prepare(led, m, tmp_path / "out")
        assert first.reused_from is None and first.total == 30
        ids = [j["id"] for j in led.iter_export()]
        led.apply([Transition(i, "cancelled", ("queued",)) for i in ids[:5]])
        with led.engine.begin() as c:  # five done, as a finished run would leave them
            c.execute(text("UPDATE jobs SET state = 'done' WHERE id IN (:a, :b, :c, :d, :e)"),
                      dict(zip("abcde", ids[5:10])))
        second = _prepare(led, m, tmp_path / "out")
        assert second.reused_from == first.run_id and second.total == 30
        rows = {j["id"]: j for j in led.iter_export()}
        assert all(rows[i]["run_id"] == first.run_id for i in ids[5:10])  # done rows are not rewritten
        assert all(rows[i]["run_id"] == second.run_id for i in ids[:5] + ids[10:])
        assert led.counts(second.run_id) == {"cancelled": 5, "queued": 20}
        # the chain continues: a third run reuses the second's
        assert _prepare(led, m, tmp_path / "out").reused_from == second.run_id
    finally:
        led.close()


def test_changed_inputs_or_moved_jobs_take_the_full_path(tmp_path, monkeypatch):
    from batchgen import manifest as manifest_mod
    from conftest import write_csv_manifest

    d = tmp_path / "m"
    d.mkdir()
    rows = write_csv_manifest(d / "rows.csv", 10)
    y = d / "m.yaml"
    y.write_text("defaults: {duration: 5}\nrows: rows.csv\n")
    led = Ledger(str(tmp_path / "l.db"))
    try:
        assert _prepare(led, y, tmp_path / "out").reused_from is None
        assert _prepare(led, y, tmp_path / "out").reused_from is not None
        write_csv_manifest(rows, 12)  # the YAML is unchanged, its rows CSV is not
        p = _prepare(led, y, tmp_path / "out")
        assert p.reused_from is None and p.total == 12
        monkeypatch.setattr(manifest_mod, "_expander_sha256", lambda: "another batchgen version")
        assert _prepare(led, y, tmp_path / "out").reused_from is None
        # A job of this manifest recorded since by another manifest's run is still one of its
        # members (scope is membership, not the run that recorded it last): reused, and moved back.
        other = write_csv_manifest(tmp_path / "other.csv", 1)
        _prepare(led, other, tmp_path / "out")
        assert _prepare(led, y, tmp_path / "out").reused_from is not None
        assert led.counts(led.run()["id"]).get("queued") == 12
        # Edited, then edited back: this path's membership is the other version's, so expand again.
        y.write_text("defaults: {duration: 6}\nrows: rows.csv\n")
        assert _prepare(led, y, tmp_path / "out").reused_from is None
        y.write_text("defaults: {duration: 5}\nrows: rows.csv\n")
        p = _prepare(led, y, tmp_path / "out")
        assert p.reused_from is None and p.total == 12
        assert len(led.manifest_members(str(y.resolve())) or []) == 12
    finally:
        led.close()


def test_a_manifest_naming_local_files_is_always_expanded_again(tmp_path):
    d = tmp_path / "m"
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    y = d / "m.yaml"
    y.write_text("defaults: {model: grok-imagine-reference-to-video, duration: 5}\n"
                 "jobs:\n  - {name: a, prompt: 'a @image1 scene', reference_image_urls: [refs/a.png]}\n")
    led = Ledger(str(tmp_path / "l.db"))
    try:
        _prepare(led, y, tmp_path / "out")
        (d / "refs" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"1" * 64)  # same path, new content
        p = _prepare(led, y, tmp_path / "out")
        assert p.reused_from is None and len(list(led.iter_export())) == 2  # a new job for the new image
    finally:
        led.close()
