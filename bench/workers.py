"""Cooperating workers on one PostgreSQL ledger: 1, 2 and 4 `batchgen run` processes on the
same manifest and the same simulator, in one run of this script.

    .venv/bin/python bench/workers.py            # needs PostgreSQL on 127.0.0.1:5432, database test
    .venv/bin/python bench/workers.py --quick

Two scenarios:
  cpu    zero render time, no request limit: what the workers' own CPU and the shared ledger
         allow (this machine has 2 cores, shared with the simulator and PostgreSQL);
  slots  renders of 0.5–1 s and --concurrency 16 per worker: the case that motivates several
         workers (one key's or one machine's concurrency is the bottleneck).
Per configuration: jobs/min (manifest start to last worker exit), ledger transactions/s
(PostgreSQL's xact_commit for the database over the same interval) and requests per job.
Each configuration gets a fresh schema; every job must end `done` with one create.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PG, PY, ROOT, Sim, csv_manifest, pg_schema  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402


def commits(engine: Any) -> int:
    with engine.connect() as c:
        c.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(c.execute(text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")).scalar())


def measure(workers: int, jobs: int, knobs: dict[str, Any], conc: int, engine: Any, tmp: Path) -> dict[str, Any]:
    manifest = csv_manifest(tmp / f"m{workers}.csv", jobs)
    with pg_schema("bench") as url, Sim(**knobs) as sim:
        before, t = commits(engine), time.monotonic()
        procs = [subprocess.Popen([PY, "-m", "batchgen", "run", str(manifest), "--no-verify", "--api-base", sim.url, "--ledger", url,
                                   "--out", str(tmp / f"out{workers}"), "--rpm", "0", "--concurrency", str(conc),
                                   "--poll-min", "0.05", "-q", "--json"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  env={**os.environ, "BATCHGEN_API_KEY": "sk-bench"}) for _ in range(workers)]
        outs = [p.communicate()[0] for p in procs]
        wall = time.monotonic() - t
        time.sleep(0.6)  # let the last backends' statistics reach pg_stat_database
        txns = commits(engine) - before
        truth = sim.truth()
    done = json.loads(outs[-1])["counts"].get("done", 0)
    creates = len(truth["creates"])
    assert done == jobs and creates == jobs, (done, creates, [p.returncode for p in procs])
    return {"workers": workers, "jobs_per_min": jobs / wall * 60, "txn_per_s": txns / wall, "wall_s": wall,
            "requests_per_job": truth["counters"]["requests"] / jobs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    engine = create_engine(PG)
    scenarios = [
        ("cpu", 1000 if a.quick else 6000, {"render_min": 0, "render_max": 0, "file_min": 2048, "file_max": 4096}, 32),
        ("slots", 200 if a.quick else 800, {"render_min": 0.5, "render_max": 1.0, "file_min": 2048, "file_max": 4096}, 16),
    ]
    print(f"{'scenario':<8} {'workers':>7} {'jobs/min':>10} {'× 1 worker':>10} {'ledger txn/s':>13} {'req/job':>8} {'wall s':>7}")
    for name, jobs, knobs, conc in scenarios:
        base = None
        for n in (1, 2, 4):
            with tempfile.TemporaryDirectory() as d:
                r = measure(n, jobs, knobs, conc, engine, Path(d))
            base = base or r["jobs_per_min"]
            print(f"{name:<8} {n:>7} {r['jobs_per_min']:>10,.0f} {r['jobs_per_min'] / base:>9.2f}× "
                  f"{r['txn_per_s']:>13,.0f} {r['requests_per_job']:>8.2f} {r['wall_s']:>7.1f}", flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
