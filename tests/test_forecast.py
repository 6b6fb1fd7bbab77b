"""Issue 30 (e), first part: `plan` says how long tonight takes, from the ledger's history of
each model (render time mean and spread, polls, downloads), the concurrency and the request
budget; a model never rendered here is a guess, said plainly."""

from __future__ import annotations

import json

from batchgen.forecast import GUESS_RENDER_S, estimate
from conftest import run_args, run_cli, write_csv_manifest

T2V, HH = "grok-imagine-text-to-video", "happyhorse-1.0-text-to-video"


def test_the_night_is_bound_by_the_slots_or_by_the_request_budget():
    history = {T2V: {"renders": [10.0] * 20, "polls": 1.0}}
    slots = estimate({T2V: 100}, history, concurrency=10, rpm=None, fetch_s=0.0)
    assert slots.bound == "render slots" and slots.seconds == 100.0 + 5.0  # 100 × 10 s over 10 slots, the tail
    budget = estimate({T2V: 100}, history, concurrency=10, rpm=60, fetch_s=0.0)
    assert budget.bound == "request budget" and budget.seconds == 200.0  # 200 requests at 1 a second
    few = estimate({T2V: 2}, history, concurrency=10, rpm=None, fetch_s=0.0)
    assert few.seconds == 10.0  # one wave: never less than one clip's render
    guess = estimate({HH: 8}, history, concurrency=8, rpm=None, fetch_s=0.0)
    assert guess.guessed == [HH] and guess.seconds == GUESS_RENDER_S  # one wave: the clips render at once


def test_plan_forecasts_from_the_ledgers_history_and_says_when_it_guesses(sim_factory, tmp_path):
    sim = sim_factory(render_min=0.4, render_max=0.6)
    seen = write_csv_manifest(tmp_path / "seen.csv", 20)
    assert run_cli(run_args(sim, seen, tmp_path, "--no-verify")).exit_code == 0
    rows = [f"n{i},{T2V},a new clip {i},2" for i in range(40)] + [f"h{i},{HH},a new clip {i},5" for i in range(4)]
    (tmp_path / "tonight.csv").write_text("name,model,prompt,duration\n" + "\n".join(rows) + "\n")
    r = run_cli(["plan", str(tmp_path / "tonight.csv"), "--ledger", str(tmp_path / "l.db"), "--concurrency", "4",
                 "--rpm", "0", "--start", "01:30", "--json"])
    assert r.exit_code == 0, r.output
    f = json.loads(r.stdout)["forecast"]
    t2v = next(m for m in f["models"] if m["model"] == T2V)
    assert t2v["history"] == 20 and t2v["jobs"] == 40 and 0.3 < t2v["render_mean_s"] < 1.5
    assert f["guessed_models"] == [HH] and f["concurrency"] == 4
    text = run_cli(["plan", str(tmp_path / "tonight.csv"), "--ledger", str(tmp_path / "l.db"), "--concurrency", "4",
                    "--rpm", "60", "--start", "01:30"]).output
    assert "forecast: ≈ " in text and "at --concurrency 4 --rpm 60" in text and "at --concurrency 8: ≈ " in text
    assert f"NO HISTORY of {HH}: a guess" in text and "history: 20 clips of the others" in text
    assert "if started at 01:30" in text
    bad = run_cli(["plan", str(tmp_path / "tonight.csv"), "--ledger", str(tmp_path / "l.db"), "--start", "25:99"])
    assert bad.exit_code == 2 and "HH:MM" in bad.output


def test_diff_says_how_long_tonight_takes_too(sim_factory, tmp_path):
    sim = sim_factory(render_min=0.2, render_max=0.3)
    m = write_csv_manifest(tmp_path / "m.csv", 8)
    assert run_cli(run_args(sim, m, tmp_path, "--no-verify")).exit_code == 0
    write_csv_manifest(tmp_path / "m.csv", 20)  # twelve more clips tonight
    r = run_cli(["diff", str(m), "--ledger", str(tmp_path / "l.db"), "--json"])
    f = json.loads(r.stdout)["forecast"]
    assert f["models"][0]["jobs"] == 12 and f["models"][0]["history"] == 8 and not f["guessed_models"]
    text = run_cli(["diff", str(m), "--ledger", str(tmp_path / "l.db")]).output
    assert "forecast: ≈ " in text and "history: 8 clips of this model" in text
