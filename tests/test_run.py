from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.ledger import Ledger
from conftest import check_invariants, write_csv_manifest

KEY = "sk-canary-0123456789abcdef"


def run_cli(args, **env):
    r = CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": KEY, **env}, catch_exceptions=False)
    return r


def run_args(sim, manifest, tmp_path, *extra):
    return ["run", str(manifest), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"), "--out",
            str(tmp_path / "out"), "--concurrency", "16", "--rpm", "0", "--poll-min", "0.05", "-q", *extra]


def test_happy_path_then_rerun_submits_nothing(sim, tmp_path):
    # Small clips: what is checked is the money, the states and the files' sha256, not what
    # is in a clip (720p clips of 1-10 s were most of this test's CPU).
    m = write_csv_manifest(tmp_path / "m.csv", 30, small=True)
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["counts"] == {"done": 30}
    assert summary["requests"] <= 30 * 4
    stats = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    assert stats["done"] == 30 and stats["creates"] == 30
    # same manifest again: nothing is created or downloaded again
    r2 = run_cli(run_args(sim, m, tmp_path))
    assert r2.exit_code == 0
    assert len(sim.truth()["creates"]) == 30
    assert sim.truth()["counters"]["downloads"] == 30
    plan = run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--json"])
    assert json.loads(plan.stdout)["states"]["done"] == 30
    # --explain: one reason per job; a new row is the only thing that would be submitted
    with open(m, "a") as f:
        f.write("extra,grok-imagine-text-to-video,A brand new clip,3,480p\n")
    doc = json.loads(run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--json", "--explain"]).stdout)
    actions = [e["action"] for e in doc["explain"]]
    assert actions == ["skip"] * 30 + ["submit"] and "new" in doc["explain"][-1]["reason"]
    text = run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--explain"]).stdout
    assert "skip      shot0000" in text and "submit    extra" in text


def test_faults_every_job_ends_done_or_failed_with_a_reason(sim_factory, tmp_path):
    sim = sim_factory(seed=3, p429=0.1, retry_after=0.05, p500_after=0.03, p_drop_after=0.03, p_drop_before=0.02,
                      p_malformed=0.03, p_truncate=0.15, p_fail=0.08, p_poll_404=0.02)
    # Small clips, no pictures: what is checked is each job's end under the API's faults. The
    # clips are still verified (decoded, their verdicts written: the ledger load the "locked"
    # check below is about), not drawn: 720p clips and their pictures were over half its CPU.
    m = write_csv_manifest(tmp_path / "m.csv", 80, small=True)
    r = run_cli(run_args(sim, m, tmp_path, "--json", "--no-pictures"))
    summary = json.loads(r.stdout)
    assert r.exit_code == 1, summary
    assert "locked" not in r.output  # the scheduler's own load never trips SQLite's lock
    truth = sim.truth()
    faults = truth["counters"]["faults"]
    ambiguous = sum(faults.get(k, 0) for k in ("500_after", "drop_after", "drop_before", "malformed_create"))
    assert ambiguous > 0 and faults.get("truncate", 0) > 0 and faults.get("429", 0) > 0
    stats = check_invariants(truth, tmp_path / "l.db", tmp_path / "out")
    led = Ledger(str(tmp_path / "l.db"))
    jobs = list(led.iter_export())
    led.close()
    states = {j["state"] for j in jobs}
    assert states <= {"done", "failed", "in_doubt"}
    assert stats["in_doubt"] == ambiguous  # exactly the ambiguous creates, nothing more
    for j in jobs:
        if j["state"] != "done":
            assert j["error_code"] and j["error_message"], j
    assert stats["done"] == sum(j["state"] == "done" for j in jobs) > 50


def test_in_doubt_resolution(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 3, small=True)  # the ledger's states, not the clips
    sim.set(p500_after=1.0)
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 1 and "IN DOUBT" in r.stderr
    sim.set(p500_after=0.0)
    truth = sim.truth()
    assert len(truth["creates"]) == 3
    led = Ledger(str(tmp_path / "l.db"))
    doubt = led.jobs_in_state("in_doubt")
    led.close()
    assert len(doubt) == 3
    doc = json.loads(run_cli(["plan", str(m), "--ledger", str(tmp_path / "l.db"), "--json", "--explain"]).stdout)
    assert {(e["action"], "batchgen resolve" in e["reason"]) for e in doc["explain"]} == {("hold", True)}
    # a second run does not touch them
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 1 and len(sim.truth()["creates"]) == 3
    by_body = {c["body_sha256"]: c["task_id"] for c in truth["creates"]}
    from batchgen.simulator import canonical_sha256
    a, b, c = doubt
    adopt_id = by_body[canonical_sha256(json.loads(a["request"]))]
    db = ["--ledger", str(tmp_path / "l.db")]
    assert run_cli(["resolve", a["key"][:10], "--adopt", adopt_id, *db]).exit_code == 0
    assert run_cli(["resolve", b["key"], "--resubmit", *db]).exit_code == 0
    assert run_cli(["resolve", str(c["id"]), "--abandon", *db]).exit_code == 0
    assert run_cli(["resolve", str(c["id"]), "--abandon", *db]).exit_code == 2  # no longer in doubt
    assert run_cli(["resolve", str(a["id"]), *db]).exit_code == 2  # no action given
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0, r.stdout
    assert json.loads(r.stdout)["counts"] == {"done": 2, "cancelled": 1}
    assert len(sim.truth()["creates"]) == 4  # only the resubmitted job was created again
    led = Ledger(str(tmp_path / "l.db"))
    details = [e["detail"] for e in led.events_for(a["id"])]
    led.close()
    assert "resolved by operator: adopted task" in details


def test_bad_manifest_exit_2_and_nothing_recorded(sim, tmp_path):
    good = write_csv_manifest(tmp_path / "good.csv", 2)
    assert run_cli(run_args(sim, good, tmp_path)).exit_code == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("name,model,prompt,duration\na,grok-imagine-text-to-video,x,99\nb,grok-imagine-text-to-video,,5\n")
    r = run_cli(run_args(sim, bad, tmp_path))
    assert r.exit_code == 2
    assert "row 1 (line 2), field 'duration'" in r.stderr and "row 2 (line 3), field 'prompt'" in r.stderr
    led = Ledger(str(tmp_path / "l.db"))
    assert led.counts() == {"done": 2} and led.run()["id"] == 1
    led.close()
    assert len(sim.truth()["creates"]) == 2


def test_missing_key_is_usage_error(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    r = CliRunner().invoke(cli, run_args(sim, m, tmp_path), env={"BATCHGEN_API_KEY": ""})
    assert r.exit_code == 2 and "BATCHGEN_API_KEY" in r.stderr


def test_insufficient_balance_stops_submission_and_keeps_polling(sim_factory, tmp_path):
    sim = sim_factory(balance=30.0, credits_per_second=1.0, render_min=0.3, render_max=0.5)
    m = write_csv_manifest(tmp_path / "m.csv", 20)  # durations 1..10 → more than 30 credits
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 4
    s = json.loads(r.stdout)
    assert "402" in s["reason"]
    created = len(sim.truth()["creates"])
    assert 0 < created < 20 and s["counts"]["done"] == created and s["counts"]["queued"] == 20 - created
    check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")


def test_wrong_key_stops_the_run(sim_factory, tmp_path):
    sim = sim_factory(api_key="sk-the-right-one")
    m = write_csv_manifest(tmp_path / "m.csv", 5)
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 6 and "refused" in r.stderr
    assert sim.truth()["creates"] == []
    led = Ledger(str(tmp_path / "l.db"))
    assert led.counts() == {"queued": 5}
    led.close()


def test_second_run_on_same_ledger_is_refused(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    holder = Ledger(str(tmp_path / "l.db"))
    holder.acquire_lock()
    try:
        r = run_cli(run_args(sim, m, tmp_path))
        assert r.exit_code == 5 and "another batchgen run" in r.stderr
    finally:
        holder.close()


def test_export_csv_json_formula_safe_in_manifest_order(sim, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt\n"
                 "=cmd|calc,grok-imagine-text-to-video,=HYPERLINK(\"http://x\")\n"
                 "b,grok-imagine-text-to-video,+1 plus\n"
                 "c,grok-imagine-text-to-video,@SUM(A1)\n"
                 "d,grok-imagine-text-to-video,-2 minus\n")
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    out = tmp_path / "results.csv"
    r = run_cli(["export", "--ledger", str(tmp_path / "l.db"), "-o", str(out)])
    assert r.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["prompt"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1 plus", "'@SUM(A1)", "'-2 minus"]
    assert rows[0]["name"] == "'=cmd|calc"
    for row in rows:
        for v in row.values():
            assert not v.startswith(("=", "+", "-", "@", "\t", "\r"))
        assert row["state"] == "done" and len(row["sha256"]) == 64 and row["task_id"]
    j = run_cli(["export", "--ledger", str(tmp_path / "l.db"), "--json"])
    docs = json.loads(j.stdout)
    assert [d["name"] for d in docs] == ["=cmd|calc", "b", "c", "d"]  # JSON is for machines: raw values


def test_api_key_never_leaks(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 5)
    sim.set(p500_after=0.3, p429=0.2, retry_after=0.05)
    r = run_cli(run_args(sim, m, tmp_path)[:-1])  # not quiet: progress lines too
    run_cli(["export", "--ledger", str(tmp_path / "l.db"), "-o", str(tmp_path / "r.csv")])
    blobs = [r.output.encode(), (tmp_path / "r.csv").read_bytes()]
    blobs += [p.read_bytes() for p in tmp_path.glob("l.db*") if p.is_file()]
    for b in blobs:
        assert KEY.encode() not in b
    assert "download_with_authorization" not in sim.truth()["counters"]["faults"]


def test_plan_counts_and_seconds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ledger named, none at ./batchgen.db: plan compares with none
    m = tmp_path / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-text-to-video, duration: 5}\n"
                 "matrix: {resolution: [480p, 720p]}\n"
                 "jobs:\n  - {name: a, prompt: one}\n  - {name: b, prompt: two, duration: 3}\n")
    r = run_cli(["plan", str(m), "--json"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["jobs"] == 4 and doc["states"]["new"] == 4
    assert {(v["resolution"], v["seconds"]) for v in doc["video"]} == {("480p", 8), ("720p", 8)}
    # placeholder prices: 1.0/s at 480p, 1.4/s at 720p
    assert {(v["resolution"], v["credits_estimated"]) for v in doc["video"]} == {("480p", 8.0), ("720p", 11.2)}
    assert doc["credits_estimated_total"] == pytest.approx(19.2)
    prices = tmp_path / "p.yaml"
    prices.write_text("per_second: {grok-imagine-text-to-video: {480p: 2, 720p: 3}}\n")
    doc = json.loads(run_cli(["plan", str(m), "--json", "--prices", str(prices)], BATCHGEN_LEDGER=None).stdout)
    assert doc["credits_estimated_total"] == pytest.approx(40.0)
    (tmp_path / "veo.csv").write_text("model,prompt\nwan-2.6-reference-to-video,hello\n")
    veo = tmp_path / "veo.yaml"
    veo.write_text("unvalidated_models: [wan-2.6-reference-to-video]\nrows: veo.csv\n")
    doc = json.loads(run_cli(["plan", str(veo), "--json"], BATCHGEN_LEDGER=None).stdout)
    assert doc["video"][0]["credits_estimated"] is None
    assert not (tmp_path / "batchgen.db").exists()  # plan never creates a ledger
    text = run_cli(["plan", str(m)], BATCHGEN_LEDGER=None)
    assert "4 job(s)" in text.stdout


def test_help_documents_exit_codes():
    r = CliRunner().invoke(cli, ["run", "--help"])
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 "):
        assert f"  {code}" in r.output


def test_retry_failed_resubmits_only_retryable_failures_up_to_the_cap(sim_factory, tmp_path):
    sim = sim_factory(seed=9, p_fail=1.0)
    # Small clips, no pictures: the creates and the states are checked, not what is in a clip.
    m = write_csv_manifest(tmp_path / "m.csv", 24, small=True)
    # Every task failing would open the model's breaker (issue 30) after five: this test is
    # about --retry-failed, so every job is let fail once.
    r = run_cli(run_args(sim, m, tmp_path, "--json", "--no-breaker", "--no-pictures"))
    assert r.exit_code == 1 and json.loads(r.stdout)["counts"] == {"failed": 24}
    led = Ledger(str(tmp_path / "l.db"))
    failed = led.jobs_in_state("failed")
    led.close()
    retryable = [j for j in failed if j["retryable"]]
    assert 0 < len(retryable) < 24  # content_policy_violation is not retryable
    sim.set(p_fail=0.0)
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--max-attempts", "1", "--no-pictures"))
    assert len(sim.truth()["creates"]) == 24  # the cap (1 create per job) is already reached
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--json", "--no-pictures"))
    counts = json.loads(r.stdout)["counts"]
    assert counts == {"done": len(retryable), "failed": 24 - len(retryable)}
    assert len(sim.truth()["creates"]) == 24 + len(retryable)
    stats = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    assert stats["duplicates"] == 0


def test_simulate_flag_runs_the_embedded_simulator(tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 4, small=True)  # the flag, not the clips
    r = CliRunner().invoke(cli, ["run", str(m), "--simulate", "--sim-set", "render_max=0.2", "--sim-set", "render_min=0.05",
                                 "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path / "o"), "--poll-min", "0.05",
                                 "-q", "--json"], env={"BATCHGEN_API_KEY": ""})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"done": 4}
    assert len(list((tmp_path / "o").glob("*.mp4"))) == 4


def test_max_credits_stops_submission_before_the_cap(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 20)  # text-to-video 720p, durations 1..10 → 1.4 credits/s
    r = run_cli(run_args(sim, m, tmp_path, "--max-credits", "40", "--json"))
    s = json.loads(r.stdout)
    assert r.exit_code == 3 and "credit cap" in s["reason"]
    assert s["credits_estimated"] <= 40
    created = sim.truth()["creates"]
    assert sum(c["credits"] for c in created) <= 40 and len(created) < 20
    assert s["counts"]["done"] == len(created)
