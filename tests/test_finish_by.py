"""Issue 30: `run --finish-by` — a night with a deadline. The deadline arithmetic (local time,
midnight, daylight saving), the per-model cut-off from the ledger's history, and whole nights on
the simulator: the jobs that cannot finish in time stay queued (not paid, not failed) and are
named, the tasks in flight are collected past the deadline, `status` and the notification say
where the night stands, and the next night picks the queued jobs up.

No assertion here depends on the machine's speed: the deadlines are seconds away while the
renders that must miss them take many times longer, and the renders that must fit take a
fraction of a second."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from batchgen import deadline, forecast
from batchgen.deadline import Deadline, outlook, parse, verdict
from batchgen.notify import compose
from batchgen.progress import Display, Snapshot, line
from conftest import migrated_down, run_args, run_cli, wait_for

A, B = "grok-imagine-text-to-video", "happyhorse-1.0-text-to-video"


@pytest.fixture
def berlin(monkeypatch):
    """The machine's local time is Europe/Berlin (CET/CEST) for this test."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _local(*args: int) -> float:
    return datetime(*args).timestamp()  # naive: the machine's local time


# ---------------------------------------------------------------------------- the arithmetic
def test_a_time_of_day_is_the_next_one_across_midnight(berlin):
    start = _local(2026, 12, 6, 23, 0)
    assert parse("07:00", start) == _local(2026, 12, 7, 7, 0)  # tomorrow morning
    assert parse("23:30", start) == _local(2026, 12, 6, 23, 30)  # later tonight
    assert parse("23:00", start) == _local(2026, 12, 7, 23, 0)  # now is not ahead: tomorrow's
    assert parse(" 7:05:30 ", start) == _local(2026, 12, 7, 7, 5, 30)
    assert parse("00:00", start) == _local(2026, 12, 7, 0, 0)


def test_daylight_saving_nights_are_read_in_local_time(berlin):
    # The night the clocks go forward (29 March 2026, 02:00 → 03:00): 23:00 to 07:00 is 7 h.
    spring = _local(2026, 3, 28, 23, 0)
    assert parse("07:00", spring) - spring == 7 * 3600
    gap = parse("02:30", spring)  # does not exist that night: some time after now, no crash
    assert spring < gap <= spring + 5 * 3600
    # The night they go back (25 October 2026, 03:00 → 02:00): 23:00 to 07:00 is 9 h.
    autumn = _local(2026, 10, 24, 23, 0)
    assert parse("07:00", autumn) - autumn == 9 * 3600
    twice = parse("02:30", autumn)  # happens twice: one of them, ahead
    assert autumn < twice < autumn + 5 * 3600


def test_an_iso_date_time_is_that_moment_local_unless_it_names_its_offset(berlin):
    now = _local(2026, 12, 6, 20, 0)
    assert parse("2026-12-07T07:00", now) == _local(2026, 12, 7, 7, 0)
    assert parse("2026-12-07 06:00:00+00:00", now) == _local(2026, 12, 7, 7, 0)  # 06:00 UTC is 07:00 CET
    assert parse("2026-12-07T06:00Z", now) == _local(2026, 12, 7, 7, 0)


@pytest.mark.parametrize("bad, says", [
    ("25:00", "not a time of day"), ("07:60", "not a time of day"), ("7", "neither a time of day"),
    ("tomorrow", "neither a time of day"), ("", "empty"), ("2026-12-07", "a date without a time"),
    ("2026-12-06T19:00", "has already passed"), ("2026-12-06T20:00", "has already passed"),
])
def test_nonsense_is_refused_saying_what_is_accepted(berlin, bad, says):
    with pytest.raises(ValueError) as e:
        parse(bad, _local(2026, 12, 6, 20, 0))
    assert says in str(e.value) and "07:00" in str(e.value)


