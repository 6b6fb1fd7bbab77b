"""Issue 30 (e), first part: `plan` says how long tonight takes, from the ledger's history of
each model (render time mean and spread, polls, downloads), the concurrency and the request
budget; a model never rendered here is a guess, said plainly."""

from __future__ import annotations

import heapq
import json
import math
import random
import sqlite3
import statistics

import pytest

from batchgen.forecast import GUESS_RENDER_S, MIN_HISTORY, clip_seconds, estimate, lines
from batchgen.specs import Catalog
from conftest import run_args, run_cli, write_csv_manifest

T2V, HH = "grok-imagine-text-to-video", "happyhorse-1.0-text-to-video"


def test_the_night_is_bound_by_the_slots_or_by_the_request_budget():
    history = {T2V: {"renders": [10.0] * 20, "polls": 1.0}}
    slots = estimate({T2V: 100}, history, concurrency=10, rpm=None, fetch_s=0.0)
    # 100 × 10 s over 10 slots, then the end: the last clip whole (10 s) against the other nine
    # slots' mean residual (5 s): 10 − (9 × 5 + 10) / 10 = 4.5 s past work / slots.
    assert slots.bound == "render slots" and slots.seconds == 100.0 + 4.5
    budget = estimate({T2V: 100}, history, concurrency=10, rpm=60, fetch_s=0.0)
    assert budget.bound == "request budget" and budget.seconds == 200.0  # 200 requests at 1 a second
    few = estimate({T2V: 2}, history, concurrency=10, rpm=None, fetch_s=0.0)
    assert few.seconds == 10.0  # one wave: never less than one clip's render
    guess = estimate({HH: 8}, history, concurrency=8, rpm=None, fetch_s=0.0)
    assert guess.guessed == [HH] and guess.seconds == GUESS_RENDER_S  # one wave: the clips render at once


def test_without_history_the_catalogs_typical_render_time_is_the_guess():
    typical = {HH: 60.0}
    # 100 clips of 60 s over 10 slots: 600 s of work each slot, then the end 60 − (9 × 30 + 60) / 10 = 27 s.
    f = estimate({HH: 100}, {}, concurrency=10, rpm=None, fetch_s=0.0, typical=typical)
    (m,) = f.models
    assert m.source == "catalog" and m.history == 0 and m.mean_s == 60.0 and f.seconds == 627.0
    assert f.guessed == [HH] and f.sd_s == 0.0  # a guess is not a measurement: no ± claimed
    # No typical time either (a model the catalog does not know): batchgen's own guess.
    bare = estimate({HH: 100}, {}, concurrency=10, rpm=None, fetch_s=0.0, typical={HH: None})
    assert bare.models[0].source == "guess" and bare.seconds == 100 * GUESS_RENDER_S / 10 + 0.45 * GUESS_RENDER_S
    # run --finish-by's cut-off for such a model: the same guess (plus the default second to fetch).
    assert clip_seconds(HH, {}, typical) == (61.0, False) and clip_seconds(HH, {}) == (GUESS_RENDER_S + 1, False)
    # History wins over the catalog once there are MIN_HISTORY clips of the model.
    seen = estimate({HH: 100}, {HH: {"renders": [10.0] * 5, "polls": 1.0}}, 10, None, 0.0, typical)
    assert seen.models[0].source == "history" and seen.seconds == 104.5
    text = "\n".join(lines(f, {HH: 100}, {}, start=0.0, typical=typical))
    assert f"NO HISTORY of {HH}: a guess from the catalog's typical render time" in text
    assert "never rendered here: the catalog's typical render time, 60 s (a guess)" in text
    mixed = estimate({HH: 10, T2V: 10}, {T2V: {"renders": [10.0] * 5}}, 4, None, 0.0, {HH: None})
    text = "\n".join(lines(mixed, {HH: 10, T2V: 10}, {T2V: {"renders": [10.0] * 5}}, 0.0, {HH: None}))
    assert f"never rendered here, no typical time in the catalog: {GUESS_RENDER_S:g} s (a guess)" in text
    assert "history: render 10 s on average (median 10 s)" in text and "history: 5 clips of the others" in text
    assert mixed.sd_s == 0.0 and " ± " not in text.splitlines()[0]  # a guess in the night: no ± claimed


