"""Flat memory at a million jobs (issue 21), its correctness side: expansion's compact memory of
keys and output names still names the first row of a repeat; plan's streamed ledger look-ups;
migration 0008 (membership by job id, partial task-id index) keeps every job and request on
SQLite and PostgreSQL; the report's streamed data is the bytes gzip.compress made. Nothing here
is timed: the figures are bench/run.py's `million` scenario."""

from __future__ import annotations

import gzip
import hashlib
import os
import io
import json
import tempfile

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

import batchgen
from batchgen import operations
from batchgen.errors import LedgerError, ManifestError
from batchgen.jobs import canonical_json, key_from_json
from batchgen.ledger import Ledger, Scope, migrations_dir, make_engine, schema_revisions
from batchgen.manifest import Manifest
from batchgen.manifest.seen import Seen, fingerprint_of_key, fingerprint_of_text
from batchgen.reportdata import CompareFields, Packed
from conftest import ledger_at_revision, page_data, run_args, run_cli, write_csv_manifest

T2V = "grok-imagine-text-to-video"


# ---------------------------------------------------------------------------- expansion's memory
def test_seen_remembers_each_value_with_its_first_number_and_flag_across_growth():
    seen = Seen(capacity=8)
    texts = [f"clip{i:06d}.mp4" for i in range(20000)]
    for i, t in enumerate(texts):
        assert seen.add(fingerprint_of_text(t), i, flag=i % 3 == 0) is None
    assert seen.count == 20000
    for i in (0, 1, 7, 12345, 19999):  # after many doublings
        assert seen.add(fingerprint_of_text(texts[i]), 99) == (i, i % 3 == 0)
    assert seen.add(fingerprint_of_text("clip020000.mp4"), 5) is None
    key = "ab" * 32
    assert seen.add(fingerprint_of_key(key), 1) is None and seen.add(fingerprint_of_key(key), 2) == (1, False)
    # a fingerprint whose top 64 bits are zero is a value like any other
    assert seen.add(5, 3) is None and seen.add(5, 4) == (3, False) and seen.add(6, 4) is None
    with pytest.raises(ValueError):
        seen.add(7, 1 << 31)


def _csv(path, rows):
    path.write_text("name,model,prompt,duration\n" + "".join(f"{n},{T2V},{p},{d}\n" for n, p, d in rows))
    return path


def test_a_repeat_far_down_a_large_csv_names_the_first_row(tmp_path):
    rows = [(f"c{i}", f"shot {i}", 1 + i % 10) for i in range(30000)]
    rows[25000] = ("again", "shot 2", 3)  # the request of row 3 (line 4)
    rows[28000] = ("c9", "other shot", 4)  # the file name of row 10 (line 11)
    m = Manifest(_csv(tmp_path / "big.csv", rows))
    with pytest.raises(ManifestError) as ei:
        m.validate()
    problems = [str(p) for p in ei.value.problems]
    assert len(problems) == 2, problems
    assert "row 25001 (line 25002): is the identical request as row 3 (line 4) (same job key" in problems[0]
    assert "row 28001 (line 28002), field 'output': file name 'c9.mp4' is also used by row 10 (line 11)" in problems[1]


def test_repeats_under_a_matrix_and_in_yaml_jobs_name_their_rows(tmp_path):
    (tmp_path / "rows.csv").write_text(f"name,prompt\na,one\nb,two\nc,one\n")
    y = tmp_path / "m.yaml"
    y.write_text(f"defaults: {{model: {T2V}}}\nmatrix: {{aspect_ratio: ['16:9', '9:16']}}\n"
                 "jobs:\n  - {name: y1, prompt: first}\n  - {name: y2, prompt: one}\nrows: rows.csv\n")
    with pytest.raises(ManifestError) as ei:
        Manifest(y).validate()
    text_ = "\n".join(str(p) for p in ei.value.problems)
    # each matrix combination of rows a and c repeats jobs[1]'s (one line each: its key differs)
    assert "rows.csv: row 1 (line 2): is the identical request as jobs[1] (line 5)" in text_
    assert "rows.csv: row 3 (line 4): is the identical request as jobs[1] (line 5)" in text_
    assert len(ei.value.problems) == 4 and text_.count("as jobs[1] (line 5)") == 4 and "\ue000" not in text_