def test_a_model_starts_only_while_one_clip_of_it_fits_before_the_deadline():
    clock = [1000.0]
    d = Deadline(1100.0, {A: 30.0, B: 90.0}, wall=lambda: clock[0], mono=lambda: clock[0])
    assert d.allows(A) and d.allows(B)
    clock[0] = 1015.0  # B's clip would end at 1105: not started any more
    assert d.allows(A) and not d.allows(B) and d.cut == {B}
    clock[0] = 1071.0
    assert not d.allows(A) and d.past([A, B])
    clock[0] = 900.0  # the clock stepped back (NTP): a model cut stays cut tonight
    assert not d.allows(B)


def test_the_cut_off_comes_from_the_ledgers_history_or_a_guess():
    history = {A: {"renders": [10.0] * 9 + [40.0], "polls": 3.0, "fetch": 2.0, "check": 1.5}}
    seconds, seen = forecast.clip_seconds(A, history)
    assert seen and 13.5 < seconds <= 43.5  # 9 in 10 within, plus the download and the check
    guess, seen = forecast.clip_seconds(B, history)
    assert not seen and guess > seconds  # never rendered here: the forecast's guess


def test_the_outlook_says_on_track_or_behind():
    now = _local(2026, 12, 7, 5, 0)
    at = now + 2 * 3600
    assert outlook(at, now, remaining=100, queued=90, eta_s=3600) == (
        f"on track: ends ≈ {deadline.stamp(now + 3600, now)}, deadline {deadline.stamp(at, now)}")
    behind = outlook(at, now, remaining=100, queued=90, eta_s=4 * 3600)
    assert behind.startswith("behind: ≈ 50 job(s) will be left for tomorrow")
    assert "nothing left" in outlook(at, now, remaining=0, queued=0, eta_s=None)
    assert "every job has started" in outlook(at, now, remaining=5, queued=0, eta_s=3 * 3600)
    assert "no new job starts tonight; 7 job(s) left for the next night, 2 in flight still collected" in \
        outlook(at, now, remaining=9, queued=7, eta_s=None, cut_off=True)
    snap = Snapshot(states={"queued": 3}, elapsed=5, deadline=behind)
    assert behind in line(snap) and snap.as_dict()["deadline"] == behind
    assert behind in Display._table(snap).caption  # the live table on a terminal


def test_the_summary_names_the_jobs_left_and_cuts_a_long_list():
    jobs = [{"row": f"m.csv row {i + 2}", "output": f"shot{i}.mp4", "name": f"shot{i}", "model": B} for i in range(20)]
    d = deadline.summary(1000.0, "--finish-by", [B], 35, jobs, 1200.0)
    lines = verdict(d, show=10)
    assert "35 job(s) left queued for the next night" in lines[0] and "after the deadline" in lines[0]
    assert lines[1] == "  left for tomorrow: m.csv row 2 → shot0.mp4" and len(lines) == 12
    assert "and 25 more" in lines[-1]
    on_time = verdict(deadline.summary(1000.0, "--finish-by", [], 0, [], 900.0))
    assert len(on_time) == 1 and "on track" in on_time[0] and "before the deadline" in on_time[0]


# ---------------------------------------------------------------------------- whole nights
def _manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("name,model,prompt,duration\n" + "".join(f"{n},{m},clip {n},{1 if m == A else 3}\n" for n, m in rows))
    return path


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at).isoformat(timespec="seconds")


def _jobs(db: Path) -> dict[str, dict]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return {r["name"]: dict(r) for r in c.execute("SELECT name, model, state, task_id, submitted_at, done_at, "
                                                         "attempts FROM jobs")}


