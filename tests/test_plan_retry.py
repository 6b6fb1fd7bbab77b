"""`plan --retry-failed`: the morning after a night with failures, the retry night's jobs,
credits and time are forecast before anything is paid, by the rule `run --retry-failed`
requeues by (``failures.retry_verdict``), so the plan and the run cannot disagree."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from batchgen.cost import PriceTable
from batchgen.ledger import Ledger
from conftest import run_args, run_cli, write_csv_manifest


def _plan(m: Path, ledger: Path, *extra: str) -> dict:
    r = run_cli(["plan", str(m), "--ledger", str(ledger), "--json", "--rpm", "0", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_plan_retry_failed_forecasts_exactly_what_run_retry_failed_then_creates(sim_factory, tmp_path):
    sim = sim_factory(seed=9, p_fail=1.0)
    m = write_csv_manifest(tmp_path / "m.csv", 24)  # one to ten seconds: the credits differ per job
    r = run_cli(run_args(sim, m, tmp_path, "--json", "--no-breaker", "--no-pictures"))
    assert r.exit_code == 1 and json.loads(r.stdout)["counts"] == {"failed": 24}
    ledger = tmp_path / "l.db"
    led = Ledger(str(ledger))
    failed = led.jobs_in_state("failed")
    led.close()
    retryable = [j for j in failed if j["retryable"]]
    assert 0 < len(retryable) < 24  # content_policy_violation is not retryable
    table = PriceTable.load()
    credits = round(sum(table.estimate(json.loads(j["request"])) or 0.0 for j in retryable), 4)
    assert credits > 0

    # Without the option: nothing to submit, and the plan says what the option would add.
    before = _files(tmp_path)
    plain = _plan(m, ledger)
    assert plain["to_submit"] == 0 and plain["credits_to_submit"] == 0
    assert plain["retry"] == {"included": False, "max_attempts": 3, "resubmitted": len(retryable),
                              "credits": credits, "unpriced": 0, "spent": 0, "permanent": 24 - len(retryable)}
    text = run_cli(["plan", str(m), "--ledger", str(ledger)]).stdout
    assert f"failed: {len(retryable)} retryable, not in to submit" in text and "nothing to submit" in text

    doc = _plan(m, ledger, "--retry-failed")
    assert doc["states"]["failed"] == 24  # the ledger's states, unchanged by a forecast
    assert doc["to_submit"] == len(retryable) and doc["credits_to_submit"] == credits
    assert doc["retry"] == {**plain["retry"], "included": True}
    assert sum(f["jobs"] for f in doc["forecast"]["models"]) == len(retryable) and doc["forecast"]["seconds"] > 0
    assert plain["forecast"]["models"] == []
    text = run_cli(["plan", str(m), "--ledger", str(ledger), "--retry-failed"]).stdout
    assert f"to submit: {len(retryable)} (~" in text
    assert f"--retry-failed: {len(retryable)} failed job(s) resubmitted (included above" in text
    assert (f"--retry-failed leaves {24 - len(retryable)} failed: {24 - len(retryable)} failed for a reason a new "
            "task does not fix (change the request)") in text
    assert "nothing to submit" not in text and "forecast: ≈" in text
    explain = _plan(m, ledger, "--retry-failed", "--explain")["explain"]
    resubmitted = [e for e in explain if e["action"] == "submit"]
    assert len(resubmitted) == len(retryable)
    assert {e["reason"] for e in resubmitted} == {f"would be resubmitted (retry: {j['error_code']}, attempt 2 of 3)"
                                                  for j in retryable}
    assert {k: v for k, v in _files(tmp_path).items() if k in before} == before  # read-only: not a byte changed

    # At the cap, the plan and the run both leave them: said in a line, nothing created.
    capped = _plan(m, ledger, "--retry-failed", "--max-attempts", "1")
    assert capped["to_submit"] == 0 and capped["retry"]["spent"] == len(retryable)
    assert "had their --max-attempts 1 creates" in run_cli(
        ["plan", str(m), "--ledger", str(ledger), "--retry-failed", "--max-attempts", "1"]).stdout
    sim.set(p_fail=0.0)
    assert run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--max-attempts", "1", "--no-pictures")).exit_code == 1
    assert len(sim.truth()["creates"]) == 24

    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--json", "--no-pictures"))
    created = sim.truth()["creates"][24:]
    assert len(created) == doc["to_submit"] == doc["retry"]["resubmitted"]
    assert round(sum(c["credits"] for c in created), 4) == doc["credits_to_submit"]
    assert json.loads(r.stdout)["counts"] == {"done": len(retryable), "failed": 24 - len(retryable)}
    after = _plan(m, ledger, "--retry-failed")  # the permanent failures stay out
    assert after["to_submit"] == 0 and after["retry"]["permanent"] == 24 - len(retryable)


def test_retry_failed_does_not_go_with_diff(tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    r = run_cli(["plan", str(m), "--diff", "--retry-failed", "--ledger", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "--retry-failed" in r.output and "--diff" in r.output
