"""--rpm auto on a cooperative PostgreSQL fleet: the API key's limit is learned once, through the
ledger (runs.rate_rpm, migration 0013), not by each worker against the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from batchgen.ledger import Ledger, make_engine
from conftest import check_invariants, ledger_at_revision, migrated_down, write_csv_manifest

ROOT = Path(__file__).resolve().parent.parent
LIMIT_RPM = 360.0  # the simulated API's limit: 6 requests a second for the key, six times the start


def _migrate_0013_and_back(url: str, monkeypatch) -> None:
    with ledger_at_revision(url, "0012") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                       "VALUES ('m', 'x', 1, 'finished', 'h', 1)"))
    led = Ledger(url)  # migrates on open
    try:
        assert led.fleet_rate(30.0) is None  # a finished run holds no rate
    finally:
        led.close()
    with migrated_down(url, monkeypatch, "0012") as c:
        assert "rate_rpm" not in {col["name"] for col in inspect(c).get_columns("runs")}
        assert c.execute(text("SELECT manifest, status FROM runs")).all() == [("m", "finished")]


def test_migration_0013_upgrades_and_downgrades_on_sqlite(tmp_path, monkeypatch):
    _migrate_0013_and_back(f"sqlite:///{tmp_path / 'old.db'}", monkeypatch)


@pytest.mark.postgres
def test_migration_0013_upgrades_and_downgrades_on_postgres(pg_url, monkeypatch):
    _migrate_0013_and_back(pg_url, monkeypatch)


def _worker(manifest: Path, pg_url: str, out: Path, api: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "batchgen", "run", str(manifest), "--ledger", pg_url, "--out", str(out),
           "--api-base", api, "--rpm", "auto", "--concurrency", "16", "--poll-min", "0.05",
           "--heartbeat", "0.5", "--lease-timeout", "3", "-q", "--json", "--no-verify"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            env={**os.environ, "BATCHGEN_API_KEY": "sk-fleet"})


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_learn_one_limit_for_their_key_through_the_ledger(pg_url, sim_factory, tmp_path):
    """Three workers, one key, a limit none was told. Each writes the rate it holds with its
    heartbeat and paces at its share of the lowest: together they go well past the start (60 a
    minute for the key), stay under the limit, and hold one rate, not three. 80 jobs, 160
    requests: the climb from one request a second to the limit (some 30 s and 80 requests,
    whatever the number of jobs) leaves ~80 to be made at the limit, some thirteen seconds of
    the fleet holding it (the busiest five seconds are asserted below). It was 200 jobs at 15
    a second: the same climb and stretch, longer, at two and a half times the requests.
    16 slots a worker: each claims work from the start to the end (with 48, 80 jobs left the
    third worker nothing to do — which, before idle workers stopped holding a rate, pinned the
    fleet at its start: ``test_an_idle_fleet_worker_holds_no_rate_and_takes_the_fleets``)."""
    sim = sim_factory(seed=7, rpm_limit=LIMIT_RPM, render_min=0.2, render_max=0.6, media="stub")
    n = 80
    manifest = write_csv_manifest(tmp_path / "m.csv", n)
    out = tmp_path / "out"
    procs = [_worker(manifest, pg_url, out, sim.url, tmp_path / f"w{i}.log") for i in range(3)]
    rates: list[list[float]] = []  # the rates the live workers hold, sampled while they run
    engine = make_engine(pg_url)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            try:
                with engine.connect() as c:
                    held = [float(v) for (v,) in c.execute(text(
                        "SELECT rate_rpm FROM runs WHERE status = 'running' AND rate_rpm IS NOT NULL"))]
            except Exception:  # the first worker has not created the tables yet
                continue
            if len(held) == 3:
                rates.append(held)
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        engine.dispose()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]
    assert all(json.loads(o)["counts"] == {"done": n} for o in outs)
    truth = sim.truth()
    stats = check_invariants(truth, pg_url, out)
    assert stats["duplicates"] == 0 and stats["jobs"] == n
    counters = truth["counters"]
    refused = counters["status"].get("429", 0)
    accepted = counters["status"].get("200", 0)
    per_second = sorted(counters["per_second"].values())
    print(f"\nfleet: accepted={accepted} 429={refused} busiest seconds={per_second[-5:]} "
          f"rates sampled={len(rates)} last={rates[-1] if rates else None}")
    assert refused <= 0.05 * (accepted + refused)
    assert per_second[-5] >= 0.6 * LIMIT_RPM / 60  # learned far past one request a second
    # One rate for the key: the workers' views stay together (the lowest is what all pace at;
    # between two heartbeats one may have grown a little past it).
    assert rates and all(max(r) <= 1.5 * min(r) for r in rates[len(rates) // 4:])