@pytest.mark.slow  # ~15 s: three nights with renders long enough to miss a deadline
def test_finish_by_on_the_simulator_one_night_then_the_next(sim_factory, tmp_path):
    # Night 1: the ledger learns that A renders in a fraction of a second.
    sim = sim_factory()
    first = _manifest(tmp_path / "first.csv", [(f"seen{i}", A) for i in range(6)])
    r = run_cli(run_args(sim, first, tmp_path, "--json", "--no-verify"))
    assert r.exit_code == 0, r.output
    # Night 2: A now takes 14 s a clip (the history does not know), B was never rendered here.
    # Two slots: two A jobs start at once (by the history one fits easily before the deadline,
    # 6 s away: the in-process run, its imports done by night 1, creates them within the first
    # second), and are collected long after it; the other A jobs would wait for a slot until
    # after the deadline; B's guessed clip never fits. Nothing starts after the deadline. The
    # status is read a second past the deadline, 7 s before the two clips can be ready.
    sim.set(model_render=f"{A}=uniform:14:14")
    night = _manifest(tmp_path / "night.csv", [(f"a{i}", A) for i in range(6)] + [(f"b{i}", B) for i in range(3)])
    at = time.time() + 6
    status_seen: list[dict] = []

    def watch_status() -> None:  # while the two clips render past the deadline
        wait_for(lambda: time.time() > at + 1, 30)
        status_seen.append(json.loads(run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout))
        status_seen.append({"text": run_cli(["status", "--ledger", str(tmp_path / "l.db")]).output})

    watcher = threading.Thread(target=watch_status)
    watcher.start()
    r = run_cli(run_args(sim, night, tmp_path, "--json", "--no-verify", "--concurrency", "2", "--finish-by", _iso(at),
                         "--progress-every", "1"))
    watcher.join()
    assert r.exit_code == 3, r.output
    summary = json.loads(r.stdout)
    jobs = _jobs(tmp_path / "l.db")
    started = sorted(n for n, j in jobs.items() if j["task_id"] and n[0] in "ab")
    assert started == ["a0", "a1"]  # highest priority first, then manifest order: the first two
    assert all(j["submitted_at"] <= at for j in jobs.values() if j["submitted_at"])  # none paid after the cut-off
    assert all(jobs[n]["state"] == "done" and jobs[n]["done_at"] > at for n in started)  # collected past it
    left = sorted(n for n, j in jobs.items() if j["state"] == "queued")
    assert left == ["a2", "a3", "a4", "a5", "b0", "b1", "b2"]
    assert all(jobs[n]["attempts"] == 0 for n in left)  # never created: not paid, not failed
    d = summary["deadline"]
    assert d["left"] == 7 and sorted(d["models_cut"]) == [A, B] and not d["on_time"]
    assert [j["output"] for j in d["left_jobs"]][:3] == ["a2.mp4", "a3.mp4", "a4.mp4"]
    assert d["left_jobs"][0]["row"] == "row 3 (line 4)"
    assert "finish-by" in summary["reason"] and "7 job(s) could not be rendered" in summary["reason"]
    title, body, _ = compose(summary, ledger="l.db")
    assert "exit 3" in title and "7 job(s) left queued for the next night" in body
    assert "left for tomorrow: row 3 (line 4) → a2.mp4" in body
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("batchgen: ")]  # the live display, off a terminal
    assert any("no new job starts tonight; 7 job(s) left for the next night" in ln for ln in progress), progress
    (run,) = [x for x in status_seen[0]["runs"] if x["status"] == "running"]
    assert run["finish_by"] == pytest.approx(at, abs=1)
    assert "no new job starts tonight; 7 job(s) left for the next night, 2 in flight still collected" in run["deadline"]
    assert f"run {run['id']}: deadline " in status_seen[1]["text"]  # and in the table's words
    # Night 3, no deadline: the queued jobs are picked up, nothing done is paid for again.
    sim.set(model_render="")
    creates = len(sim.truth()["creates"])
    r = run_cli(run_args(sim, night, tmp_path, "--json", "--no-verify"))
    assert r.exit_code == 0, r.output
    assert {j["state"] for j in _jobs(tmp_path / "l.db").values()} == {"done"}
    assert len(sim.truth()["creates"]) == creates + 7


def test_a_deadline_that_leaves_nothing_out_is_on_track(sim_factory, tmp_path):
    sim = sim_factory()
    m = _manifest(tmp_path / "m.csv", [(f"s{i}", A) for i in range(5)])
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0  # history, each clip verified
    from batchgen.ledger import Ledger

    led = Ledger(str(tmp_path / "l.db"))
    try:
        seen = led.render_history([A])[A]
    finally:
        led.close()
    assert seen["fetch"] is not None and seen["check"] is not None  # the cut-off counts the check too
    m2 = _manifest(tmp_path / "m2.csv", [(f"t{i}", A) for i in range(5)])
    r = run_cli(run_args(sim, m2, tmp_path, "--json", "--no-verify", "--finish-by", _iso(time.time() + 3600)))
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["deadline"]
    assert d["left"] == 0 and d["on_time"] and "on track" in verdict(d)[0]


