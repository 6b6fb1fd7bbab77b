"""Several `batchgen run` processes cooperating on one PostgreSQL ledger, two of them killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from batchgen.simulator import canonical_sha256
from conftest import check_invariants, run_cli, wait_for, write_csv_manifest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
RPM = 3000.0  # the simulated API's limit, and the budget given to the workers together
# 300 jobs, some 750 requests: three workers of 16 slots want several times the budget (the
# budget binds from the first second), a fifth of the night with three workers and a fifth with
# two before the survivor does the rest alone: a run long enough for whole 10 s windows of the
# budget, and for the survivor to take over both dead workers' tasks (the lease is 3 s). 2,000
# jobs only lengthened each stage; 600 at twice the rate made the same stages as long, with
# twice the requests to serve and answer (the simulator's in this process).
N = 300


def _worker(manifest: Path, pg_url: str, out: Path, api: str, log: Path, concurrency: int = 16) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "batchgen", "run", str(manifest), "--ledger", pg_url, "--out", str(out),
           "--api-base", api, "--rpm", str(RPM), "--concurrency", str(concurrency), "--poll-min", "0.05",
           "--heartbeat", "0.5", "--lease-timeout", "3", "-q", "--json", "--no-verify"]  # leases, not media
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            env={**os.environ, "BATCHGEN_API_KEY": "sk-workers"})


def _tasks_held(pg_url: str, pid: int) -> int:
    """Paid tasks (created, not yet downloaded) leased by the worker process ``pid`` (its run's
    id is its worker id): what the survivor must take over once that worker is killed."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(pg_url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM jobs JOIN runs ON jobs.worker_id = runs.id "
                                      "WHERE runs.pid = :pid AND jobs.state IN ('submitted', 'rendering', 'completed')"),
                                 {"pid": pid}).scalar_one())
    except DBAPIError:  # the first worker has not created the tables yet
        return 0
    finally:
        engine.dispose()


def _done(pg_url: str) -> int:
    """Jobs done so far on the shared ledger (0 while no worker has created the tables)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(pg_url)
    try:
        with engine.connect() as c:
            return int(c.execute(text("SELECT count(*) FROM jobs WHERE state = 'done'")).scalar_one())
    except DBAPIError:
        return 0
    finally:
        engine.dispose()


def _max_window(per_second: dict[str, int], width: int) -> int:
    secs = {int(k): v for k, v in per_second.items()}
    lo, hi = min(secs), max(secs)
    return max(sum(secs.get(t, 0) for t in range(s, s + width)) for s in range(lo, max(lo, hi - width) + 1))


def test_three_workers_two_killed_every_job_done_once_within_one_budget(pg_url, sim_factory, tmp_path):
    # latency: creates stay in flight long enough for a kill to catch one (→ in doubt)
    sim = sim_factory(seed=4, rpm_limit=RPM, render_min=0.05, render_max=0.4, latency=0.05, media="stub")
    manifest = write_csv_manifest(tmp_path / "m.csv", N)
    out = tmp_path / "out"
    procs = [_worker(manifest, pg_url, out, sim.url, tmp_path / f"w{i}.log") for i in range(3)]
    try:
        # Kill two workers mid-run (a fifth, then two fifths of the jobs done: events, not wall
        # times, which on a loaded machine may come while the workers are still importing), each
        # while it holds paid tasks (killed without any, there would be nothing to take over).
        for victim, done in ((0, N // 5), (1, 2 * N // 5)):
            wait_for(lambda: procs[victim].poll() is not None or _done(pg_url) >= done, 240)
            wait_for(lambda: procs[victim].poll() is not None or _tasks_held(pg_url, procs[victim].pid) > 0, 120)
            assert procs[victim].poll() is None, f"worker {victim} ended before it could be killed"
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
        survivor = procs[2]
        stdout, _ = survivor.communicate(timeout=240)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    result = json.loads(stdout)
    assert survivor.returncode in (0, 1), (tmp_path / "w2.log").read_text()[-3000:]
    truth = sim.truth()
    stats = check_invariants(truth, pg_url, out)  # no duplicate, lost or invented task id, files intact
    assert stats["duplicates"] == 0 and stats["jobs"] == N
    led = Ledger(pg_url)
    try:
        rows = list(led.iter_export())
        runs = {r["id"]: r for r in led.runs(10)}
    finally:
        led.close()
    states = {s: sum(1 for j in rows if j["state"] == s) for s in {j["state"] for j in rows}}
    # Every job finished, except those a worker was killed between intent and task id: in doubt.
    doubt = [j for j in rows if j["state"] == "in_doubt"]
    assert states.get("done", 0) + len(doubt) == N, states
    assert all(j["error_code"] == "interrupted_create" for j in doubt)
    assert len(doubt) <= 2 * 16  # at most one create in flight per slot of the two killed workers
    assert result["counts"].get("done", 0) == states["done"]
    assert sorted(r["status"] for r in runs.values()) == ["died", "died", "finished"]
    # The survivor took over the dead workers' tasks (polled and downloaded, not resubmitted:
    # check_invariants counted no duplicate) and released every lease when it left.
    assert "took over" in (tmp_path / "w2.log").read_text()
    assert not [j for j in rows if j["worker_id"] is not None and j["state"] not in ("done", "failed")]
    # One budget for all: under the API's own limit, measured at the API.
    counters = truth["counters"]
    assert counters["faults"].get("rate_limit", 0) <= 0.01 * counters["requests"], counters["faults"]
    peak = _max_window(counters["per_second"], 10)
    print(f"\nworkers: states={states} in_doubt={len(doubt)} requests={counters['requests']} "
          f"429={counters['faults'].get('rate_limit', 0)} peak 10 s window={peak} (budget {RPM / 6:g})")
    assert peak <= RPM / 60 * 10 * 1.05

    # Settle the in-doubt jobs from the API's ground truth, then one more run: every job done,
    # each created exactly once.
    created = {c["body_sha256"]: c["task_id"] for c in truth["creates"]}
    for j in doubt:
        tid = created.get(canonical_sha256(json.loads(j["request"])))
        args = ["--adopt", tid] if tid else ["--resubmit"]
        r = run_cli(["resolve", j["key"], "--ledger", pg_url, *args])  # in-process: one import, not one a job
        assert r.exit_code == 0, r.output
    final = _worker(manifest, pg_url, out, sim.url, tmp_path / "final.log")
    final.communicate(timeout=120)
    assert final.returncode == 0, (tmp_path / "final.log").read_text()[-3000:]
    truth = sim.truth()
    stats = check_invariants(truth, pg_url, out)
    assert stats["done"] == N and stats["creates"] == N and stats["duplicates"] == 0

