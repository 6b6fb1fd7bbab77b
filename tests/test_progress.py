"""Live progress: a rich table on a terminal, plain or JSON lines otherwise, nothing when quiet."""

from __future__ import annotations

import io
import json

import pytest

from batchgen.progress import Display, Snapshot
from conftest import run_args, run_cli, write_csv_manifest


# ------------------------------------------------------------------ progress
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rich_on_a_terminal_plain_otherwise_nothing_when_quiet(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no column is abbreviated
    snap = Snapshot(states={"queued": 5, "rendering": 3, "done": 12, "failed": 1}, elapsed=120.0, done_last_minute=6,
                    requests_last_minute=40, budget_rpm=60.0, throttled=2, credits=33.6, in_flight=3)
    tty = _Tty()
    d = Display(stream=tty)
    assert d.rich
    d.start()
    d.update(snap)
    d.stop(snap)
    out = tty.getvalue()
    # the ledger's own state names, as the summary, `status` and the JSON records use them
    for word in ("queued", "submitting", "submitted", "rendering", "completed", "done", "failed", "in doubt",
                 "cancelled", "jobs/min", "40 requests in the last 60s (budget 60/min)", "credits 33.6", "ETA",
                 "3 at the provider"):
        assert word in out, word
    assert "delivered" not in out  # a column only with --deliver
    assert snap.eta_seconds() == pytest.approx(80.0)  # 8 left at 6 jobs/min
    plain = io.StringIO()
    d = Display(stream=plain, every=1.0)
    assert not d.rich
    d.update(snap)
    assert "queued=5" in plain.getvalue() and "ETA 1m20s" in plain.getvalue() and "40 requests in the last 60s (budget 60/min)" in plain.getvalue()
    quiet = io.StringIO()
    Display(stream=quiet, quiet=True).update(snap)
    assert quiet.getvalue() == ""


def test_run_prints_plain_progress_lines_when_not_a_tty(sim_factory, tmp_path):
    sim = sim_factory(render_min=1.5, render_max=2.5)
    m = write_csv_manifest(tmp_path / "m.csv", 6, small=True)  # the progress lines, not the clips
    r = run_cli(run_args(sim, m, tmp_path, "--progress-every", "1", "--no-pictures"))
    assert r.exit_code == 0, r.output
    lines = [l for l in r.stderr.splitlines() if "jobs/min" in l]
    assert len(lines) >= 1 and ("submitted=" in r.stderr or "rendering=" in r.stderr)




def test_json_log_format_makes_progress_json_too(sim_factory, tmp_path):
    sim = sim_factory(render_min=1.5, render_max=2.5)
    m = write_csv_manifest(tmp_path / "m.csv", 4, small=True)  # the progress lines, not the clips
    r = run_cli(run_args(sim, m, tmp_path, "--log-format", "json", "--progress-every", "1", "--no-pictures"))
    assert r.exit_code == 0
    progress = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    progress = [p for p in progress if p.get("event") == "progress"]
    assert progress and all({"states", "eta_s", "requests_per_min", "credits"} <= p.keys() for p in progress)
    assert not any(line.startswith("batchgen: ") and "jobs/min" in line for line in r.stderr.splitlines())


def test_the_live_table_counts_tasks_at_the_provider_and_has_a_delivered_column(monkeypatch):
    """One task submitted among 8 held slots is "1 at the provider", not "8 in flight"; a
    request burst in the first seconds is a count over its window, never an extrapolated
    rate above the budget; delivered clips get their own column."""
    monkeypatch.setenv("COLUMNS", "250")
    snap = Snapshot(states={"queued": 7, "submitted": 1}, elapsed=12.0, requests_last_minute=14, budget_rpm=60.0,
                    in_flight=8, delivered=5, undelivered=2)
    tty = _Tty()
    d = Display(stream=tty)
    d.start()
    d.stop(snap)
    out = tty.getvalue()
    assert "1 at the provider" in out and "in flight" not in out
    assert "14 requests in the last 12s (budget 60/min)" in out and "70" not in out
    assert "delivered" in out and "5 (2 not)" in out


def test_a_job_armed_ahead_of_its_slot_is_not_counted_at_the_provider(monkeypatch):
    """An armed job (ahead.py) is `submitting` in the ledger, its intent durable, but nothing is
    sent until its slot frees: at concurrency 4, the title never says 5 at the provider."""
    monkeypatch.setenv("COLUMNS", "250")
    snap = Snapshot(states={"queued": 7, "submitting": 1, "submitted": 3, "rendering": 1}, elapsed=4.0, in_flight=4,
                    armed=1)
    tty = _Tty()
    d = Display(stream=tty)
    d.start()
    d.stop(snap)
    assert "4 at the provider" in tty.getvalue()


def test_delivery_shows_in_the_progress_line_and_json_only_when_delivering():
    from batchgen.progress import line

    plain = Snapshot(states={"done": 4}, elapsed=10.0)
    assert "delivered" not in line(plain) and "delivered" not in plain.as_dict()
    snap = Snapshot(states={"done": 4}, elapsed=10.0, delivered=3, undelivered=1)
    assert line(snap).endswith(", delivered 3 (1 not)")
    assert snap.as_dict()["delivered"] == 3 and snap.as_dict()["undelivered"] == 1