@pytest.mark.parametrize("value", ["25:00", "2020-01-01T07:00", "soon"])
def test_a_bad_finish_by_is_refused_before_anything_is_recorded(sim_factory, tmp_path, value):
    sim = sim_factory()
    m = _manifest(tmp_path / "m.csv", [("s0", A)])
    r = run_cli(run_args(sim, m, tmp_path, "--finish-by", value))
    assert r.exit_code == 2 and "--finish-by" in r.output
    assert not (tmp_path / "l.db").exists() and not sim.truth()["creates"]


# ---------------------------------------------------------------------------- a fleet
ROOT = Path(__file__).resolve().parent.parent


def _worker(manifest: Path, pg_url: str, out: Path, api: str, log: Path, *extra: str):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "batchgen", "run", str(manifest), "--ledger", pg_url, "--out", str(out),
           "--api-base", api, "--rpm", "0", "--concurrency", "2", "--poll-min", "0.05", "--heartbeat", "0.5",
           "--lease-timeout", "10", "-q", "--json", "--no-verify", *extra]  # no worker dies here: a lease
    # of 10 s, not 3, so that on a loaded machine a live worker is not taken for dead
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            env={**os.environ, "BATCHGEN_API_KEY": "sk-fleet"})


def _fleet_deadline(pg_url: str) -> tuple[float | None, int]:
    """The earliest deadline the live workers hold, and how many hold one (joined or their own)."""
    from batchgen.ledger import make_engine
    from sqlalchemy import text

    engine = make_engine(pg_url)
    try:
        with engine.connect() as c:
            at, n = c.execute(text("SELECT min(finish_by), count(finish_by) FROM runs WHERE status = 'running'")).one()
            return at, int(n)
    except Exception:  # noqa: BLE001 — the first worker has not created the tables yet
        return None, 0
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_hold_one_deadline_through_the_ledger(pg_url, sim_factory, tmp_path):
    """One worker is given --finish-by, two join later without it: none of the three starts a
    job the fleet's deadline excludes (B, never rendered: its guessed clip cannot fit), every one
    says it joined, ends with exit 3 naming what was left, and the next night renders it."""
    from batchgen.ledger import Ledger

    sim = sim_factory(media="stub")
    seen = _manifest(tmp_path / "seen.csv", [(f"seen{i}", A) for i in range(6)])
    r = run_cli(["run", str(seen), "--api-base", sim.url, "--ledger", pg_url, "--out", str(tmp_path / "out"),
                 "--rpm", "0", "--poll-min", "0.05", "--no-verify", "-q"])
    assert r.exit_code == 0, r.output  # the ledger's history of A: a fraction of a second a clip
    # Tonight A takes 0.5-1 s a clip (the history says less: every one fits). The others join
    # a fleet that is still working: until all three hold the deadline, the simulator holds its
    # answers to creates (latency_after, released by that event: tests/test_fleet_night.py's
    # hold), so the first worker cannot do the night alone however late the others come up,
    # then 30 clips on the fleet's six slots. The hold ends 15 s before the deadline at the
    # latest: a create sent before it is never recorded after it (its task id comes with the
    # answer), and the first worker alone would still need some 11 s more for its 30 clips.
    sim.set(model_render=f"{A}=uniform:0.5:1")
    from batchgen.specs import Catalog

    need_b = forecast.clip_seconds(B, {}, {B: Catalog.shipped().get(B).typical_render_s})[0]  # what the workers assume
    at = time.time() + max(30.0, 0.8 * need_b)
    assert at - time.time() < need_b  # B's clip never fits, whenever it is asked
    night = _manifest(tmp_path / "night.csv", [(f"a{i}", A) for i in range(30)] + [(f"b{i}", B) for i in range(5)])
    out = tmp_path / "out"
    sim.set(latency_after=30.0)  # the hold: half the client's 60 s read timeout, should a worker never come up
    procs = [_worker(night, pg_url, out, sim.url, tmp_path / "w0.log", "--finish-by", _iso(at))]
    try:
        wait_for(lambda: procs[0].poll() is not None or _fleet_deadline(pg_url)[0] is not None, 120)
        assert procs[0].poll() is None, (tmp_path / "w0.log").read_text()[-3000:]
        procs += [_worker(night, pg_url, out, sim.url, tmp_path / f"w{i}.log") for i in (1, 2)]
        wait_for(lambda: any(p.poll() is not None for p in procs) or _fleet_deadline(pg_url)[1] == 3
                 or time.time() > at - 15, 120)
        sim.set(latency_after=0.0)
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
    for i, p in enumerate(procs):
        assert p.returncode == 3, logs[i][-3000:]
    assert all("joining the fleet's deadline" in logs[i] for i in (1, 2)), logs
    led = Ledger(pg_url)
    try:
        jobs = {j["name"]: j for j in led.iter_export() if j["name"][0] in "ab"}
    finally:
        led.close()
    assert not [n for n, j in jobs.items() if n.startswith("b") and j["task_id"]]  # no worker paid for B
    assert all(j["submitted_at"] <= at for j in jobs.values() if j["submitted_at"])  # nothing created after it
    left = sorted(n for n, j in jobs.items() if j["state"] == "queued")
    assert {f"b{i}" for i in range(5)} <= set(left)
    for o in outs:  # each worker's summary is the manifest's: the same jobs left, named
        d = json.loads(o)["deadline"]
        assert d["finish_by"] == pytest.approx(at, abs=1) and d["left"] == len(left) and B in d["models_cut"]
    # The next night, without a deadline: what was left is rendered.
    sim.set(model_render="")
    p = _worker(night, pg_url, out, sim.url, tmp_path / "next.log")
    p.communicate(timeout=300)
    assert p.returncode == 0, (tmp_path / "next.log").read_text()[-3000:]
    led = Ledger(pg_url)
    try:
        assert {j["state"] for j in led.iter_export()} == {"done"}
    finally:
        led.close()