# ---------------------------------------------------------------------------- plan, streamed
def test_plan_looks_up_every_batch_of_a_large_manifest_in_the_ledger(tmp_path):
    m = _csv(tmp_path / "m.csv", [(f"c{i}", f"shot {i}", 1 + i % 10) for i in range(4500)])
    led = Ledger(str(tmp_path / "l.db"))
    try:
        batchgen.prepare(led, Manifest(m), batchgen.RunOptions(out_dir=tmp_path / "out"))
        with led.engine.begin() as c:  # spread over the 2000-job batches: done, in flight, failed
            c.execute(text("UPDATE jobs SET state='done', task_id='t' || id, output_path='/x' WHERE id % 3 = 0"))
            c.execute(text("UPDATE jobs SET state='rendering', task_id='t' || id WHERE id % 3 = 1 AND id > 4000"))
            c.execute(text("UPDATE jobs SET state='failed', error_code='x' WHERE id = 2222"))
    finally:
        led.close()
    with open(m, "a") as f:
        f.write(f"new,{T2V},a new shot,5\n")
    doc = operations.plan(m, ledger=str(tmp_path / "l.db"), explain=True)
    assert doc["jobs"] == 4501 and doc["states"]["done"] == 1500 and doc["states"]["in_flight"] == 166
    assert doc["states"]["failed"] == 1 and doc["states"]["new"] == 1
    assert doc["states"]["queued"] == 4501 - 1500 - 166 - 1 - 1
    actions = {e["name"]: e["action"] for e in doc["explain"]}
    assert actions["c2"] == "skip" and actions["c4002"] == "poll" and actions["new"] == "submit"
    assert len(doc["explain"]) == 4501


