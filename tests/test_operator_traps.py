"""No silent surprises for the operator (issue 12): simulated and real results kept apart,
commands that only read never create ledgers, an unreachable API named and given up on,
expired results re-rendered on request, dead runs shown dead, --simulate resumable, and one
set of names and one log format on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import KEY, ledger_states, run_args, run_cli, write_csv_manifest

ROOT = Path(__file__).resolve().parent.parent


def _jobs(ledger: Path) -> list[dict]:
    led = Ledger(str(ledger), create=False)
    try:
        return [dict(j) for j in led.iter_export()]
    finally:
        led.close()


# ------------------------------------------------------------------ 1. simulated vs real
@pytest.mark.slow
def test_simulated_results_never_count_for_a_real_run(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHGEN_LEDGER", raising=False)
    m = write_csv_manifest(tmp_path / "m.csv", 4)
    r = run_cli(["run", str(m), "--simulate", "--sim-set", "render_max=0.2", "--poll-min", "0.05", "-q"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "batchgen-sim.db").is_file() and not (tmp_path / "batchgen.db").exists()
    # the real run (here: another API) in the same folder has its own ledger and pays for every job
    r = run_cli(["run", str(m), "--api-base", sim.url, "--rpm", "0", "--poll-min", "0.05", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["requests"] >= 4
    assert "new ledger" in r.stderr
    # pointed at the simulated ledger on purpose: refused, nothing recorded or sent
    before = len(sim.truth()["creates"])
    r = run_cli(["run", str(m), "--api-base", sim.url, "--ledger", "batchgen-sim.db", "--rpm", "0"])
    assert r.exit_code == 2 and "another API" in r.stderr and "embedded simulator" in r.stderr
    assert len(sim.truth()["creates"]) == before


# ------------------------------------------------------------------ 3. unreachable API
def test_an_unreachable_api_is_named_at_once_and_given_up_on(tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    t = time.monotonic()
    r = run_cli(["run", str(m), "--api-base", "http://127.0.0.1:9", "--ledger", str(tmp_path / "l.db"),
                 "--out", str(tmp_path / "out"), "--outage-window", "1", "--rpm", "0"])
    assert r.exit_code == 3, r.output
    assert time.monotonic() - t < 30
    lines = r.stderr.splitlines()
    first = next(i for i, l in enumerate(lines) if "does not answer" in l)
    assert "connection refused by 127.0.0.1:9" in lines[first]
    assert sum("does not answer" in l for l in lines) == 1  # said once, not once per job
    assert any("no answer from the API for 1 s" in l for l in lines)


def test_an_api_that_dies_mid_run_stops_the_run_and_keeps_task_ids(sim_factory, tmp_path):
    # The API dies once the run has recorded every task id (an event: a fixed 2 s timer, on a
    # loaded machine, could stop it before the creates were answered), with every render still
    # going: 3-4 s renders outlast the stop (they were 6-8 s, after the 2 s timer).
    sim = sim_factory(render_min=3, render_max=4)
    m = write_csv_manifest(tmp_path / "m.csv", 4)

    def die_after_the_creates() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(
                n for s, n in ledger_states(tmp_path / "l.db").items() if s in ("submitted", "rendering")) < 4:
            time.sleep(0.02)
        sim.stop()

    threading.Thread(target=die_after_the_creates, daemon=True).start()
    t = time.monotonic()
    r = run_cli(run_args(sim, m, tmp_path, "--outage-window", "1"))
    # noticed at the first poll (scheduled at the tasks' estimate), given up 1 s later — not after
    # --task-timeout (2 h)
    assert r.exit_code == 3 and time.monotonic() - t < 25, r.output
    assert "no answer from the API" in r.stderr
    jobs = _jobs(tmp_path / "l.db")
    assert all(j["task_id"] for j in jobs) and {j["state"] for j in jobs} <= {"submitted", "rendering"}


# ------------------------------------------------------------------ 4. expired results
def test_expired_results_are_re_rendered_with_retry_failed(sim_factory, tmp_path):
    sim = sim_factory(result_ttl=0.0)  # every result link has expired by the time it is fetched
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 1, r.output
    jobs = _jobs(tmp_path / "l.db")
    assert {(j["state"], j["error_code"], j["retryable"]) for j in jobs} == {("failed", "result_expired", True)}
    polls_sync = sim.truth()["counters"]["polls"]
    assert polls_sync >= 2 * 3  # a poll to completion, and one more look for a fresh URL, per job
    explain = json.loads(run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--json", "--explain"]).stdout)
    assert all("--retry-failed" in e["reason"] and "new paid task" in e["reason"] for e in explain["explain"])
    # a credit cap below one more task: nothing is resubmitted
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--max-credits", "1"))
    assert r.exit_code == 3 and "credit cap" in r.stderr
    assert len(sim.truth()["creates"]) == 3
    sim.set(result_ttl=3600)
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed"))
    assert r.exit_code == 0, r.output
    assert {j["state"] for j in _jobs(tmp_path / "l.db")} == {"done"}
    assert len(sim.truth()["creates"]) == 6  # each lost result paid for once more, no more


# ------------------------------------------------------------------ 5. dead runs
def _crashed_run(sim, m: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BATCHGEN_API_KEY": KEY, "BATCHGEN_CRASH_AT": "after_record:2"}
    p = subprocess.run([sys.executable, "-m", "batchgen", *run_args(sim, m, tmp_path, "-q")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 137, p.stderr


@pytest.mark.slow
def test_a_crashed_run_shows_as_died_and_stop_says_nothing_runs(sim_factory, tmp_path):
    sim = sim_factory(render_min=5, render_max=6)
    m = write_csv_manifest(tmp_path / "m.csv", 4)
    _crashed_run(sim, m, tmp_path)
    doc = json.loads(run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert [r["status"] for r in doc["runs"]] == ["died"]
    r = run_cli(["stop", "--ledger", str(tmp_path / "l.db")])
    assert r.exit_code == 2 and "no running run" in r.stderr


# ------------------------------------------------------------------ 6. --simulate resumes
@pytest.mark.slow
def test_an_interrupted_simulate_run_resumes(tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    args = [sys.executable, "-m", "batchgen", "run", str(m), "--simulate", "--sim-set", "render_min=1",
            "--sim-set", "render_max=2", "--ledger", str(tmp_path / "s.db"), "--out", str(tmp_path / "out"),
            "--poll-min", "0.1", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "BATCHGEN_API_KEY"}
    p = subprocess.run(args, env={**env, "BATCHGEN_CRASH_AT": "after_record:3"}, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 137, p.stderr
    assert (tmp_path / "s.db.sim.jsonl").is_file()
    # The run after the crash, in this process (a new interpreter cost ~1 s of imports), with no
    # API key either: --simulate needs none.
    r = run_cli([*args[3:], "--json"], BATCHGEN_API_KEY=None)
    assert r.exit_code in (0, 1), r.output
    doc = json.loads(r.stdout)
    # the tasks created before the crash are collected, never re-created or lost as "not found";
    # only the one killed between intent and task id is in doubt
    assert doc["counts"].get("done", 0) + len(doc["in_doubt"]) == 6
    assert not [f for f in doc["failed"] if f["error"] == "task_not_found"]
    assert len(doc["in_doubt"]) <= 1


# ------------------------------------------------------------------ polish
def test_json_log_format_makes_every_stderr_line_json(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path, "--log-format", "json", "--progress-every", "1"))
    assert r.exit_code == 0
    records = [json.loads(line) for line in r.stderr.splitlines()]  # every line parses
    assert any(x.get("event") == "summary" and x["counts"] == {"done": 3} for x in records)
    assert any(x["msg"].startswith("run 1") for x in records)
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: [\n")
    r = run_cli(["run", str(bad), "--ledger", str(tmp_path / "l.db"), "--log-format", "json"])
    assert r.exit_code == 2 and json.loads(r.stderr.strip())["problems"]


def test_explain_names_matrix_variants_and_operator_commands_refuse_wrong_targets(sim, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-text-to-video}\nmatrix: {aspect_ratio: ['16:9', '9:16']}\n"
                 "jobs:\n  - {name: a, prompt: p}\n")
    with contextlib.chdir(tmp_path):  # no ledger named, none at ./batchgen.db: plan compares with none
        out = run_cli(["plan", str(m), "--explain"], BATCHGEN_LEDGER=None).stdout
    assert "a-16_9.mp4" in out and "a-9_16.mp4" in out
    assert run_cli(run_args(sim, m, tmp_path, "-q")).exit_code == 0
    r = run_cli(["cancel", "--run", "99", "--ledger", str(tmp_path / "l.db")])
    assert r.exit_code == 2 and "no run 99" in r.stderr
    r = run_cli(["resolve", "ab", "--abandon", "--ledger", str(tmp_path / "l.db")])
    assert r.exit_code == 2 and "too short" in r.stderr
