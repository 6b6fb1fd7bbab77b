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
import nights  # noqa: E402
import pictures  # noqa: E402
from planbench import plan_shapes  # noqa: E402


def batchgen_run(sim: Sim, manifest: Path, tmp: Path, *args: str, stop_after: float | None = None) -> dict[str, Any]:
    verify = [] if "--verify" in args else ["--no-verify"]  # stub files are not video
    r = child([PY, "-m", "batchgen", "run", str(manifest), "--api-base", sim.url, "--ledger", str(tmp / "l.db"),
               "--out", str(tmp / "out"), "-q", "--json", *verify, *args], stop_after=stop_after)
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
    # Target retired (issue 13): per-job Python work on a shared 2-core machine, far above any real
    # API's rate limit; printed for the record.
    row("batchgen / bare loop (for the record)", f"{bg / bare['jobs_per_s']:.2f}x", "", None)
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
        # no ledger named, none at ./batchgen.db: the whole expansion (a named missing ledger
        # would be refused before it, issue 28)
        p = child([PY, "-m", "batchgen", "plan", str(m), "--json"], env={"BATCHGEN_LEDGER": None}, cwd=Path(d))
        row("plan peak RSS (MB)", f"{p['rss_mb']:.0f}", "< 250", p["rc"] == 0 and p["rss_mb"] < 250)
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
            # Done as a run leaves them: downloaded and verified.
            c.execute(text("UPDATE jobs SET state='done', task_id='task-done-' || id, sha256=printf('%064d', id), "
                           "bytes=1000, output_path='/x/' || id || '.mp4', done_at=1.0, verify='ok', "
                           "verified_at=1.0 WHERE seq <= :k"),
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


REAL_KBPS = 4000  # a provider's 720p H.264 clip: ~3 MB for 6 s (the simulator's own encode is ~0.2 MB)


def makespan(n: int, conc: int, scale: float, *, noise: float = 0.15, verify_modes: tuple[bool, ...] = (False, True),
             title: str = "[6] makespan", habits: dict[str, Any] | None = None,
             poll_min: str | None = "0.05") -> None:
    """``noise``: the simulator's estimated_time is the render time × U(1-noise, 1+noise)
    (0: exact). ``habits``: simulator knobs of another API's ways (round-trip jitter, a create
    answered after its task started, how progress is told). ``poll_min``: the run's --poll-min
    (None: batchgen's default, as a user runs it). Clips are real H.264 MP4s of a real clip's
    size (``REAL_KBPS``). Prints makespan / lower bound, polls per job, ready → file and ready →
    next create latencies, the latter split into where its time goes."""
    what = "exact estimates" if noise == 0 else f"estimates noisy by ±{noise:.0%}"
    if (habits or {}).get("pending_s"):
        what += " (but for the wait in `pending`)"
    print(f"\n{title}: {n} jobs, concurrency {conc}, renders 3-8 s scaled x{scale}, {what}, no rate limit, "
          f"real video of a real clip's size ({REAL_KBPS} kbit/s), --poll-min {poll_min or 'default'}")
    import statistics

    import batchgen

    results = {}
    pm = ["--poll-min", poll_min] if poll_min else []
    for verify in verify_modes:
        with tempfile.TemporaryDirectory() as d, Sim(media="real", render_min=3 * scale, render_max=8 * scale,
                                                     seed=11, estimate_noise=noise, media_kbps=REAL_KBPS,
                                                     **(habits or {})) as sim:
            # Warm-up: the simulator encodes each clip shape (here 10 durations) once; let it do so
            # before the measured run instead of on the same two cores during it.
            (Path(d) / "warm").mkdir()
            batchgen_run(sim, csv_manifest(Path(d) / "warm" / "w.csv", 10), Path(d) / "warm", "--rpm", "0",
                         "--poll-min", "0.05")
            m = csv_manifest(Path(d) / "m.csv", n)
            flags = ["--verify", "--pictures"] if verify else ["--no-verify", "--no-pictures"]
            t_start = time.time()
            r = batchgen_run(sim, m, Path(d), "--concurrency", str(conc), "--rpm", "0", *pm, *flags)
            t_exit = time.time()
            truth = sim.truth()
            assert r["summary"].get("counts") == {"done": n}, r["summary"]
            with batchgen.operations.open_ledger(str(Path(d) / "l.db")) as led:
                done = {j["task_id"]: j for j in led.iter_export()}
            measured = [c for c in truth["creates"] if c["task_id"] in done]  # not the warm-up's
            renders = [c["ready_at"] - c["created"] for c in measured]  # a slot's time at the provider
            ready = {c["task_id"]: c["ready_at"] for c in measured}
            lat = sorted(done[t]["done_at"] - ready[t] for t in ready if t in done and done[t]["done_at"])
            bound = max(sum(renders) / conc, max(renders))
            # The best any client can do with these renders: none is known before its create is
            # answered, so each create takes the next render drawn; with no gap between a result
            # ready and the next create on its slot, the slots fill greedily in that order. Its
            # excess over the bound is the packing of the last renders (on 400 renders of U(3, 8)
            # on 40 slots: 1.06-1.09 for 90 % of the draws, 1.074 on average), not batchgen's.
            ideal = packed([c["ready_at"] - c["created"] for c in sorted(measured, key=lambda c: c["created"])], conc)
            cpu = None
            if verify:  # verification CPU per clip, measured on a sample of the delivered files
                sample = [row["output_path"] for row in list(done.values())[:40]]
                t0 = time.process_time()
                for path in sample:
                    batchgen.media.inspect(path, str(Path(d) / "p.jpg"), str(Path(d) / "s.jpg"))
                cpu = (time.process_time() - t0) / len(sample)
            polls = r["summary"]["polls"] / n
            # A freed slot's refill (issue 31 part 4): the i-th result ready frees a slot, whose next
            # create is the (concurrency + i)-th to reach the API (``received``: before any latency
            # or jitter the API adds). Split in means (each sums over the same slots): the API's
            # detection (ready → the first poll that finds it over), the answer's way back to
            # batchgen (→ result_at, the poll's answer), and batchgen's refill plus the create's
            # way out (→ the next create received).
            got = sorted(c["received"] for c in measured)
            readies = sorted(ready.values())
            refill = [max(0.0, c - rd) for rd, c in zip(readies, got[conc:])]
            k = len(refill)
            first = [c for c in sorted(measured, key=lambda c: c["ready_at"])][:k]
            seen = [c["seen_done"] - c["ready_at"] for c in first if c["seen_done"]]
            back = [done[c["task_id"]]["result_at"] - c["seen_done"] for c in first
                    if c["seen_done"] and done[c["task_id"]].get("result_at")]
            parts = (statistics.fmean(seen) if seen else float("nan"), statistics.fmean(back) if back else float("nan"))
            edges = (min(got) - t_start, t_exit - max(j["done_at"] for j in done.values()))
            results[verify] = (r["summary"]["elapsed_s"], bound, lat, cpu, (polls, refill, parts, edges, ideal))
    exact = noise == 0 and not (habits or {}).get("pending_s")  # a wait in `pending` is not in the estimate
    for verify, (span, bound, lat, cpu, (polls, refill, parts, edges, ideal)) in results.items():
        label = ("verification + pictures on" if verify else "verification off") + (", exact" if exact else "")
        goal = 1.08 if exact else 1.10
        row(f"makespan / lower bound ({label})", f"{span / bound:.3f}", f"<= {goal}", span / bound <= goal)
        row("  of which the renders' packing: ideal list schedule / lower bound", f"{ideal / bound:.3f}", "", None)
        row("  the rest (start, detection, refills, tail): makespan / ideal", f"{span / ideal:.3f}", "", None)
        pgoal = 1.2 if exact else 2.0
        row(f"  polls per job ({label})", f"{polls:.2f}", f"<= {pgoal}", polls <= pgoal)
        if refill:
            refill.sort()
            mean = sum(refill) / len(refill)
            # Issue 31's 50 ms is asked of an API that keeps its estimates; where they do not hold
            # (noisy, a wait in `pending`) detection is bounded by what the polls can know: shown, no goal.
            row(f"  result ready -> next create received, mean / p50 / p90 ({label})",
                f"{mean * 1000:.0f} / {refill[len(refill) // 2] * 1000:.0f} / "
                f"{refill[int(0.9 * (len(refill) - 1))] * 1000:.0f} ms", "mean <= 50 ms" if exact else "",
                mean <= 0.05 if exact else None)
            row("    of which: ready -> first poll finding it done (mean)", f"{parts[0] * 1000:.0f} ms", "", None)
            row("    of which: that poll's answer -> batchgen (mean)", f"{parts[1] * 1000:.0f} ms", "", None)
            row("    of which: answer -> next create received (mean)",
                f"{(mean - parts[0] - parts[1]) * 1000:.0f} ms", "", None)
        p50, p95 = statistics.median(lat), lat[int(0.95 * (len(lat) - 1))]
        row(f"  result ready -> file in place, p50 ({label})", f"{p50:.2f} s", "<= 0.3 s", p50 <= 0.3)
        row(f"  result ready -> file in place, p95 ({label})", f"{p95:.2f} s", "<= 0.3 s" if exact else "<= 0.8 s",
            p95 <= (0.3 if exact else 0.8))
        row(f"  process start -> first create received / last file -> exit ({label})",
            f"{edges[0]:.2f} / {edges[1]:.2f} s", "", None)
        if cpu is not None:
            row("  verification CPU per clip (inspect + poster + sheet)", f"{cpu * 1000:.0f} ms", "", None)
    if False in results and True in results:
        off, on = results[False][0], results[True][0]
        row("makespan, verification on / off", f"{on / off:.3f}", "<= 1.05", on / off <= 1.05)


def packed(renders: list[float], slots: int) -> float:
    """The makespan of ``renders`` started in this order on ``slots`` slots, each on the first
    slot to free, with no time between one render's end and the next one's start."""
    import heapq

    free = [0.0] * slots
    for r in renders:
        heapq.heappush(free, heapq.heappop(free) + r)
    return max(free)


def ratebound(n: int, conc: int, limit_rps: float, *, told: bool, rpm: str = "auto", scale: float = 1.0,
              warmup: float = 120.0) -> None:
    """Issue 31, parts 1 and 2: the API's request rate binds. The simulator refuses (429 +
    Retry-After) beyond ``limit_rps`` requests a second on creates and polls; renders 4-8 s,
    estimated_time within ±15 %. ``told``: batchgen is given the limit (--rpm); else ``rpm``
    (auto: it learns it; a number: a wrong guess). Physical limits: 2 requests a clip (a create, a poll), the rate
    limit, so the lower bound is 2 × jobs ÷ rate (plus the last render, which the bound ignores)."""
    name = "ratebound" if told else ("ratebound-unknown" if rpm == "auto" else f"ratebound-unknown, told {rpm}")
    rpm = f"{limit_rps * 60:g}" if told else rpm
    print(f"\n[{name}] {n} jobs, concurrency {conc}, server limit {limit_rps:g} req/s, --rpm {rpm}, "
          f"renders 4-8 s scaled x{scale}, estimates ±15 %")
    with tempfile.TemporaryDirectory() as d, Sim(render_min=4 * scale, render_max=8 * scale, estimate_noise=0.15,
                                                 rpm_limit=limit_rps * 60, seed=31) as sim:
        m = csv_manifest(Path(d) / "m.csv", n)
        r = batchgen_run(sim, m, Path(d), "--concurrency", str(conc), "--rpm", rpm, "--poll-min", "0.5")
        st = sim.stats()
    s = r["summary"]
    assert s.get("counts") == {"done": n}, s
    ok = st["creates_accepted"] + st["polls"]
    refused = st["status"].get("429", 0)
    sent = ok + refused
    bound = 2 * n / limit_rps
    span = s["elapsed_s"]
    learning = not told and rpm == "auto"
    goal: float | None = 1.05 if told else None  # learning: the goals are after the warm-up
    row(f"makespan / (2 x jobs / rate) [{name}]", f"{span / bound:.3f}", f"<= {goal}" if goal else "",
        span / bound <= goal if goal else None)
    row(f"  requests per job [{name}] (physical minimum 2)", f"{sent / n:.2f}", "<= 2.05" if told else "",
        sent / n <= 2.05 if told else None)
    pct = 100 * refused / max(1, sent)
    row(f"  responses that were 429 [{name}]", f"{pct:.2f}%", "<= 1%" if told else "", pct <= 1.0 if told else None)
    if not learning:
        return
    refused_s = {int(k): v for k, v in st["throttled_per_second"].items()}
    per_s = {int(k): v - refused_s.get(int(k), 0) for k, v in st["per_second"].items()}  # answered 2xx
    t0, t1 = min(per_s), max(per_s)
    if t1 - t0 > warmup + 10:
        after = [per_s.get(t, 0) for t in range(t0 + int(warmup), t1)]  # whole seconds after the warm-up
        rate = sum(after) / len(after)
        late = sum(refused_s.get(t, 0) for t in range(t0 + int(warmup), t1 + 1))
        row(f"  accepted rate / limit after a {warmup:.0f} s warm-up [{name}]", f"{rate / limit_rps:.2f}",
            ">= 0.90", rate >= 0.9 * limit_rps)
        row(f"  429s after the warm-up [{name}]", f"{100 * late / max(1, sum(after) + late):.2f}%", "<= 2%",
            late <= 0.02 * (sum(after) + late))


def report_scale(n: int) -> None:
    print(f"\n[7] HTML report of {n} jobs: size, time to first paint and filtering in headless Chromium")
    import shutil

    import batchgen
    from sqlalchemy import text

    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        m = csv_manifest(tmp / "big.csv", n)
        led = batchgen.Ledger(str(tmp / "l.db"))
        batchgen.prepare(led, batchgen.Manifest(m), batchgen.RunOptions(out_dir=tmp / "out"))
        with led.engine.begin() as c:  # a finished night: every job done and verified, some not as asked
            c.execute(text(
                "UPDATE jobs SET state='done', task_id='task-' || id, sha256=printf('%064d', id), bytes=150000, "
                "output_path=:out || output, done_at=1.0, submitted_at=0.0, completed_at=40.0 + (id % 30), polls=2, "
                "credits=8.4, verify=CASE WHEN id % 50 = 0 THEN 'mismatch' ELSE 'ok' END, "
                "verify_detail=CASE WHEN id % 50 = 0 THEN 'duration 3.00s, asked 6s' END, m_duration=6.0, "
                "m_width=854, m_height=480, m_fps=24, m_codec='h264', m_audio=1, poster='p', sheet='s'"),
                {"out": str(tmp / "out") + "/"})
        led.close()
        out = tmp / "report.html"
        t = time.monotonic()
        batchgen.operations.report(str(tmp / "l.db"), out)
        built = time.monotonic() - t
        size = out.stat().st_size / 1e6
        row("report size (MB)", f"{size:.1f}", "<= 10", size <= 10)
        row("report written in (s)", f"{built:.1f}", "", None)
        if chrome is None:
            row("first paint in headless Chromium", "chromium not installed", "<= 3 s", False)
            return

        def load(url: str) -> tuple[float, str]:
            t0 = time.monotonic()
            page = subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                   "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                   "--disable-sync", f"--user-data-dir={tmp / 'chrome'}", "--dump-dom",
                                   "--virtual-time-budget=2000", url], capture_output=True, text=True, timeout=300).stdout
            return time.monotonic() - t0, page

        # The page's own clock is virtual under --virtual-time-budget, so time it from outside:
        # Chromium loading the report minus Chromium loading a trivial page (median of three).
        blank = tmp / "blank.html"
        blank.write_text("<!doctype html><title>x</title><p>x")
        base = sorted(load(blank.as_uri())[0] for _ in range(3))[1]
        runs = [load(out.as_uri()) for _ in range(3)]
        paint = sorted(t for t, _ in runs)[1] - base
        rendered = all('data-ready-ms' in p and p.count("<tr data-state=") == 50 for _, p in runs)
        row("time to first paint: load, inflate, parse, render 50 rows (wall)", f"{paint:.2f} s", "<= 3 s",
            rendered and paint <= 3)
        filtered = sorted(load(out.as_uri() + "#q=clip0999")[0] for _ in range(3))[1] - base
        row("  same with a text filter over every row (wall)", f"{filtered:.2f} s",
            f"<= {paint + 0.2:.2f} s", filtered <= paint + 0.2)