def _migration_0016(url: str, monkeypatch) -> None:
    from sqlalchemy import inspect

    from batchgen.ledger import Ledger

    led = Ledger(url)
    try:
        run_id = led.start_run("/m.yaml", "x", {}, 0)
        led.set_finish_by(run_id, 1234.5)
        assert led.run(run_id)["finish_by"] == 1234.5
    finally:
        led.close()
    with migrated_down(url, monkeypatch, "0015") as c:
        assert "finish_by" not in {col["name"] for col in inspect(c).get_columns("runs")}
        assert c.execute(text("SELECT manifest FROM runs")).scalar() == "/m.yaml"  # nothing else lost


def test_migration_0016_upgrades_and_downgrades_on_sqlite(tmp_path, monkeypatch):
    _migration_0016(f"sqlite:///{tmp_path / 'old.db'}", monkeypatch)


@pytest.mark.postgres
def test_migration_0016_upgrades_and_downgrades_on_postgres(pg_url, monkeypatch):
    _migration_0016(pg_url, monkeypatch)


def test_plan_assumes_what_run_does_by_default_rpm_auto_and_says_so(sim_factory, tmp_path):
    sim = sim_factory()
    m = _manifest(tmp_path / "m.csv", [(f"s{i}", A) for i in range(6)])
    assert run_cli(run_args(sim, m, tmp_path, "--no-verify")).exit_code == 0
    m2 = _manifest(tmp_path / "m2.csv", [(f"t{i}", A) for i in range(300)])
    r = run_cli(["plan", str(m2), "--ledger", str(tmp_path / "l.db"), "--json"])
    f = json.loads(r.stdout)["forecast"]
    assert f["rpm"] == "auto" and f["bound"] == "render slots"  # the learned budget is not counted
    assert "--rpm auto" in f["lines"][0] and "learned from the API's answers" in f["lines"][1]
    told = json.loads(run_cli(["plan", str(m2), "--ledger", str(tmp_path / "l.db"), "--rpm", "6", "--json"]).stdout)
    assert told["forecast"]["rpm"] == 6 and told["forecast"]["bound"] == "request budget"
    assert "--rpm 6 " in told["forecast"]["lines"][0] and f["seconds"] < told["forecast"]["seconds"]
    assert run_cli(["plan", str(m2), "--ledger", str(tmp_path / "l.db"), "--rpm", "lots"]).exit_code == 2