def test_every_shipped_model_has_a_typical_render_time():
    # plan's forecast without history reads them; each is a labelled guess in models.yaml.
    for name, spec in Catalog.shipped().models.items():
        assert spec.typical_render_s is not None and 10 <= spec.typical_render_s <= 600, name
    cat = Catalog.shipped()
    assert cat.get("veo-3.1-fast-image-to-video").typical_render_s < cat.get("veo-3.1-image-to-video").typical_render_s


def test_the_forecast_says_how_sure_it_is_from_the_historys_spread_and_size():
    # Renders of 1 s and 3 s alternately, 20 clips of history: mean 2 s, sample variance 20/19.
    history = {T2V: {"renders": [1.0, 3.0] * 10, "polls": 1.0}}
    f = estimate({T2V: 100}, history, concurrency=10, rpm=None, fetch_s=0.0)
    var = 20 / 19
    # Tonight's own draw (100 clips: 100·σ²) and the history mean's error (100²·σ²/20), over 10 slots.
    assert math.isclose(f.sd_s, math.sqrt(100 * var + 100 ** 2 * var / 20) / 10)
    # 200 s of work over 10 slots, then the end. P(last clip ≤ x) is 0, ½, 1 below 1 s, to 3 s, past
    # it; a residual's P(R ≤ x) = E[min(X, x)] / E[X] is x/2 below 1 s, (1 + x)/4 up to 3 s. The
    # longest of the last clip and nine residuals: ∫₀³ 1 − P(X ≤ x)·P(R ≤ x)⁹ dx
    # = 3 − ½ · ¼⁹ · (4¹⁰ − 2¹⁰) / 10 = 2.80019…; less the mean of what the slots hold,
    # (9 × E[X²]/2E[X] + E[X]) / 10 = (9 × 5/4 + 2) / 10 = 1.325.
    longest = 3 - 0.5 * 0.25 ** 9 * (4 ** 10 - 2 ** 10) / 10
    assert math.isclose(f.seconds, 20.0 + longest - 1.325, rel_tol=1e-12)
    text = "\n".join(lines(f, {T2V: 100}, history, start=0.0))
    assert f"± {f.sd_s / f.seconds:.0%} at --concurrency 10" in text and "one standard deviation" in text
    more = estimate({T2V: 100}, {T2V: {"renders": [1.0, 3.0] * 100, "polls": 1.0}}, 10, None, 0.0)
    assert more.sd_s < f.sd_s  # more history, surer
    assert estimate({T2V: 100}, history, 10, 60, 0.0).sd_s == 0.0  # bound by the budget: not by renders


def _night_of_slots(draws: list[float], concurrency: int) -> float:
    """A night as the conductor runs it, without its overheads: each clip, in order, takes the
    first slot to free up; the night ends with the last clip."""
    slots = [0.0] * concurrency
    for d in draws:
        heapq.heapreplace(slots, slots[0] + d)
    return max(slots)