def ledger_structures(path: Path, top: int = 8) -> list[tuple[str, int]]:
    """The largest tables and indexes of a SQLite ledger, in bytes (SQLite's dbstat)."""
    import sqlite3

    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT ?", (top,)).fetchall()
    finally:
        c.close()


def million(n: int) -> None:
    """Issue 21's flat-memory figures: plan, run (zero render, no verification), resume after
    adding 1% rows, export and report of an n-job ledger; time, peak RSS, ledger bytes per job."""
    print(f"\n[8] million: {n:,} jobs — plan, run (zero render, --no-verify), resume +1%, export, report")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        m = csv_manifest(tmp / "m.csv", n)
        led = tmp / "l.db"
        # plan before the first run: no ledger named, none at ./batchgen.db (a named one must exist)
        nowhere: dict[str, str | None] = {"BATCHGEN_LEDGER": None}

        def ledger_bytes() -> int:
            return sum(p.stat().st_size for p in tmp.glob("l.db*") if p.suffix != ".lock")

        plan_shapes(tmp, n, 3, row)  # the seed's model and a matrix beside the easy shape
        p = child([PY, "-m", "batchgen", "plan", str(m), "--json"], env=nowhere, cwd=tmp)
        full = n >= 1_000_000  # the time goal is for a million rows; smaller runs print it only
        row(f"plan of {n:,} rows: wall (s)", f"{p['wall']:.1f}", "<= 15 at 1M",
            (p["rc"] == 0 and p["wall"] <= 15) if full else None)
        row("  plan CPU, user + system (s; wall on a loaded machine is more)", f"{p['cpu']:.1f}", "", None)
        row("  plan peak RSS (MB)", f"{p['rss_mb']:.0f}", "<= 150", p["rc"] == 0 and p["rss_mb"] <= 150)
        knobs = {"render_min": 0, "render_max": 0, "file_min": 2048, "file_max": 4096}
        with Sim(**knobs) as sim:
            r = batchgen_run(sim, m, tmp, "--concurrency", "64", "--rpm", "0", "--poll-min", "0.01")
            done = r["summary"].get("counts", {}).get("done", 0)
            per_job = ledger_bytes() / max(1, done)
            row(f"run of {n:,} jobs: wall (s) / jobs per s", f"{r['wall']:.0f} / {done / r['wall']:.0f}", "",
                None if done == n else False)
            row("  run peak RSS (MB)", f"{r['rss_mb']:.0f}", "<= 200", done == n and r["rss_mb"] <= 200)
            row("  ledger bytes per job", f"{per_job:.0f}", "<= 1000", done == n and per_job <= 1000)
            for name, size in ledger_structures(led):  # where the bytes are
                row(f"    {name} (bytes per job)", f"{size / max(1, done):.0f}", "", None)
            extra = n // 100
            with open(m, "a") as f:  # 1% more rows: the manifest is expanded and recorded again
                for i in range(n, n + extra):
                    f.write(f"clip{i:06d},grok-imagine-text-to-video,bench clip {i} of a lighthouse at dusk,"
                            f"{1 + i % 10}\n")
            again = batchgen_run(sim, m, tmp, "--concurrency", "64", "--rpm", "0", "--poll-min", "0.01")
        counts = again["summary"].get("counts", {})
        row(f"resume with {extra:,} rows added: wall (s)", f"{again['wall']:.0f}", "",
            None if counts == {"done": n + extra} else False)
        row("  resume peak RSS (MB)", f"{again['rss_mb']:.0f}", "<= 200", again["rss_mb"] <= 200)
        row("  ledger bytes per job after resume", f"{ledger_bytes() / (n + extra):.0f}", "<= 1000",
            ledger_bytes() / (n + extra) <= 1000)
        for what, out in (("export", "r.csv"), ("report", "report.html")):
            e = child([PY, "-m", "batchgen", what, "--ledger", str(led), "-o", str(tmp / out)])
            size = (tmp / out).stat().st_size / 1e6 if e["rc"] == 0 else 0.0
            row(f"{what} of {n + extra:,} jobs: wall (s) / peak RSS (MB) / size (MB)",
                f"{e['wall']:.0f} / {e['rss_mb']:.0f} / {size:.0f}", "RSS <= 200", e["rc"] == 0 and e["rss_mb"] <= 200)


