"""The shared request budget: back-off on 429 with Retry-After, slow recovery, a rate-limited API."""

from __future__ import annotations

import json
import re

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




# ------------------------------------------------------------------ credit cap
@pytest.mark.parametrize("rpm", ["60", "0", "5"])
def test_the_credit_cap_admits_exactly_the_jobs_that_fit_whatever_the_rate(sim, tmp_path, rpm):
    """Six 8.4-credit jobs (6 s of text-to-video at 1.4/s) under --max-credits 20: two fit. With
    a paced --rpm, the third job used to find the second's reservation still waiting for its
    turn, call the cap reached and take the second down with it (one job submitted)."""
    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt,duration\n" + "".join(
        f"s{i},grok-imagine-text-to-video,a lighthouse at dusk number {i},6\n" for i in range(6)))
    args = run_args(sim, m, tmp_path, "--max-credits", "20", "--json")
    args[args.index("--rpm") + 1] = rpm
    r = run_cli(args)
    s = json.loads(r.stdout)
    assert r.exit_code == 3 and "credit cap reached: 16.8 estimated" in s["reason"], s
    assert len(sim.truth()["creates"]) == 2
    assert s["credits_estimated"] == 16.8 and s["counts"] == {"done": 2, "queued": 4}


def test_credit_sums_print_as_plain_numbers(sim, tmp_path):
    """Estimates added and given back (creates refused, a cap reached) print as people write
    them: no float noise (-1.77636e-14), no scientific notation (4e+06)."""
    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt,duration\n" + "".join(
        f"s{i},grok-imagine-text-to-video,a lighthouse at dusk number {i},{d}\n" for i, d in enumerate([6, 3, 7, 10, 1])))
    sim.set(p429=0.3, retry_after=0.05)  # refused creates give their reservation back
    r = run_cli(run_args(sim, m, tmp_path, "--max-credits", "4000000"))
    assert r.exit_code == 0, r.stderr
    summary = [line for line in r.stderr.splitlines() if "credits reserved=" in line]
    assert summary and "(estimated 37.8)" in summary[0], summary  # 27 s × 1.4
    prices = tmp_path / "prices.yaml"
    prices.write_text("unit: credits\nper_second:\n  grok-imagine-text-to-video: {480p: 400000, 720p: 400000}\n")
    r = run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--prices", str(prices)])
    assert "~10800000 credits" in r.stdout, r.stdout
    assert not re.search(r"\de[+-]\d", r.stdout + r.stderr)


def test_report_tiles_print_credits_as_plain_numbers(sim, tmp_path):
    """The report's credit tile and per-model table read like the summary: a night that cost
    millions of credits says 17640000, not 1.764e+07."""
    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt,duration\n" + "".join(
        f"s{i},grok-imagine-text-to-video,a harbour at noon number {i},6\n" for i in range(3)))
    sim.set(credits_per_second=700000)  # 3 × 6 s × 700000 × 1.4 (720p) = 17640000 credits
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 0, r.stderr
    page = tmp_path / "r.html"
    r = run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(page)])
    assert r.exit_code == 0, r.stderr
    html = page.read_text()
    assert "<b>17640000</b>credits" in html
    assert "<td>17640000</td>" in html
    assert not re.search(r"\de[+-]\d", html.split("<script")[0])