@pytest.mark.parametrize("name", ["uniform", "lognormal", "bimodal", "one slow model"])
def test_the_forecast_lands_on_the_mean_night_of_its_distribution(name):
    # Deterministic: seeded draws, 300 nights of 180 clips (60 of each of three models, interleaved
    # as a manifest lists them) over 12 slots, against the forecast from 3,000 clips of history
    # per model (no sampling error left to speak of: what is left is the model's).
    rng = random.Random(30)
    dist = {"uniform": [lambda: rng.uniform(2, 6)] * 3,
            "lognormal": [lambda: 4 * math.exp(rng.gauss(0, 0.6))] * 3,
            "bimodal": [lambda: (12 if rng.random() < 0.3 else 3) * rng.uniform(0.9, 1.1)] * 3,
            "one slow model": [lambda: rng.uniform(3, 5), lambda: rng.uniform(3, 5), lambda: rng.uniform(14, 18)]}[name]
    models = [f"m{k}" for k in range(3)]
    history = {m: {"renders": [d() for _ in range(3000)], "polls": 1.0} for m, d in zip(models, dist)}
    nights = [_night_of_slots([d() for _ in range(60) for d in dist], 12) for _ in range(300)]
    f = estimate({m: 60 for m in models}, history, concurrency=12, rpm=None, fetch_s=0.0)
    assert abs(statistics.fmean(nights) / f.seconds - 1) < 0.02, (statistics.fmean(nights), f.seconds)


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
    # The mean is the ledger's own: result ready − create answered of the 20 clips, as recorded.
    # It was bounded by 1.5 s here, the simulator's 0.4-0.6 s renders plus polling; at load 18
    # the run itself took 7.6 s a clip to see its results, and the history said so, rightly.
    # Equal to what the ledger holds, and at least the simulator's shortest render: from history,
    # whatever the machine's speed (the catalog's guess for this model is 45 s).
    with sqlite3.connect(tmp_path / "l.db") as c:
        recorded = [r for (r,) in c.execute("SELECT completed_at - submitted_at FROM jobs WHERE model = ?", (T2V,))]
    assert len(recorded) == 20 and t2v["history"] == 20 and t2v["jobs"] == 40
    assert abs(t2v["render_mean_s"] - statistics.fmean(recorded)) <= 0.05 + 1e-9 and t2v["render_mean_s"] > 0.3  # shown to 0.1 s
    assert f["guessed_models"] == [HH] and f["concurrency"] == 4
    hh = next(m for m in f["models"] if m["model"] == HH)
    typical = Catalog.shipped().get(HH).typical_render_s
    assert hh["source"] == "catalog" and hh["render_mean_s"] == typical and t2v["source"] == "history"
    text = run_cli(["plan", str(tmp_path / "tonight.csv"), "--ledger", str(tmp_path / "l.db"), "--concurrency", "4",
                    "--rpm", "60", "--start", "01:30"]).output
    assert "forecast: ≈ " in text and "at --concurrency 4 --rpm 60" in text and "at --concurrency 8: ≈ " in text
    assert f"NO HISTORY of {HH}: a guess from the catalog's typical render time" in text
    assert "history: 20 clips of the others" in text
    assert f"never rendered here: the catalog's typical render time, {typical:g} s (a guess)" in text
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


def test_a_model_with_a_few_clips_is_a_guess_that_says_how_many_it_has():
    # Found trying the nightly manifest: after a night that rendered 2 clips of a model, plan said
    # "never rendered here" of it; it is still a guess (fewer than MIN_HISTORY), but said as such.
    typical = {HH: 60.0, T2V: 45.0}
    history = {HH: {"renders": [30.0, 34.0]}, T2V: {"renders": [12.0]}}
    f = estimate({HH: 3, T2V: 2}, history, 8, None, 0.0, typical)
    assert [(m.model, m.history, m.seen, m.source) for m in f.models] == sorted(
        [(HH, 0, 2, "catalog"), (T2V, 0, 1, "catalog")])
    assert f.as_dict()["models"][0]["seen"] in (1, 2)
    text = "\n".join(lines(f, {HH: 3, T2V: 2}, history, start=0.0, typical=typical))
    assert "never rendered here" not in text
    assert f"NOT ENOUGH HISTORY of {', '.join(sorted([HH, T2V]))}: a guess from the catalog's typical render time" in text
    made = f"({MIN_HISTORY} make a history): the catalog's typical render time"
    assert f"only 2 clips rendered here {made}, 60 s (a guess)" in text
    assert f"only 1 clip rendered here {made}, 45 s (a guess)" in text
    bare = estimate({HH: 1}, {HH: {"renders": [30.0]}}, 8, None, 0.0, {HH: None})
    assert "only 1 clip rendered here (5 make a history), no typical time in the catalog" in "\n".join(
        lines(bare, {HH: 1}, {HH: {"renders": [30.0]}}, 0.0, {HH: None}))
