"""The shared request budget: back-off on 429 with Retry-After, slow recovery, a rate-limited API."""

from __future__ import annotations

import json

import pytest

from batchgen import budget as budget_mod
from batchgen.budget import RequestBudget
from conftest import run_args, run_cli, write_csv_manifest


# ------------------------------------------------------------------ budget
def test_budget_backs_off_on_429_and_recovers_slowly(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(budget_mod.time, "monotonic", lambda: now[0])
    b = RequestBudget(600)
    assert b.current_rpm == 600
    b.throttle(2.0)
    assert b.current_rpm == pytest.approx(420) and b._not_before == pytest.approx(1002.0)
    b.throttle(2.0)  # same burst: no second cut
    assert b.current_rpm == pytest.approx(420)
    now[0] += 3
    b.throttle(None)
    assert b.current_rpm == pytest.approx(294)
    now[0] += budget_mod.RECOVER_EVERY + 2
    b._maybe_recover()
    assert b.current_rpm == pytest.approx(324)  # +5% of 600
    for _ in range(40):
        now[0] += budget_mod.RECOVER_EVERY
        b._maybe_recover()
    assert b.current_rpm == 600
    for _ in range(30):
        now[0] += 2
        b.throttle(0)
    assert b.current_rpm == pytest.approx(60)  # floor: 10%


def test_rate_limited_api_all_jobs_finish_and_429s_stay_rare(sim_factory, tmp_path):
    sim = sim_factory(rpm_limit=600, render_min=0.05, render_max=0.1)
    m = write_csv_manifest(tmp_path / "m.csv", 40)
    args = run_args(sim, m, tmp_path, "-q", "--json")
    args[args.index("--rpm") + 1] = "600"
    r = run_cli(args)
    s = json.loads(r.stdout)
    assert r.exit_code == 0 and s["counts"] == {"done": 40}
    st = sim.truth()["counters"]["status"]
    assert st.get("429", 0) <= 0.05 * st["200"]


