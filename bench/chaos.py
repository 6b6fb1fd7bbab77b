"""Chaos soak: many jobs across seeds against a simulator injecting every fault it knows, while
`batchgen run` is killed with SIGKILL at random moments and restarted, then audited.

    .venv/bin/python bench/chaos.py                 # 4 seeds × 2,500 jobs, 50 kills each
    .venv/bin/python bench/chaos.py --seeds 1 --jobs 300 --kills 10    # a quick look
    .venv/bin/python bench/chaos.py --workers 3     # 3 cooperating workers on PostgreSQL, one
                                                    # of them killed (and replaced) each time
    .venv/bin/python bench/chaos.py --deliver       # and every clip delivered to a local S3-compatible
                                                    # server (moto, from the test extras)

The manifest is edited (a comment appended) before every restart, as a nightly user edits it
between runs (--no-edit: never): what one run left undelivered must be finished by the next.

Figures per seed and in total: jobs, faults injected, kills, duplicate creates, lost task ids
(creates unknown to the ledger outside in-doubt jobs), corrupt files, in-doubt jobs — and where
each in-doubt job comes from: an ambiguous create the simulator injected, or a kill between the
intent and the task id. Every injected ambiguous create must leave its job in doubt (it is never
resubmitted), and every in-doubt job must be explained by one of the two.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import PY, ROOT, Sim, csv_manifest, pg_schema  # noqa: E402

import batchgen  # noqa: E402


FAULTS = dict(p429=0.02, retry_after=0.2, p_burst=0.002, burst_seconds=1.0, p5xx_before=0.02, p500_after=0.005,
              p_drop_after=0.005, p_drop_before=0.005, p_malformed=0.005, p_slow=0.01, slow_seconds=0.5,
              p_truncate=0.03, p_fail=0.03, render_min=0.1, render_max=0.5, file_min=2048, file_max=8192)
AMBIGUOUS = {"500_after", "drop_after", "malformed_create", "drop_before", "500_before", "502_before"}


def soak(seed: int, jobs: int, kills_wanted: int, tmp: Path, workers: int = 1, ledger: str | None = None,
         s3: Any = None, edit: bool = True) -> dict[str, Any]:
    rows_csv = csv_manifest(tmp / "m.csv", jobs)
    # The nightly case: the manifest file is edited (a comment) before every restart, so its
    # bytes never match the run that left work behind; what it asks for is unchanged.
    manifest = tmp / "m.yaml"
    manifest.write_text(f"rows: {rows_csv.name}\n")

    def edited() -> None:
        if edit:
            with open(manifest, "a") as f:
                f.write(f"# edited before start {runs + 1}\n")

    ledger = ledger or str(tmp / "l.db")
    cmd = [PY, "-m", "batchgen", "run", str(manifest), "--no-verify", "--ledger", ledger, "--out", str(tmp / "out"),
           "--concurrency", "16", "--rpm", "0", "--poll-min", "0.05", "-q", "--heartbeat", "0.5", "--lease-timeout", "2"]
    env = {"BATCHGEN_API_KEY": "sk-chaos", "PATH": "/usr/bin:/bin"}
    prefix = f"chaos-{seed}/"
    if s3 is not None:
        cmd += ["--deliver", f"s3://{s3.BUCKET}/{prefix}"]
        env.update(s3.env())
    rng = random.Random(seed)
    kills = runs = 0
    with Sim(seed=seed, **FAULTS) as sim:
        args = cmd + ["--api-base", sim.url]
        rc = None
        if workers > 1:  # a pool of cooperating workers: kill one at random, start a replacement
            pool: list[subprocess.Popen[bytes]] = []
            while kills < kills_wanted:
                if any(p.poll() in (0, 1) for p in pool):
                    break  # a worker left on its own: the manifest is finished
                pool = [p for p in pool if p.poll() is None]
                while len(pool) < workers:
                    edited()
                    pool.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
                    runs += 1
                time.sleep(rng.uniform(0.8, 3.0))
                live = [p for p in pool if p.poll() is None]
                if live:
                    victim = rng.choice(live)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    kills += 1
            for p in pool:
                p.wait()
        while workers == 1 and kills < kills_wanted:
            edited()
            p = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            runs += 1
            try:
                rc = p.wait(rng.uniform(0.8, 3.0))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
                kills += 1
                continue
            if rc in (0, 1):
                break  # finished before the kills ran out
        summary: dict[str, Any] = {}
        for _ in range(20):
            edited()
            done_run = subprocess.run(args + ["--json"], env=env, cwd=ROOT, capture_output=True, timeout=900)
            rc = done_run.returncode
            runs += 1
            with contextlib.suppress(ValueError):
                summary = json.loads(done_run.stdout or b"{}")
            if rc in (0, 1):
                break
        truth = sim.truth()
    a = batchgen.audit.audit(truth, ledger, tmp / "out")
    led = batchgen.Ledger(ledger)
    try:
        rows = list(led.iter_export())
    finally:
        led.close()
    body_of = {j["id"]: batchgen.request_sha256(json.loads(j["request"])) for j in rows}
    ambiguous_bodies = {f["body_sha256"] for f in truth["fault_log"] if f["fault"] in AMBIGUOUS}
    doubt = [j for j in rows if j["state"] == "in_doubt"]
    from_faults = sum(1 for j in doubt if body_of[j["id"]] in ambiguous_bodies)
    from_kills = sum(1 for j in doubt if body_of[j["id"]] not in ambiguous_bodies and j["error_code"] == "interrupted_create")
    unexplained = len(doubt) - from_faults - from_kills
    not_in_doubt = sum(1 for j in rows if body_of[j["id"]] in ambiguous_bodies and j["state"] != "in_doubt")
    faults = truth["counters"]["faults"]
    delivery: dict[str, int] = {}
    if s3 is not None:  # every done clip in the store, with the bytes the ledger recorded
        objects = s3.objects(prefix)
        done = [j for j in rows if j["state"] == "done"]
        delivery = {"delivered": sum(1 for j in done if j["delivered_url"]),
                    "undelivered": sum(1 for j in done if not j["delivered_url"]),
                    "delivery_mismatch": sum(1 for j in done if j["delivered_url"] and (
                        objects.get(prefix + j["output"], {}).get("sha256") != j["sha256"])),
                    "stray_objects": len(set(objects) - {prefix + j["output"] for j in done}),
                    # the last run's summary counts what the bucket holds (whatever was edited)
                    "summary_not_bucket": abs((summary.get("delivery") or {}).get("delivered", -1)
                                              - sum(1 for k in objects if k.endswith(".mp4")))}
    return {**delivery,"seed": seed, "jobs": len(rows), "runs": runs, "kills": kills, "final_rc": rc,
            # faulty responses: burst *starts* and the per-status split of 5xx_before are not extra
            "faults_injected": sum(v for k, v in faults.items()
                                   if k not in ("burst", "download_with_authorization") and not k.startswith("5xx_before_")),
            "ambiguous_injected": len(ambiguous_bodies), "done": a.done,
            "failed": a.states.get("failed", 0), "in_doubt": a.in_doubt, "in_doubt_from_faults": from_faults,
            "in_doubt_from_kills": from_kills, "in_doubt_unexplained": unexplained,
            "ambiguous_not_in_doubt": not_in_doubt, "duplicates": a.duplicates, "lost_task_ids": a.unknown,
            "invented_task_ids": a.invented, "corrupt_files": a.corrupt_files, "temp_files": a.temp_files,
            "integrity": a.integrity, "audit_ok": a.ok, "fault_counts": faults}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2500, help="jobs per seed")
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs per seed (fewer if the seed finishes first)")
    ap.add_argument("--workers", type=int, default=1,
                    help="N > 1: N cooperating workers on the local PostgreSQL server (database test)")
    ap.add_argument("--deliver", action="store_true",
                    help="run with --deliver to a local S3-compatible server (moto) and check every object")
    ap.add_argument("--no-edit", action="store_true",
                    help="do not edit the manifest (a comment) before each restart")
    a = ap.parse_args()
    s3 = None
    if a.deliver:
        from s3server import S3Server

        s3 = S3Server()
    t = time.monotonic()
    results = []
    for seed in range(1, a.seeds + 1):
        with tempfile.TemporaryDirectory() as d, (pg_schema("chaos") if a.workers > 1
                                                  else contextlib.nullcontext(None)) as url:
            r = soak(seed, a.jobs, a.kills, Path(d), a.workers, url, s3, edit=not a.no_edit)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "fault_counts"}), flush=True)
    if s3 is not None:
        s3.stop()
    keys = ["jobs", "kills", "faults_injected", "ambiguous_injected", "done", "failed", "in_doubt", "in_doubt_from_faults",
            "in_doubt_from_kills", "in_doubt_unexplained", "ambiguous_not_in_doubt", "duplicates", "lost_task_ids",
            "invented_task_ids", "corrupt_files", "temp_files"]
    if s3 is not None:
        keys += ["delivered", "undelivered", "delivery_mismatch", "stray_objects", "summary_not_bucket"]
    total = {k: sum(r[k] for r in results) for k in keys}
    faults: dict[str, int] = {}
    for r in results:
        for k, v in r["fault_counts"].items():
            faults[k] = faults.get(k, 0) + v
    print(f"\nchaos soak: {a.seeds} seed(s) in {time.monotonic() - t:.0f}s")
    for k in keys:
        print(f"  {k:<24} {total[k]}")
    print("  faults by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))
    bad = [k for k in ("duplicates", "lost_task_ids", "invented_task_ids", "corrupt_files", "temp_files",
                       "in_doubt_unexplained", "ambiguous_not_in_doubt", "undelivered", "delivery_mismatch",
                       "stray_objects", "summary_not_bucket") if total.get(k)]
    bad += [f"seed {r['seed']} integrity {r['integrity']}" for r in results if r["integrity"] != "ok"]
    print("RESULT: " + ("all invariants held" if not bad else "VIOLATED: " + ", ".join(bad)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
