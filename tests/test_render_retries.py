"""Issue 30 (c): failures by class. `--render-retries N` creates a task again tonight after the
provider failed it for a retryable reason (a new paid task: intent first, within --max-credits,
recorded as an attempt of the same job); permanent failures are never retried, and the morning
message says what to change."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from batchgen.failures import classify, fix
from batchgen.notify import compose

from conftest import check_invariants, run_args, run_cli, write_csv_manifest

T2V = "grok-imagine-text-to-video"


def test_failure_codes_are_classed_as_the_reference_says_and_permanent_ones_say_what_to_change():
    assert {classify(c) for c in ("generation_failed", "service_error", "generation_timeout",
                                  "resource_exhausted")} == {"retryable"}
    assert {classify(c) for c in ("content_policy_violation", "invalid_parameters", "image_processing_error",
                                  "image_dimension_mismatch")} == {"permanent"}
    assert classify("something_new") == classify(None) == "unknown"
    assert "prompt" in fix("content_policy_violation")
    assert "`reference_image_urls`" in fix("image_processing_error", json.dumps({"reference_image_urls": ["x"]}))
    assert fix("image_processing_error", "{}") == "replace the input image"
    assert fix("service_error") is None


def _jobs(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT name, state, attempts, error_code FROM jobs ORDER BY seq").fetchall()


def _details(db: Path) -> list[str]:
    with sqlite3.connect(db) as c:
        return [d for (d,) in c.execute("SELECT detail FROM events WHERE detail LIKE '--render-retries%' ORDER BY id")]


def test_retryable_failures_are_rendered_again_tonight_each_a_recorded_attempt(sim_factory, tmp_path):
    sim = sim_factory(model_faults=f"{T2V}=0.5@0", seed=3)
    m = write_csv_manifest(tmp_path / "m.csv", 12)
    r = run_cli(run_args(sim, m, tmp_path, "--render-retries", "3"))
    rows = _jobs(tmp_path / "l.db")
    assert all(att <= 4 for _, _, att, _ in rows)
    retried = [row for row in rows if row[2] > 1]
    assert retried and any(state == "done" for _, state, _, _ in retried)  # a retry that worked
    assert len(_details(tmp_path / "l.db")) == sum(att - 1 for _, _, att, _ in rows)  # one line a retry
    # Every create the API accepted is a task id of its job's history: no duplicate, none lost.
    counts = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    assert len(sim.truth()["creates"]) == sum(att for _, _, att, _ in rows)
    assert r.exit_code == (0 if all(s == "done" for _, s, _, _ in rows) else 1), counts


def test_without_the_option_a_retryable_failure_waits_for_retry_failed(sim_factory, tmp_path):
    sim = sim_factory(model_faults=f"{T2V}=1@0")
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 1
    assert {(s, att, code) for _, s, att, code in _jobs(tmp_path / "l.db")} == {("failed", 1, "service_error")}


def test_permanent_failures_are_never_retried_and_the_summary_says_what_to_change(sim_factory, tmp_path):
    sim = sim_factory(model_faults=f"{T2V}=1@0", model_fault_code="content_policy_violation")
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path, "--render-retries", "5", "--json"))
    assert r.exit_code == 1
    assert {(s, att) for _, s, att, _ in _jobs(tmp_path / "l.db")} == {("failed", 1)}
    assert len(sim.truth()["creates"]) == 3 and _details(tmp_path / "l.db") == []
    summary = json.loads(r.stdout)
    assert {(f["class"], f["fix"]) for f in summary["failed"]} == {
        ("permanent", "change the prompt or the input media (content policy)")}
    title, body, _ = compose(summary, ledger="l.db")
    assert "permanent: shot0000 (content_policy_violation) — change the prompt" in body


def test_retries_count_against_max_credits(sim_factory, tmp_path):
    from batchgen.cost import PriceTable as Prices

    sim = sim_factory(model_faults=f"{T2V}=1@0")
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    est = Prices.load().estimate({"model": T2V, "prompt": "x", "duration": 1}) or 0.0
    assert est > 0
    r = run_cli(run_args(sim, m, tmp_path, "--render-retries", "5", "--max-credits", str(est * 3.5),
                         "--concurrency", "1"))
    assert len(sim.truth()["creates"]) == 3  # the fourth create would pass the cap
    assert r.exit_code == 3 and "credit cap" in r.output


def test_a_model_at_its_limit_still_renders_its_failures_again(sim_factory, tmp_path):
    # Found trying manifests/nightly.yaml (sora-2: 2) with a broken sora-2: the first failure came
    # while both sora-2 slots were busy, so it was left failed with its retries unused; at
    # --limit MODEL=1 no failure was ever rendered again. A retry keeps its own slot: the limit
    # counts it once, and still no more than the limit are ever in flight.
    # 0.2-0.4 s renders (were 0.5-1.0): the nine tasks run one after another on the one slot, and
    # what is checked is their order in the ledger's events, not how long each one took.
    sim = sim_factory(model_faults=f"{T2V}=1@0", render_min=0.2, render_max=0.4)
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path, "--render-retries", "2", "--limit", f"{T2V}=1", "--no-breaker", "--json"))
    assert r.exit_code == 1, r.output
    # Every task's credits in the summary, retries too (it counted each job's last task only).
    paid = sum(c["credits"] for c in sim.truth()["creates"])
    assert paid > 0 and json.loads(r.stdout)["credits_reserved"] == pytest.approx(paid)
    rows = _jobs(tmp_path / "l.db")
    assert [(s, att, code) for _, s, att, code in rows] == [("failed", 3, "service_error")] * 3
    assert len(_details(tmp_path / "l.db")) == 6 and len(sim.truth()["creates"]) == 9
    check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    # The limit held: no two tasks of the model rendering at once (created → its failure seen).
    with sqlite3.connect(tmp_path / "l.db") as c:
        spans = c.execute("SELECT job_id, to_state FROM events WHERE to_state IN ('submitted', 'failed') "
                          "ORDER BY id").fetchall()
    running = peak = 0
    for _, state in spans:
        running += 1 if state == "submitted" else -1
        peak = max(peak, running)
    assert peak == 1, spans


def test_a_breaker_that_opens_on_the_last_retries_does_not_claim_queued_jobs(sim_factory, tmp_path):
    # Two jobs of a broken model, two render retries each: the fifth failure opens the breaker,
    # the sixth spends the last retry; nothing is left queued, and the summary must not say
    # "its queued jobs wait for the next run" of none.
    sim = sim_factory(model_faults=f"{T2V}=1@0", render_min=0.3, render_max=0.5)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--render-retries", "2", "--breaker-cooloff", "30"))
    assert r.exit_code == 1, r.output
    assert [(s, att) for _, s, att, _ in _jobs(tmp_path / "l.db")] == [("failed", 3)] * 2
    assert f"BREAKER OPEN {T2V}: 5 failures in a row" in r.stderr
    assert "any job of it not rendered yet waits for the next run, whose first task of it is the probe" in r.stderr
    assert "queued jobs" not in r.stderr


def test_retry_failed_says_which_failures_it_leaves_because_their_attempts_are_spent(sim_factory, tmp_path):
    # Found after a night of --render-retries 2 on a broken model: the next night's --retry-failed
    # rendered nothing (each job had its 3 creates, the --max-attempts default) and said nothing.
    sim = sim_factory(model_faults=f"{T2V}=1@0", render_min=0.3, render_max=0.5)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    assert run_cli(run_args(sim, m, tmp_path, "--render-retries", "2", "--no-breaker")).exit_code == 1
    plan = json.loads(run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--explain", "--json"]).stdout)
    assert {e["reason"] for e in plan["explain"]} == {
        "failed (service_error), retryable: resubmitted (a new paid task) only with --retry-failed and "
        "--max-attempts above 3 (the creates it has had)"}
    sim.set(model_faults="")
    creates = len(sim.truth()["creates"])
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed"))
    assert r.exit_code == 1 and len(sim.truth()["creates"]) == creates
    assert ("--retry-failed: 2 failed job(s) not retried: each has had its --max-attempts creates already "
            "(render retries count too); raise --max-attempts to render them again") in r.stderr
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--max-attempts", "4"))
    assert r.exit_code == 0 and "not retried" not in r.stderr and len(sim.truth()["creates"]) == creates + 2
