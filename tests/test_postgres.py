from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.ledger import Ledger, Scope, Transition, migrations_dir
from conftest import check_invariants, page_data, write_csv_manifest

pytestmark = pytest.mark.postgres


def test_migrations_match_models_on_postgres(pg_url, monkeypatch):
    Ledger(pg_url).close()  # migrate on open
    monkeypatch.setenv("BATCHGEN_LEDGER", pg_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.check(cfg)  # raises if the models and the migrations disagree


def test_run_resume_and_export_on_postgres(pg_url, sim_factory, tmp_path):
    sim = sim_factory(seed=2, p429=0.05, retry_after=0.05, p_truncate=0.1)
    m = write_csv_manifest(tmp_path / "m.csv", 25, small=True)  # resume and money, not what is in a clip
    # --heartbeat 0.2: the lease is renewed during the run by construction (at the default 5 s,
    # only a run slowed by 720p clips or a loaded machine lasted long enough to renew it).
    args = ["run", str(m), "--api-base", sim.url, "--ledger", pg_url, "--out", str(tmp_path / "out"),
            "--rpm", "0", "--poll-min", "0.05", "-q", "--json", "--heartbeat", "0.2"]
    r = CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": "sk-pg"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"done": 25}
    r = CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": "sk-pg"}, catch_exceptions=False)
    assert r.exit_code == 0 and len(sim.truth()["creates"]) == 25
    stats = check_invariants(sim.truth(), pg_url, tmp_path / "out")
    assert stats["done"] == 25 and stats["duplicates"] == 0
    e = CliRunner().invoke(cli, ["export", "--ledger", pg_url, "--json"])
    assert len(json.loads(e.stdout)) == 25
    # status, CSV export and report read a PostgreSQL ledger exactly as a SQLite one.
    st = CliRunner().invoke(cli, ["status", "--ledger", pg_url, "--json"])
    doc = json.loads(st.stdout)
    assert [r["status"] for r in doc["runs"]] == ["finished", "finished"] and doc["in_doubt"] == []
    assert doc["runs"][1]["counts"] == {"done": 25} and doc["runs"][0]["held"] == 0
    csv_out = CliRunner().invoke(cli, ["export", "--ledger", pg_url])
    assert csv_out.exit_code == 0 and len(csv_out.stdout.strip().splitlines()) == 26
    rep = CliRunner().invoke(cli, ["report", "--ledger", pg_url, "-o", str(tmp_path / "r.html")])
    assert rep.exit_code == 0
    assert any("shot0024" in str(s) for s in page_data((tmp_path / "r.html").read_text())["strings"])


def test_constraints_on_postgres(pg_url):
    from batchgen.jobs import Job

    led = Ledger(pg_url)
    try:
        run = led.start_run("m", "0" * 64, {}, 2)
        led.upsert_jobs(run, [Job(f"{i:064x}", i, f"j{i}", "r", "m", {"i": i}, f"j{i}.mp4") for i in (1, 2)])
        ids = [j["id"] for j in led.iter_export()]
        led.apply([Transition(ids[0], "submitting", ("queued",)), Transition(ids[1], "submitting", ("queued",))])
        led.apply([Transition(ids[0], "submitted", ("submitting",), task_id="t-1")])
        with pytest.raises(Exception):
            led.apply([Transition(ids[1], "submitted", ("submitting",), task_id="t-1")])
        assert led.orphans_to_in_doubt()[0]["id"] == ids[1]
    finally:
        led.close()


def _record(led: Ledger, digest: str, n: int) -> int:
    from batchgen.jobs import Job

    jobs = [Job(f"{digest[:8]}{i:056x}", i, f"j{i}", "r", "m", {"i": i}, f"j{i}.mp4") for i in range(1, n + 1)]
    run_id, _ = led.record_run("m.csv", digest, {}, jobs, lambda: None)
    return run_id


def test_claims_are_disjoint_under_concurrency_and_only_the_holder_moves_a_job(pg_url):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    led = Ledger(pg_url)
    try:
        workers = [_record(led, "a" * 64, 300) for _ in range(3)]  # three workers join one manifest

        start = threading.Barrier(3)

        def take(w: int) -> list[int]:
            got: list[int] = []
            start.wait()  # all three claim at once
            while rows := led.claim(w, Scope("", "a" * 64), 7):
                got += [r["id"] for r in rows]
            return got

        with ThreadPoolExecutor(3) as pool:
            shares = list(pool.map(take, workers))
        everything = [i for share in shares for i in share]
        assert len(everything) == 300 and len(set(everything)) == 300  # each job leased exactly once
        assert all(shares)  # and the work was spread (each worker got some)
        mine, theirs = shares[0][0], shares[1][0]
        ok = led.apply([Transition(mine, "submitting", ("queued",), owner=workers[0]),
                        Transition(theirs, "submitting", ("queued",), owner=workers[0])])
        assert ok == [True, False]  # a worker cannot move a job another worker holds
        assert led.claim(workers[2], Scope("", "b" * 64), 10) == []  # another manifest's jobs are not ours
    finally:
        led.close()


def test_a_dead_workers_jobs_are_taken_over_and_its_mid_create_jobs_put_in_doubt(pg_url):
    from sqlalchemy import update

    from batchgen.schema import runs

    led = Ledger(pg_url)
    try:
        a = _record(led, "c" * 64, 4)
        b = _record(led, "c" * 64, 4)
        ids = [r["id"] for r in led.claim(a, Scope("", "c" * 64), 4)]
        assert len(ids) == 4 and led.claim(b, Scope("", "c" * 64), 4) == []
        led.apply([Transition(ids[0], "submitting", ("queued",), owner=a),
                   Transition(ids[1], "submitting", ("queued",), owner=a),
                   Transition(ids[1], "submitted", ("submitting",), task_id="t-1", owner=a)])
        assert led.reclaim(b, lease_s=30) == ([], [])  # a is alive: nothing to take
        assert led.live_workers(30) == 2 and led.pending_elsewhere(b, Scope("", "c" * 64)) == 4
        with led.engine.begin() as c:  # a's heartbeat goes stale, as after kill -9
            c.execute(update(runs).where(runs.c.id == a).values(heartbeat_at=runs.c.heartbeat_at - 60))
        adopted, doubt = led.reclaim(b, lease_s=30)
        assert [j["id"] for j in adopted] == [ids[1]] and adopted[0]["task_id"] == "t-1"  # polled, not resubmitted
        assert [j["id"] for j in doubt] == [ids[0]] and led.job(ids[0])["state"] == "in_doubt"
        assert led.run(a)["status"] == "died" and led.live_workers(30) == 1
        assert not led.heartbeat(a)  # a, if only paused, learns it lost its lease
        assert sorted(r["id"] for r in led.claim(b, Scope("", "c" * 64), 10)) == ids[2:]  # its queued jobs are free
        assert led.apply([Transition(ids[2], "submitting", ("queued",), owner=a)]) == [False]
        assert led.release(b) == 3 and led.held(b) == []
    finally:
        led.close()


def test_stop_all_asks_every_worker_to_drain(pg_url):
    led = Ledger(pg_url)
    try:
        workers = [_record(led, "d" * 64, 2) for _ in range(2)]
    finally:
        led.close()
    r = CliRunner().invoke(cli, ["stop", "--all", "--ledger", pg_url])
    assert r.exit_code == 0, r.output
    led = Ledger(pg_url)
    try:
        assert all(led.stop_requested(w) for w in workers)
    finally:
        led.close()


def test_diff_and_delivery_on_postgres(pg_url, sim_factory, s3, tmp_path):
    """The manifest membership behind `batchgen diff` and the delivery records on PostgreSQL."""
    sim = sim_factory(seed=3)
    m = write_csv_manifest(tmp_path / "m.csv", 4)
    args = ["run", str(m), "--api-base", sim.url, "--ledger", pg_url, "--out", str(tmp_path / "out"),
            "--rpm", "0", "--poll-min", "0.05", "-q", "--json", "--deliver", "s3://renders/pg/"]
    env = {"BATCHGEN_API_KEY": "sk-pg", **s3.env()}
    r = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["delivery"]["delivered"] == 4
    write_csv_manifest(m, 6)  # two more shots
    d = CliRunner().invoke(cli, ["diff", str(m), "--ledger", pg_url, "--json"])
    doc = json.loads(d.stdout)
    assert [j["name"] for j in doc["added"]] == ["shot0004", "shot0005"] and doc["unchanged_done"] == 4
    assert doc["last_run"]["exit_code"] == 0 and doc["credits"]["tonight"] > 0
    st = json.loads(CliRunner().invoke(cli, ["status", "--ledger", pg_url, "--json"]).stdout)
    assert st["delivered"] == 4 and st["not_delivered"] == []


def test_workers_starting_together_record_one_after_another(pg_url):
    """Workers started at once (or restarted after a kill) each record a run: the manifest's
    unfinished jobs move to it and its membership is rewritten. Side by side, two recordings lock
    the same job rows in different orders and PostgreSQL aborts one (a worker exiting 7 with
    DeadlockDetected, seen under load by tests/test_workers.py); they take turns instead."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import create_engine, text

    from batchgen.jobs import Job
    from batchgen.ledger.sql import RECORD_LOCK

    def jobs(tag: str, n: int) -> list[Job]:
        return [Job(f"{tag}{i:063x}", i, f"{tag}{i}", "r", "grok-imagine-text-to-video", {"i": i, "t": tag},
                    f"{tag}{i}.mp4") for i in range(1, n + 1)]

    first, second = Ledger(pg_url), Ledger(pg_url)
    halfway, go_on = threading.Event(), threading.Event()

    def slow(items: list[Job]):
        yield from items[:5]
        halfway.set()  # the first recording holds its transaction open here
        assert go_on.wait(60)
        yield from items[5:]

    probe = create_engine(pg_url)
    try:
        with ThreadPoolExecutor(2) as ex:
            a = ex.submit(first.record_run, "a.csv", "a" * 64, {}, slow(jobs("a", 10)), lambda: None)
            assert halfway.wait(60)
            b = ex.submit(second.record_run, "b.csv", "b" * 64, {}, iter(jobs("b", 10)), lambda: None)

            def waiting() -> int:
                with probe.connect() as c:
                    # waiting for RECORD_LOCK (pg_locks is the whole server's: other tests may wait too)
                    return int(c.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT "
                                              "granted AND classid = 0 AND objid = :k AND objsubid = 1"),
                                         {"k": RECORD_LOCK}).scalar() or 0)

            deadline = time.monotonic() + 30
            while waiting() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert waiting() >= 1 and not b.done()  # the second waits for the first's commit
            go_on.set()
            (run_a, n_a), (run_b, n_b) = a.result(60), b.result(60)
        assert (n_a, n_b) == (10, 10) and run_b > run_a
    finally:
        go_on.set()
        probe.dispose()
        first.close()
        second.close()