def test_plan_checks_the_ledger_before_reading_the_manifest(tmp_path, monkeypatch):
    """Issue 28: a wrong ledger is said before the (possibly million-row) expansion, even when
    the manifest has problems too; the manifest's problems come once the ledger is right."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHGEN_LEDGER", raising=False)
    bad = _csv(tmp_path / "bad.csv", [("a", "x", 99)])
    for op in (operations.plan, operations.diff):
        with pytest.raises(batchgen.errors.LedgerMissing, match="no ledger"):
            op(bad, ledger=str(tmp_path / "missing.db"))
        with pytest.raises(ManifestError):
            op(bad)  # no ledger named, none at the default path: planning before the first run
    good = _csv(tmp_path / "good.csv", [("a", "x", 5)])
    with pytest.raises(batchgen.errors.BatchgenError, match="no ledger"):
        operations.plan(good, ledger=str(tmp_path / "missing.db"))


# ---------------------------------------------------------------------------- migration 0008
REQUESTS = ['{"model":"m","prompt":"ümlaut \\"quoted\\" \\u2028","duration":5}', '{}',
            '{"aspect_ratio":"16:9","model":"grok","prompt":"' + "x" * 3000 + '","resolution":"720p"}']


def _ledger_at_0007(url: str) -> None:
    with ledger_at_revision(url, "0007") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid, jobs_total) "
                       "VALUES ('/m.yaml', 'sha-a', 1, 'finished', 'h', 1, 3), "
                       "('/other.yaml', 'sha-b', 2, 'finished', 'h', 1, 1)"))
        for i, req in enumerate(REQUESTS, start=1):
            c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, state, task_id, "
                           "created_at, updated_at) VALUES (:k, 1, :i, :n, 's', 'm', :r, :o, 'done', :t, 1, 1)"),
                      {"k": f"{i:064x}", "i": i, "n": f"j{i}", "r": req, "o": f"j{i}.mp4", "t": f"task-{i}"})
            c.execute(text("INSERT INTO events (job_id, at, from_state, to_state, task_id, detail) VALUES "
                           "(:i, 1, 'queued', 'submitting', NULL, 'create'), (:i, 2, 'submitting', 'submitted', "
                           ":t, NULL)"), {"i": i, "t": f"task-{i}"})
        c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, state, "
                       "created_at, updated_at) VALUES (:k, 2, 1, 'o', 's', 'm', '{}', 'o.mp4', 'queued', 1, 1)"),
                  {"k": f"{99:064x}"})
        for k, manifest in ((1, "/m.yaml"), (2, "/m.yaml"), (3, "/m.yaml"), (99, "/other.yaml"), (2, "/other.yaml")):
            c.execute(text("INSERT INTO manifest_jobs (manifest, key) VALUES (:m, :k)"), {"m": manifest, "k": f"{k:064x}"})


def _check_migrated(url: str) -> None:
    led = Ledger(url)  # migrates on open
    try:
        rows = {j["key"]: j for j in led.iter_export()}
        assert [rows[f"{i:064x}"]["request"] for i in (1, 2, 3)] == REQUESTS  # every request, exactly
        members = led.manifest_members("/m.yaml")
        assert members is not None and [j["name"] for j in members] == ["j1", "j2", "j3"]
        other = led.manifest_members("/other.yaml")
        assert other is not None and sorted(j["name"] for j in other) == ["j2", "o"]
        assert led.scope_counts(Scope("/other.yaml", "no-such-sha")) == {"done": 1, "queued": 1}
        assert led.job("task-2")["name"] == "j2" and led.known_task_ids() == {"task-1", "task-2", "task-3"}
        assert [e["task_id"] for e in led.events_for(3)] == [None, "task-3"]
    finally:
        led.close()


def test_migration_0008_keeps_every_job_request_and_membership_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _ledger_at_0007(url)
    _check_migrated(url)
    engine = make_engine(url)
    with engine.connect() as c:
        ddl = dict(c.execute(text("SELECT name, sql FROM sqlite_master WHERE name IN "
                                  "('manifest_jobs', 'ix_events_task_id')")).all())
    engine.dispose()
    assert "WITHOUT ROWID" in ddl["manifest_jobs"] and "job_id" in ddl["manifest_jobs"]
    assert "ix_events_task_id" not in ddl  # 0009 dropped it: no query looks events up by task id


@pytest.mark.postgres
def test_migration_0008_keeps_every_job_request_and_membership_on_postgres(pg_url, monkeypatch):
    _ledger_at_0007(pg_url)
    _check_migrated(pg_url)
    monkeypatch.setenv("BATCHGEN_LEDGER", pg_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.check(cfg)  # the migrated schema is the models' (constraint names included)


# ---------------------------------------------------------------------------- migration 0009
# Several shapes (two share one), a request stored whole (keys not in canonical order, no
# prompt, a prompt that is not a string), takes, a done job with its sha256, events with task ids.
REQUESTS_0009 = [
    '{"duration":5,"model":"grok","prompt":"a lighthouse ü \\"q\\" \\u2028","resolution":"720p"}',
    '{"duration":5,"model":"grok","prompt":"a harbour","resolution":"720p"}',
    '{"duration":6,"model":"grok","prompt":"a harbour","resolution":"720p"}',
    '{"image_urls":["https://x/1.png"],"model":"veo","prompt":"","seed":7}',
    '{"model":"m","prompt":"unsorted","duration":5}',
    '{"model":"m"}',
    '{"model":"m","prompt":["not","text"]}',
]
TAKES = [None, None, "2", None, "b", None, None]


def _ledger_at_0008(url: str) -> list[dict]:
    """A ledger as batchgen wrote it at 0008; returns its jobs as they were stored."""
    with ledger_at_revision(url, "0008") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid, jobs_total) "
                       "VALUES ('/m.yaml', 'sha-a', 1, 'finished', 'h', 1, 7)"))
        for i, req in enumerate(REQUESTS_0009, start=1):
            done = i == 2
            c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, take, state, "
                           "task_id, sha256, bytes, output_path, created_at, updated_at) VALUES (:k, 1, :i, :n, 's', "
                           "'m', :r, :o, :take, :st, :t, :sha, :b, :p, 1, 1)"),
                      {"k": f"{i:02x}" * 32, "i": i, "n": f"j{i}", "r": req, "o": f"j{i}.mp4", "take": TAKES[i - 1],
                       "st": "done" if done else "submitted", "t": f"task-{i}", "sha": "ef" * 32 if done else None,
                       "b": 2978 if done else None, "p": f"/out/j{i}.mp4" if done else None})
            c.execute(text("INSERT INTO events (job_id, at, from_state, to_state, task_id, detail) VALUES "
                           "(:i, 1, 'queued', 'submitting', NULL, 'create attempt 1'), "
                           "(:i, 2, 'submitting', 'submitted', :t, 'estimated_time=0.0')"), {"i": i, "t": f"task-{i}"})
            c.execute(text("INSERT INTO manifest_jobs (manifest, job_id) VALUES ('/m.yaml', :i)"), {"i": i})
        c.execute(text("INSERT INTO manifest_jobs (manifest, job_id) VALUES ('/other.yaml', 2), ('/other.yaml', 5)"))
        return [dict(r._mapping) for r in c.execute(text("SELECT * FROM jobs ORDER BY id"))]


def _at_0008(row: dict | None) -> dict:
    """A job row without the columns later migrations added (0011: priority, 0012: retake_of,
    0015: deliver_only)."""
    assert row is not None
    return {k: v for k, v in row.items() if k not in ("priority", "retake_of", "deliver_only")}


def _same_as_before(led: Ledger, before: list[dict]) -> None:
    exported = list(led.iter_export())
    for old, row in zip(before, exported, strict=True):
        assert _at_0008(row) == old  # every column, the request's exact text, hex key and sha256
        assert row["priority"] == 0  # 0011: every job recorded before priorities has the default
        assert row["retake_of"] is None  # 0012: no job recorded before retakes is one
        assert all(_at_0008(led.job(ref)) == old for ref in (old["id"], old["key"][:10], old["task_id"]))
    assert [j["request"] for j in led.manifest_members("/m.yaml")] == REQUESTS_0009
    assert [j["name"] for j in led.manifest_members("/other.yaml")] == ["j2", "j5"]
    assert [j["name"] for j in led.iter_export(manifest="/other.yaml")] == ["j2", "j5"]
    assert led.scope_counts(Scope("/other.yaml", "no-such-sha")) == {"done": 1, "submitted": 1}
    assert led.states_by_key([before[1]["key"]])[before[1]["key"]]["state"] == "done"
    assert led.known_task_ids() == {f"task-{i}" for i in range(1, 8)}
    assert [(e["detail"], e["task_id"]) for e in led.events_for(3)] == [("create attempt 1", None),
                                                                        ("estimated_time=0.0", "task-3")]


def _stored(url: str) -> list[tuple]:
    engine = make_engine(url)
    with engine.connect() as c:
        rows = c.execute(text("SELECT j.request, s.body FROM jobs j LEFT JOIN request_shapes s ON s.id = j.shape_id "
                              "ORDER BY j.id")).all()
    engine.dispose()
    return rows


def _check_0009(url: str) -> None:
    before = _ledger_at_0008(url)
    led = Ledger(url)  # migrates on open
    try:
        _same_as_before(led, before)
    finally:
        led.close()
    stored = _stored(url)
    # The first four share a shape per distinct rest (j1 and j2 one); the last three are whole.
    assert [r[0] for r in stored[:4]] == ['"a lighthouse ü \\"q\\" \\u2028"', '"a harbour"', '"a harbour"', '""']
    assert stored[0][1] == stored[1][1] != stored[2][1] and stored[3][1] is not None
    assert [r for r in stored[4:]] == [(req, None) for req in REQUESTS_0009[4:]]


def test_migration_0009_keeps_every_job_request_key_and_event_on_sqlite(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _check_0009(url)
    monkeypatch.setenv("BATCHGEN_LEDGER", url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.check(cfg)  # the rebuilt tables are the models' (types, constraints, partial index)
    engine = make_engine(url)
    with engine.connect() as c:
        types = c.execute(text("SELECT typeof(key) || typeof(sha256) FROM jobs WHERE id = 2")).scalar()
        assert types == "blobblob"
        assert c.execute(text("PRAGMA foreign_key_check")).all() == []
        assert c.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    engine.dispose()


@pytest.mark.postgres
def test_migration_0009_keeps_every_job_request_key_and_event_on_postgres(pg_url, monkeypatch):
    _check_0009(pg_url)
    monkeypatch.setenv("BATCHGEN_LEDGER", pg_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.check(cfg)


def test_migration_0009_refuses_a_key_batchgen_did_not_write_and_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with ledger_at_revision(url, "0008") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                       "VALUES ('m', 'x', 1, 'finished', 'h', 1)"))
        c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, state, "
                       "created_at, updated_at) VALUES (:k, 1, 1, 'n', 's', 'm', '{}', 'o.mp4', 'queued', 1, 1)"),
                  {"k": "AB" * 32})
    with pytest.raises(LedgerError, match="job 1: its key 'ABAB.*not a sha256 in lowercase hex"):
        Ledger(url)
    engine = make_engine(url)
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
        assert c.execute(text("SELECT key FROM jobs")).scalar() == "AB" * 32
    engine.dispose()


def _downgraded(url: str, monkeypatch) -> list[dict]:
    monkeypatch.setenv("BATCHGEN_LEDGER", url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.downgrade(cfg, "0008")
    engine = make_engine(url)
    with engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(text("SELECT * FROM jobs ORDER BY id"))]
        assert c.execute(text("SELECT count(*) FROM events WHERE task_id IS NOT NULL")).scalar() == 7
        assert c.execute(text("SELECT manifest, job_id FROM manifest_jobs ORDER BY manifest, job_id")).all() == [
            *(("/m.yaml", i) for i in range(1, 8)), ("/other.yaml", 2), ("/other.yaml", 5)]
        names = {i["name"] for t in ("jobs", "events") for i in inspect(c).get_indexes(t)}
        assert {"ix_events_task_id", "ix_jobs_worker_id"} <= names
        assert not inspect(c).has_table("request_shapes")
    engine.dispose()
    return rows


def test_migration_0009_downgrades_to_the_rows_0008_stored(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    before = _ledger_at_0008(url)
    Ledger(url).close()
    assert _downgraded(url, monkeypatch) == before


@pytest.mark.postgres
def test_migration_0009_downgrades_on_postgres(pg_url, monkeypatch):
    before = _ledger_at_0008(pg_url)
    Ledger(pg_url).close()
    assert _downgraded(pg_url, monkeypatch) == before


def test_a_fresh_ledger_stores_shapes_once_and_reads_requests_keys_and_sha256_back(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 12)  # durations 1..10: ten shapes
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    expected = {j.key: j for j in Manifest(m).expand()}
    url = f"sqlite:///{tmp_path / 'l.db'}"
    led = Ledger(url)
    try:
        rows = list(led.iter_export())
        assert {r["key"] for r in rows} == set(expected)
        for r in rows:
            job = expected[r["key"]]
            assert r["request"] == canonical_json(job.request) and key_from_json(r["request"], r["take"]) == r["key"]
            assert r["sha256"] == hashlib.sha256(open(r["output_path"], "rb").read()).hexdigest()
            assert led.job(r["id"]) == r == led.job(r["key"][:8])
            assert "shape_id" not in r
    finally:
        led.close()
    stored = _stored(url)
    assert len({body for _, body in stored}) == 10 and all(part.startswith('"A test clip') for part, _ in stored)



def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_an_older_run_holding_a_sqlite_ledger_is_never_migrated_under(tmp_path):
    """A new batchgen installed mid-night, then `batchgen stop` (or a second `run`) typed while
    yesterday's batchgen still runs: migrating under that run had it write hex digests and the
    old tables into the new layout, and every later read failed. Its flock says it is running:
    the ledger is left as it is (exit 5) until that run ends."""
    import fcntl

    path = tmp_path / "l.db"
    url = f"sqlite:///{path}"
    before = _ledger_at_0008(url)
    held = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)  # what the older run holds
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(LedgerError) as ei:
            Ledger(url)
        assert ei.value.exit_code == 5 and "in use by a run of it" in str(ei.value) and "0008" in str(ei.value)
        r = run_cli(["db", "upgrade", "--ledger", str(path)])
        assert r.exit_code == 5 and "cannot be upgraded under that run" in r.output, r.output
        assert _revision(url) == "0008"
    finally:
        os.close(held)
    led = Ledger(url)  # that run is over: migrated now, nothing lost
    try:
        _same_as_before(led, before)
        led.acquire_lock()  # and the upgrade let go of the lock it took
    finally:
        led.close()


def test_a_live_older_worker_on_postgres_keeps_its_ledger_from_being_migrated_under_it(pg_url):
    before = _ledger_at_0008(pg_url)
    engine = make_engine(pg_url)
    with engine.begin() as c:  # a worker of the older batchgen, its heartbeat fresh (the server's clock)
        c.execute(text("UPDATE runs SET status = 'running', heartbeat_at = extract(epoch FROM clock_timestamp())"))
    with pytest.raises(LedgerError) as ei:
        Ledger(pg_url)
    assert ei.value.exit_code == 5 and "in use by a run of it" in str(ei.value)
    assert _revision(pg_url) == "0008"
    with engine.begin() as c:  # it died (or finished) a while ago
        c.execute(text("UPDATE runs SET heartbeat_at = extract(epoch FROM clock_timestamp()) - 600"))
    engine.dispose()
    led = Ledger(pg_url)
    try:
        _same_as_before(led, before)
    finally:
        led.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_shape_over_the_limit_in_utf8_bytes_is_stored_whole(backend, tmp_path, request):
    """The shape's limit is in bytes: 860 CJK characters are 2,580 bytes of UTF-8, over what
    PostgreSQL's B-tree index takes (2,704 with the row's overhead); such a request is stored
    whole, and reads back byte for byte, on either database."""
    from batchgen.ledger.shapes import MAX_SHAPE_BYTES, split

    url = request.getfixturevalue("pg_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'l.db'}"
    caption = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(860))
    req = {"model": "sora-2", "prompt": "a harbour at dawn", "scene_caption_zh": caption}
    text_ = canonical_json(req)
    assert len(text_) < 1000 < MAX_SHAPE_BYTES + 1 < len(text_.encode())
    assert split(req, text_) is None
    small = {"model": "sora-2", "prompt": "a harbour at dawn", "scene_caption_zh": caption[:200]}
    assert split(small, canonical_json(small)) is not None  # 600 bytes: shared
    m = tmp_path / "m.yaml"
    m.write_text("unvalidated_models: [sora-2]\ndefaults: {model: sora-2, scene_caption_zh: " + json.dumps(caption)
                 + "}\njobs:\n  - {name: a, prompt: a harbour at dawn}\n  - {name: b, prompt: a quay at dusk}\n",
                 encoding="utf-8")
    jobs = list(Manifest(m).expand())
    led = Ledger(url)
    try:
        run_id = led.start_run(str(m), "sha", {}, len(jobs))
        led.upsert_jobs(run_id, jobs)
        rows = {r["name"]: r for r in led.iter_export()}
        assert {n: r["request"] for n, r in rows.items()} == {j.name: canonical_json(j.request) for j in jobs}
    finally:
        led.close()
    assert all(body is None for _, body in _stored(url))


def test_an_older_ledger_holding_a_long_non_ascii_request_upgrades_on_postgres(pg_url):
    caption = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(860))
    req = canonical_json({"model": "sora-2", "prompt": "a harbour at dawn", "scene_caption_zh": caption})
    with ledger_at_revision(pg_url, "0008") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid, jobs_total) "
                       "VALUES ('/m.yaml', 'sha-a', 1, 'finished', 'h', 1, 1)"))
        c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, state, created_at, "
                       "updated_at) VALUES (:k, 1, 1, 'a', 's', 'sora-2', :r, 'a.mp4', 'queued', 1, 1)"),
                  {"k": "ab" * 32, "r": req})
    led = Ledger(pg_url)  # migrates: the request is stored whole, not as a shape the index refuses
    try:
        assert [r["request"] for r in led.iter_export()] == [req]
    finally:
        led.close()
    assert _revision(pg_url) == schema_revisions()[0] and _stored(pg_url) == [(req, None)]  # the head: the upgrade went all the way

# ---------------------------------------------------------------------------- report data, streamed
def test_packed_data_is_the_bytes_gzip_compress_makes():
    doc = json.dumps({"rows": [[i, f"ü{i}", None] for i in range(50000)]}, ensure_ascii=False).encode()
    packed = Packed(tempfile.TemporaryFile())
    for i in range(0, len(doc), 7777):  # any chunking
        packed.write(doc[i:i + 7777])
    packed.finish()
    out = io.StringIO()
    packed.write_base64(out)
    import base64

    assert base64.b64decode(out.getvalue()) == gzip.compress(doc, compresslevel=6, mtime=0)


def test_compare_columns_drop_a_field_with_too_many_values_unless_asked():
    for compare, kept in ((None, ["aspect_ratio"]), ("seed", ["aspect_ratio", "seed"])):
        fields = CompareFields(compare)
        for n in range(40):
            fields.add("aspect_ratio", n, n // 2, "16:9" if n % 2 else "9:16")
            fields.add("seed", n, n % 5, str(n))
            if n % 4 == 0:
                fields.add("take", n, 1, "")
            fields.pad(n + 1)
        assert fields.comparable() == kept
        strings: list[str] = []

        def intern(s):
            if s not in strings:
                strings.append(s)
            return strings.index(s)

        out = io.BytesIO()
        fields.write_column("aspect_ratio", intern, out)
        col = json.loads(b"{" + out.getvalue() + b"}")["aspect_ratio"]
        assert col["g"] == [n // 2 for n in range(40)]
        assert [strings[v] for v in col["v"]] == ["9:16" if n % 2 == 0 else "16:9" for n in range(40)]


def test_unverified_and_undelivered_clips_come_a_page_at_a_time(tmp_path):
    m = _csv(tmp_path / "m.csv", [(f"c{i}", f"shot {i}", 5) for i in range(10)])
    led = Ledger(str(tmp_path / "l.db"))
    try:
        prepared = batchgen.prepare(led, Manifest(m), batchgen.RunOptions(out_dir=tmp_path / "out"))
        with led.engine.begin() as c:  # done, never verified; owed to a store; one not done
            c.execute(text("UPDATE jobs SET state='done', task_id='t' || id, output_path='/x/' || id, "
                           "deliver_to='s3://b/p/', verify=CASE WHEN id = 4 THEN 'ok' END WHERE id <> 7"))
        pages, after = [], 0
        while page := led.unverified(prepared.scope, after_id=after, limit=3):
            pages.append([j["id"] for j in page])
            after = page[-1]["id"]
        assert pages == [[1, 2, 3], [5, 6, 8], [9, 10]]
        assert [j["id"] for j in led.unverified(prepared.scope)] == [1, 2, 3, 5, 6, 8, 9, 10]  # no limit: all
        owed = led.undelivered(prepared.scope, verified_only=False, after_id=5, limit=2)
        assert [j["id"] for j in owed] == [6, 8]
        assert [j["id"] for j in led.undelivered(None, verified_only=True)] == [4]
    finally:
        led.close()


def test_stale_temp_files_are_found_below_out_without_listing_it_whole(tmp_path):
    from batchgen.files import _HOST, remove_stale_temp_files

    out = tmp_path / "out"
    (out / "a" / "b").mkdir(parents=True)
    dead = 2 ** 22 + 12345  # above any pid this machine hands out (pid_max is at most 2**22)
    stale = [out / f".x.mp4.{_HOST}-{dead}-1.part", out / "a" / "b" / f".y.mp4.{_HOST}-{dead}-2.part"]
    kept = [out / f".z.mp4.{_HOST}-{os.getpid()}-3.part",  # its writer is alive
            out / "a" / "clip.mp4", out / "a" / ".hidden.mp4", out / "a" / ".part"]
    for p in stale + kept:
        p.write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    foreign = elsewhere / f".w.mp4.{_HOST}-{dead}-4.part"
    foreign.write_bytes(b"x")
    (out / "link").symlink_to(elsewhere, target_is_directory=True)  # never followed
    assert remove_stale_temp_files(out) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept) and foreign.exists()


def test_report_strings_past_the_table_limit_ride_in_their_rows(tmp_path, monkeypatch):
    from batchgen import report

    m = _csv(tmp_path / "m.csv", [(f"c{i}", f"shot {i}", 1 + i % 3) for i in range(30)])
    led = Ledger(str(tmp_path / "l.db"))
    try:
        batchgen.prepare(led, Manifest(m), batchgen.RunOptions(out_dir=tmp_path / "out"))
    finally:
        led.close()
    pages = {}
    for limit in (50_000, 5):
        monkeypatch.setattr(report._Strings.__init__, "__defaults__", (limit,))
        operations.report(str(tmp_path / "l.db"), tmp_path / "r.html", compare="duration")
        pages[limit] = page_data((tmp_path / "r.html").read_text())
    whole, capped = pages[50_000], pages[5]
    assert len(capped["strings"]) == 5 < len(whole["strings"])

    def resolved(d, value):
        return value if isinstance(value, str) or value is None else d["strings"][value]

    for d in (whole, capped):  # every row and comparison value reads the same either way
        d["resolved"] = [[resolved(d, v) if d["fields"][i] in ("state", "model", "params", "prompt", "output")
                          else v for i, v in enumerate(r)] for r in d["rows"]]
        d["compared"] = [resolved(d, v) for v in d["columns"]["duration"]["v"]]
    assert whole["resolved"] == capped["resolved"] and whole["compared"] == capped["compared"]
    assert any(isinstance(v, str) for r in capped["rows"] for v in r[2:6])  # strings carried inline