def _yaml(path: Path, finish_by: str) -> Path:
    path.write_text(f"defaults: {{model: {A}, duration: 1}}\nfinish_by: {finish_by}\n"
                    "jobs:\n  - {name: one, prompt: a lighthouse}\n  - {name: two, prompt: a harbour}\n")
    return path


def test_the_manifest_may_carry_the_deadline_and_run_finish_by_overrides_it(sim_factory, tmp_path):
    sim = sim_factory()
    later = _iso(time.time() + 3600)
    r = run_cli(run_args(sim, _yaml(tmp_path / "m.yaml", f'"{later}"'), tmp_path, "--json", "--no-verify"))
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["deadline"]
    assert d["source"] == "the manifest's finish_by" and d["finish_by"] == pytest.approx(parse(later), abs=1)
    sooner = _iso(time.time() + 1800)
    r = run_cli(run_args(sim, _yaml(tmp_path / "m2.yaml", '"07:00"'), tmp_path, "--json", "--no-verify",
                         "--finish-by", sooner))
    d = json.loads(r.stdout)["deadline"]
    assert r.exit_code == 0 and d["source"] == "--finish-by" and d["finish_by"] == pytest.approx(parse(sooner), abs=1)


@pytest.mark.parametrize("value, says", [('"25:00"', "not a time of day"), ("7", "must be a quoted time"),
                                         ('"2020-01-01T07:00"', "has already passed")])
def test_a_bad_finish_by_in_the_manifest_is_named_with_its_line(sim_factory, tmp_path, value, says):
    sim = sim_factory()
    r = run_cli(run_args(sim, _yaml(tmp_path / "m.yaml", value), tmp_path))
    assert r.exit_code == 2 and "finish_by" in r.output and says in r.output and "line 2" in r.output, r.output
    assert not sim.truth()["creates"]
    plan = run_cli(["plan", str(tmp_path / "m.yaml")])  # no ledger: the default may be absent for plan
    assert plan.exit_code == 2 and says in plan.output


def _fleet_board(url: str) -> None:
    from batchgen.ledger import Ledger

    led = Ledger(url)
    try:
        assert led.fleet_finish_by("/m.yaml", 30.0) is None  # nobody works to a deadline
        late = led.start_run("/m.yaml", "x", {}, 0)
        led.set_finish_by(late, 2000.0)
        gone = led.start_run("/m.yaml", "x", {}, 0)
        led.set_finish_by(gone, 1000.0)
        led.finish_run(gone, "finished", 3)  # a worker that left: its deadline binds nobody
        other = led.start_run("/other.yaml", "y", {}, 0)
        led.set_finish_by(other, 500.0)  # another manifest's night
        none = led.start_run("/m.yaml", "x", {}, 0)  # a worker without one
        assert led.fleet_finish_by("/m.yaml", 30.0) == (2000.0, late)
        early = led.start_run("/m.yaml", "x", {}, 0)
        led.set_finish_by(early, 1500.0)  # a new worker with an earlier deadline: the fleet's moves
        assert led.fleet_finish_by("/m.yaml", 30.0) == (1500.0, early)
        led.set_finish_by(none, 1500.0)  # joined: kept in its row too
        assert led.run(none)["finish_by"] == 1500.0
        time.sleep(0.05)  # a lease shorter than the workers' silence since: all taken for dead
        assert led.fleet_finish_by("/m.yaml", 0.01) is None
    finally:
        led.close()


def test_the_fleets_deadline_is_the_earliest_a_live_worker_of_the_manifest_holds_sqlite(tmp_path):
    _fleet_board(str(tmp_path / "l.db"))


@pytest.mark.postgres
def test_the_fleets_deadline_is_the_earliest_a_live_worker_of_the_manifest_holds_postgres(pg_url):
    _fleet_board(pg_url)
