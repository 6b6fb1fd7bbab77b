"""batchgen benchmarks: throughput, requests per job, rate-limit use, memory, resume, export.

    .venv/bin/python bench/run.py            # full sizes (several minutes)
    .venv/bin/python bench/run.py --quick    # small sizes, to check the harness

Every figure is measured in this one run, on this machine, against the bundled simulator
running in its own process; ratios compare measurements of the same run. Nothing here is a
unit test: the machines are noisy, so read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ----------------------------------------------------------------------------- helpers
from common import PY, ROOT, Sim, child, csv_manifest  # noqa: E402


def batchgen_run(sim: Sim, manifest: Path, tmp: Path, *args: str, stop_after: float | None = None) -> dict[str, Any]:
    r = child([PY, "-m", "batchgen", "run", str(manifest), "--api-base", sim.url, "--ledger", str(tmp / "l.db"),
               "--out", str(tmp / "out"), "-q", "--json", *args], stop_after=stop_after)
    try:
        r["summary"] = json.loads(r["stdout"])
    except ValueError:
        r["summary"] = {}
    return r


def baseline(sim: Sim, n: int, conc: int, poll_every: float | None = None, tmp: Path | None = None) -> dict[str, Any]:
    args = [PY, str(ROOT / "bench" / "baselines.py"), sim.url, str(n), str(conc), str(poll_every or "-")]
    if tmp is not None:
        args += [str(tmp / "naive.db"), str(tmp / "naive-out")]
    return json.loads(child(args)["stdout"])


ROWS: list[tuple[str, str, str, str]] = []


def row(metric: str, value: str, target: str, ok: bool | None) -> None:
    ROWS.append((metric, value, target, "ok" if ok else ("MISS" if ok is not None else "")))
    print(f"  {metric:<58} {value:>16}  {target:<14} {ROWS[-1][3]}", flush=True)


# ----------------------------------------------------------------------------- scenarios
def throughput(n: int, conc: int) -> None:
    print(f"\n[1] throughput, zero render time, {n} jobs, concurrency {conc}")
    knobs = {"render_min": 0, "render_max": 0, "file_min": 2048, "file_max": 4096}
    with Sim(**knobs) as sim:
        bare = baseline(sim, n, conc)
    with tempfile.TemporaryDirectory() as d, Sim(**knobs) as sim:
        naive = baseline(sim, n, conc, tmp=Path(d))
    with tempfile.TemporaryDirectory() as d, Sim(**knobs) as sim:
        m = csv_manifest(Path(d) / "m.csv", n)
        r = batchgen_run(sim, m, Path(d), "--concurrency", str(conc), "--rpm", "0", "--poll-min", "0.01")
        s = r["summary"]
        assert s.get("counts") == {"done": n}, s
    bg = n / r["wall"]
    row("bare loop (jobs/s)", f"{bare['jobs_per_s']:.0f}", "", None)
    row("naive persistent loop (jobs/s)", f"{naive['jobs_per_s']:.0f}", "", None)
    row("batchgen, whole command incl. start-up (jobs/s)", f"{bg:.0f}", "", None)
    row("batchgen ledger transactions (commits) / transitions",
        f"{s['ledger_commits']} / {4 * n}", "", None)
    row("batchgen / bare loop", f"{bg / bare['jobs_per_s']:.2f}x", ">= 0.70x", bg / bare["jobs_per_s"] >= 0.7)
    row("batchgen / naive persistent loop", f"{bg / naive['jobs_per_s']:.2f}x", ">= 1.50x", bg / naive["jobs_per_s"] >= 1.5)


def requests_per_job(n: int, scale: float) -> None:
    print(f"\n[2] requests per job, render 30-120 s scaled x{scale}, {n} jobs")
    knobs = {"render_min": 30 * scale, "render_max": 120 * scale, "file_min": 2048, "file_max": 4096}
    with tempfile.TemporaryDirectory() as d, Sim(**knobs) as sim:
        m = csv_manifest(Path(d) / "m.csv", n)
        r = batchgen_run(sim, m, Path(d), "--concurrency", "64", "--rpm", "0", "--poll-min", str(2 * scale))
        st = sim.stats()
        assert r["summary"]["counts"] == {"done": n}, r["summary"]
        bg = (st["creates_accepted"] + st["polls"]) / n
    with Sim(**knobs) as sim:
        baseline(sim, n, 64, poll_every=5 * scale)
        st = sim.stats()
        fixed = (st["creates_accepted"] + st["polls"]) / n
    row("batchgen requests per completed job", f"{bg:.2f}", "<= 3.0", bg <= 3.0)
    row("fixed 5 s poller requests per completed job", f"{fixed:.2f}", "", None)
    row("fixed poller / batchgen", f"{fixed / bg:.1f}x", "", None)


def rate_limit(n: int, rpm: int) -> None:
    print(f"\n[3] API limit of {rpm} requests/min, {n} jobs")
    with tempfile.TemporaryDirectory() as d, Sim(render_min=0, render_max=0, rpm_limit=rpm) as sim:
        m = csv_manifest(Path(d) / "m.csv", n)
        r = batchgen_run(sim, m, Path(d), "--concurrency", "64", "--rpm", str(rpm), "--poll-min", "0.01")
        st = sim.stats()
    s = r["summary"]
    ok_requests = st["status"].get("200", 0)
    throttled = st["status"].get("429", 0)
    achieved = ok_requests / s["elapsed_s"] * 60
    row("achieved requests/min (2xx) / limit", f"{achieved:.0f} / {rpm}", ">= 95%", achieved >= 0.95 * rpm)
    row("responses that were 429", f"{100 * throttled / max(1, ok_requests + throttled):.2f}%", "< 1%",
        throttled < 0.01 * (ok_requests + throttled))


def memory(n: int) -> None:
    print(f"\n[4] memory and expansion, {n}-row CSV manifest")
    import batchgen

    with tempfile.TemporaryDirectory() as d:
        m = csv_manifest(Path(d) / "big.csv", n)
        t = time.monotonic()
        count = batchgen.Manifest(m).validate()
        rate = count / (time.monotonic() - t)
        row("expansion + validation (rows/s)", f"{rate:.0f}", ">= 50000", rate >= 50000)
        p = child([PY, "-m", "batchgen", "plan", str(m), "--ledger", str(Path(d) / "none.db"), "--json"])
        row("plan peak RSS (MB)", f"{p['rss_mb']:.0f}", "< 250", p["rss_mb"] < 250)
        with Sim(render_min=0.5, render_max=1.0) as sim:
            r = batchgen_run(sim, m, Path(d), "--concurrency", "64", "--rpm", "0", stop_after=25)
        row("run peak RSS (MB, 25 s then SIGTERM)", f"{r['rss_mb']:.0f}", "< 250", r["rss_mb"] < 250)


def first_create(sim: Sim, m: Path, tmp: Path) -> float | None:
    """Seconds from starting `batchgen run` to the simulator's next accepted create."""
    before = sim.stats()["creates_accepted"]
    t = time.monotonic()
    p = subprocess.Popen([PY, "-m", "batchgen", "run", str(m), "--api-base", sim.url, "--ledger",
                          str(tmp / "l.db"), "--out", str(tmp / "out"), "-q", "--rpm", "0"],
                         env={**os.environ, "BATCHGEN_API_KEY": "sk-bench"}, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while time.monotonic() - t < 60:
        if sim.stats()["creates_accepted"] > before:
            first = time.monotonic() - t
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    return first


def resume(n: int) -> None:
    print(f"\n[5] resume a {n}-job ledger with 90% done; export it")
    import batchgen
    from sqlalchemy import text

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        m = csv_manifest(tmp / "big.csv", n)
        led = batchgen.Ledger(str(tmp / "l.db"))
        batchgen.prepare(led, batchgen.Manifest(m), batchgen.RunOptions(out_dir=tmp / "out"))
        with led.engine.begin() as c:
            c.execute(text("UPDATE jobs SET state='done', task_id='task-done-' || id, sha256=printf('%064d', id), "
                           "bytes=1000, output_path='/x/' || id || '.mp4', done_at=1.0 WHERE seq <= :k"),
                      {"k": int(n * 0.9)})
        led.close()
        with Sim(render_min=0, render_max=0) as sim:
            first = first_create(sim, m, tmp)
            # The same jobs from a manifest whose bytes changed (a blank line added): no earlier
            # run validated these inputs, so the whole manifest is expanded and recorded again.
            with open(m, "a") as f:
                f.write("\n")
            again = first_create(sim, m, tmp)
        row("run start → first create (s)", f"{first:.2f}" if first else "none", "< 3", first is not None and first < 3)
        row("  same, manifest edited: full re-validation (s)", f"{again:.2f}" if again else "none", "", None)
        e = child([PY, "-m", "batchgen", "export", "--ledger", str(tmp / "l.db"), "-o", str(tmp / "r.csv")])
        row(f"export of {n} rows (s)", f"{e['wall']:.2f}", "< 5", e["rc"] == 0 and e["wall"] < 5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the targets")
    ap.add_argument("--only", default="", help="comma list of scenarios: throughput,requests,rate,memory,resume")
    a = ap.parse_args()
    q = a.quick
    chosen = set(a.only.split(",")) if a.only else {"throughput", "requests", "rate", "memory", "resume"}
    print(f"batchgen benchmarks ({'quick' if q else 'full'}) on {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}")
    if "throughput" in chosen:
        throughput(2000 if q else 20000, 64)
    if "requests" in chosen:
        requests_per_job(100 if q else 400, 0.05)
    if "rate" in chosen:
        rate_limit(100 if q else 400, 1200)
    if "memory" in chosen:
        memory(10000 if q else 100000)
    if "resume" in chosen:
        resume(10000 if q else 100000)
    misses = [r for r in ROWS if r[3] == "MISS"]
    print(f"\n{len(ROWS)} figures, {len(misses)} target(s) missed" + (": " + "; ".join(r[0] for r in misses) if misses else ""))


if __name__ == "__main__":
    main()