def startup(reps: int) -> None:
    """Issue 28: the commands people type all day, as whole processes (interpreter start-up,
    imports, the command's work): median wall time of ``reps`` runs against the targets, and the
    median CPU time (user + system), which a loaded machine inflates less than the wall clock."""
    print(f"\n[9] start-up of whole processes, median of {reps}")
    # As installed: a wheel's modules are byte-compiled at install. With PYTHONDONTWRITEBYTECODE
    # (set on some machines) a checkout would compile every module from source on every start.
    no_pyc = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        _startup(reps)
    finally:
        if no_pyc is not None:
            os.environ["PYTHONDONTWRITEBYTECODE"] = no_pyc


def _startup(reps: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        m = csv_manifest(tmp / "m.csv", 20)
        # a small ledger: one simulated run of 20 jobs (stub clips)
        made = child([PY, "-m", "batchgen", "run", str(m), "--simulate", "--sim-set", "media=stub", "--sim-set",
                      "render_min=0", "--sim-set", "render_max=0", "--ledger", str(tmp / "l.db"), "--out",
                      str(tmp / "out"), "-q", "--no-verify", "--no-pictures", "--poll-min", "0.01", "--rpm", "0"])
        assert made["rc"] == 0, made
        cases = [("python -c pass (the interpreter alone)", [PY, "-c", "pass"], None),
                 ("batchgen --help", [PY, "-m", "batchgen", "--help"], 0.15),
                 ("batchgen models", [PY, "-m", "batchgen", "models"], 0.15),
                 ("batchgen status (20-job ledger)", [PY, "-m", "batchgen", "status", "--ledger", str(tmp / "l.db")],
                  0.3),
                 ("batchgen plan (20-row manifest, 20-job ledger)",
                  [PY, "-m", "batchgen", "plan", str(m), "--ledger", str(tmp / "l.db")], None)]
        for name, cmd, target in cases:
            child(cmd)  # warm the file cache and the bytecode
            runs = [child(cmd) for _ in range(reps)]
            assert all(r["rc"] == 0 for r in runs), (name, runs[0])
            wall = sorted(r["wall"] for r in runs)[reps // 2]
            cpu = sorted(r["cpu"] for r in runs)[reps // 2]
            row(f"{name}: wall / CPU (s)", f"{wall:.3f} / {cpu:.3f}", f"<= {target}" if target else "",
                None if target is None else wall <= target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the targets")
    ap.add_argument("--only", default="",
                    help="comma list of scenarios: throughput,requests,rate,memory,resume,makespan,makespan-exact,"
                         "makespan-habits,makespan-pictures,ratebound,ratebound-unknown,report,startup,breaker,forecast; "
                         "million (issue 21's flat-memory figures, ~1 h at full size) and million-plan (its plan "
                         "step only, in four shapes: text-to-video, the seed's reference-to-video, a two-model "
                         "matrix, reference-to-video with quoted prompts; ~10 min) run only when named")
    ap.add_argument("--million-rows", type=int, default=1_000_000,
                    help="jobs of the million scenario (try 100000 first)")
    ap.add_argument("--makespan-scale", type=float, default=1.0,
                    help="scale of the makespan scenario's 3-8 s renders (1.0: as specified, ~6 min for both runs; "
                         "a smaller scale makes the fixed per-job cost weigh more)")
    ap.add_argument("--forecast-history", type=int, default=30,
                    help="clips of each model in the forecast scenario's history night (30: a short history)")
    ap.add_argument("--forecast-seeds", default="0,1,2",
                    help="simulator seeds of the forecast scenario, comma-separated (each one draw of render times)")
    ap.add_argument("--forecast-distributions", default="",
                    help="only the forecast scenario's distributions whose name contains this text (e.g. skewed)")
    a = ap.parse_args()
    q = a.quick
    chosen = set(a.only.split(",")) if a.only else {"throughput", "requests", "rate", "memory", "resume", "makespan",
                                                    "makespan-exact", "makespan-habits", "ratebound", "ratebound-unknown",
                                                    "report", "startup", "breaker", "forecast"}
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
    if "makespan" in chosen:
        makespan(200 if q else 2000, 64, 0.25 if q else a.makespan_scale)
    if "makespan-exact" in chosen:  # an API whose estimated_time is exact (issue 21's figures)
        makespan(100 if q else 400, 40, 0.25 if q else a.makespan_scale, noise=0.0, verify_modes=(True,),
                 title="[6b] makespan-exact")
    if "makespan-habits" in chosen:  # issue 31 part 4: exact estimates, another API's habits, default --poll-min
        makespan(100 if q else 400, 40, 0.25 if q else a.makespan_scale, noise=0.0, verify_modes=(True,),
                 title="[6c] makespan-habits (jitter 0.05 s, create answered 0.05 s after its task started, "
                       "no progress told)", habits={"jitter": 0.05, "latency_after": 0.05, "progress": "none"},
                 poll_min=None)
        # The same API's other ways: a task waits in `pending` (0.15-0.45 s, not in its estimate, so
        # the estimates are no longer exact) and progress comes in steps of 25.
        makespan(100 if q else 400, 40, 0.25 if q else a.makespan_scale, noise=0.0, verify_modes=(True,),
                 title="[6d] makespan-habits, pending (0.3 s x U(0.5, 1.5) in `pending`, coarse progress, jitter "
                       "0.02 s)", habits={"jitter": 0.02, "pending_s": 0.3, "progress": "coarse"}, poll_min=None)
    if "makespan-pictures" in chosen:  # issue 31 part 4: real one-keyframe clips, pictures on / off
        pictures.night(batchgen_run, row, 100 if q else 300, 40)
    if "ratebound" in chosen:  # issue 31 part 1: the limit told
        ratebound(100 if q else 300, 200, 10.0, told=True, scale=0.5 if q else 1.0)
    if "ratebound-unknown" in chosen:  # issue 31 part 2: the limit learned (--rpm auto), and told wrong
        ratebound(100 if q else 300, 200, 5.0, told=False, rpm="600", scale=0.5 if q else 1.0)
        ratebound(150 if q else 600, 200, 5.0, told=False, scale=0.5 if q else 1.0, warmup=30 if q else 120)
    if "report" in chosen:
        report_scale(10000 if q else 100000)
    if "startup" in chosen:
        startup(5 if q else 15)
    if "breaker" in chosen:  # issue 30: one model of three failing 100 % from minute 2
        nights.breaker(batchgen_run, row, 40 if q else 150, 30.0 if q else 120.0, (3.0, 6.0), 30.0 if q else 60.0)
    if "forecast" in chosen:  # issue 30: plan's forecast against the night it forecast
        nights.forecast(batchgen_run, row, 10 if q else a.forecast_history, 20 if q else 60, 12,
                        (0,) if q else tuple(int(x) for x in a.forecast_seeds.split(",")), a.forecast_distributions)
    if "million" in chosen:
        million(10000 if q else a.million_rows)
    if "million-plan" in chosen:  # only million's plan step, in four shapes (minutes, not an hour)
        with tempfile.TemporaryDirectory() as d:
            plan_shapes(Path(d), 10000 if q else a.million_rows, 3, row)
    misses = [r for r in ROWS if r[3] == "MISS"]
    print(f"\n{len(ROWS)} figures, {len(misses)} target(s) missed" + (": " + "; ".join(r[0] for r in misses) if misses else ""))


if __name__ == "__main__":
    main()
