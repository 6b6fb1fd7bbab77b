"""Issue 30 (b): per-model limits — `limits:` in the manifest and `run --limit MODEL=N` cap a
model's tasks in flight; free slots go to models under their limit (a capped model never holds
the others back); on PostgreSQL the limit holds for the whole fleet."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchgen.errors import ManifestError
from batchgen.jobs import Job
from batchgen.ledger import Ledger, Scope, Transition
from batchgen.limits import Slots, parse_option
from batchgen.manifest import Manifest
from batchgen.metrics import RunMetrics, write
from batchgen.progress import Snapshot, line
from conftest import run_args, run_cli

A, B = "grok-imagine-text-to-video", "happyhorse-1.0-text-to-video"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_limits_are_read_from_the_manifest_and_bad_ones_named(tmp_path):
    m = Manifest(_write(tmp_path / "m.yaml", f"limits: {{{A}: 2, {B}: 5}}\ndefaults: {{model: {A}}}\n"
                        "jobs:\n  - {prompt: a}\n"))
    assert m.limits == {A: 2, B: 5} and m.validate() == 1
    bad = Manifest(_write(tmp_path / "b.yaml", f"defaults: {{model: {A}}}\nlimits: {{{A}: 0, {B}: many}}\n"
                          "jobs:\n  - {prompt: a}\n"))
    with pytest.raises(ManifestError) as ei:
        bad.validate()
    assert [(p.where, p.field) for p in ei.value.problems] == [("line 2", "limits"), ("line 2", "limits")]
    assert A in ei.value.problems[0].message and "from 1 to" in ei.value.problems[0].message
    with pytest.raises(ManifestError, match="must map model names"):
        Manifest(_write(tmp_path / "c.yaml", f"limits: [1]\ndefaults: {{model: {A}}}\njobs:\n  - {{prompt: a}}\n"
                        )).validate()


def test_the_limit_option_is_parsed_and_refused_with_its_reason():
    assert parse_option("veo-3.1=4") == ("veo-3.1", 4)
    for bad, why in [("veo-3.1", "MODEL=N"), ("=3", "MODEL=N"), ("veo=0", "from 1"), ("veo=x", "not 'x'")]:
        with pytest.raises(ValueError, match=why):
            parse_option(bad)


def test_a_bad_limit_option_is_a_usage_error_before_anything_runs(sim, tmp_path):
    m = _write(tmp_path / "m.csv", f"name,model,prompt\na,{A},p\n")
    r = run_cli(run_args(sim, m, tmp_path, "--limit", f"{A}=zero"))
    assert r.exit_code == 2 and "--limit" in r.output
    assert not (tmp_path / "l.db").exists()


def test_a_limit_for_an_unknown_model_is_refused_with_its_line_and_a_hint(tmp_path, sim, monkeypatch):
    # A misspelt model under `limits:` (or in --limit) capped nothing, silently: the night ran unlimited.
    text = (f"defaults: {{model: {A}}}\nunvalidated_models: [house-model]\nlimits:\n  {A}: 2\n"
            "  sora2: 1\n  house-model: 3\n  nosuchmodel: 4\njobs:\n  - {prompt: a}\n")
    bad = Manifest(_write(tmp_path / "u.yaml", text))
    with pytest.raises(ManifestError) as ei:
        bad.validate()
    assert [(p.where, p.field, p.message) for p in ei.value.problems] == [
        ("line 5", "limits", "unknown model 'sora2'; did you mean 'sora-2'?"),
        ("line 7", "limits", "unknown model 'nosuchmodel'")]
    # plan and run: exit 2, the file and line named, no ledger created.
    monkeypatch.chdir(tmp_path)  # plan without a ledger: the default ./batchgen.db, not there yet
    for args in (["plan", str(tmp_path / "u.yaml")],
                 run_args(sim, tmp_path / "u.yaml", tmp_path)):
        r = run_cli(args)
        assert r.exit_code == 2 and "u.yaml: line 5, field 'limits': unknown model 'sora2'" in r.output, r.output
    m = _write(tmp_path / "m.csv", f"name,model,prompt\na,{A},p\n")
    r = run_cli(run_args(sim, m, tmp_path, "--limit", "sora2=1", "--limit", f"{A}=2"))
    assert r.exit_code == 2 and "--limit sora2=1: unknown model 'sora2'; did you mean 'sora-2'?" in r.output
    assert not (tmp_path / "l.db").exists() and sim.truth()["creates"] == []


def test_slots_count_per_model_against_limits():
    s = Slots({A: 1})
    assert s.allows(A) and s.allows(B)
    s.take(A), s.take(B), s.take(B)
    assert not s.allows(A) and s.allows(B) and s.view() == {A: (1, 1), B: (2, None)}
    s.give(A)
    assert s.allows(A)


def _timeline(db: Path) -> list[tuple[float, str, str]]:
    """Every intent and result of the run (seconds, job, state): what a failed overlap check shows."""
    with sqlite3.connect(db) as c:
        ev = c.execute("SELECT e.at, j.name, e.to_state FROM events e JOIN jobs j ON j.id = e.job_id "
                       "WHERE e.to_state IN ('submitting', 'completed', 'failed') ORDER BY e.at, e.id").fetchall()
    return [(round(at - ev[0][0], 3), name, state) for at, name, state in ev]


def _max_overlap(db: Path, model: str) -> int:
    """Most tasks of ``model`` in flight at once (from the intent to the result), per the ledger's events."""
    with sqlite3.connect(db) as c:
        ev = c.execute("SELECT e.at, e.to_state FROM events e JOIN jobs j ON j.id = e.job_id WHERE j.model = ? "
                       "AND e.to_state IN ('submitting', 'completed', 'failed') ORDER BY e.at, e.id", (model,)).fetchall()
    n = best = 0
    for _, state in ev:
        n += 1 if state == "submitting" else -1
        best = max(best, n)
    return best


def test_a_limited_model_first_in_the_manifest_does_not_hold_the_other_models_back(sim_factory, tmp_path):
    # B's renders last 1.5-2 s (all renders were 0.4-0.6 s): two B tasks in flight at once must
    # not depend on the second intent being committed within 0.4 s of the first, which a loaded
    # machine (beside a cold mypy run, whose cache writes stall every fsync) did not always do.
    # A's stay short: its six run one after another on its one slot, in the time B's take.
    sim = sim_factory(render_min=0.4, render_max=0.6, model_render=f"{B}=uniform:1.5:2.0")
    rows = [f"a{i},{A},clip a{i},1" for i in range(6)] + [f"b{i},{B},clip b{i},3" for i in range(6)]
    m = _write(tmp_path / "m.yaml", f"limits: {{{A}: 3}}\nrows: rows.csv\n")
    _write(tmp_path / "rows.csv", "name,model,prompt,duration\n" + "\n".join(rows) + "\n")
    # No pictures: the tasks' overlap in the ledger is checked, not what is in a clip.
    args = run_args(sim, m, tmp_path, "--limit", f"{A}=1", "--no-pictures")  # the option overrides the manifest's 3
    args[args.index("--concurrency") + 1] = "3"
    r = run_cli(args)
    assert r.exit_code == 0, r.output
    db = tmp_path / "l.db"
    assert _max_overlap(db, A) == 1  # never more than its limit
    assert _max_overlap(db, B) >= 2, _timeline(db)  # the other model used the slots A could not
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM jobs WHERE state = 'done'").fetchone() == (12,)


def test_the_live_line_and_the_metrics_show_tasks_in_flight_per_model(tmp_path):
    snap = Snapshot(states={"rendering": 5}, elapsed=10, models={A: (1, 1), B: (4, None)})
    assert line(snap).endswith(f"in flight by model: {A} 1/1, {B} 4")
    assert snap.as_dict()["models"][A] == {"in_flight": 1, "limit": 1}
    write(tmp_path / "m.prom", RunMetrics(manifest="n.yaml", run_id=1, running=True, started_at=1.0,
                                           models={A: (1, 1), B: (4, None)}))
    text = (tmp_path / "m.prom").read_text()
    assert f'batchgen_model_in_flight{{manifest="n.yaml",model="{B}"}} 4.0' in text
    assert f'batchgen_model_limit{{manifest="n.yaml",model="{A}"}} 1.0' in text
    assert f'batchgen_model_limit{{manifest="n.yaml",model="{B}"}}' not in text


@pytest.mark.postgres
def test_fleet_claims_hold_a_models_limit_across_workers(pg_url):
    led = Ledger(pg_url)
    try:
        jobs = [Job(f"{i:064x}", i, f"j{i}", "r", A if i <= 6 else B, {"i": i}, f"j{i}.mp4") for i in range(1, 11)]
        scope = Scope("", "d" * 64)
        w1, _ = led.record_run("m.csv", "d" * 64, {}, jobs, lambda: None)
        w2, _ = led.record_run("m.csv", "d" * 64, {}, jobs, lambda: None)
        w3, _ = led.record_run("m.csv", "d" * 64, {}, jobs, lambda: None)
        limits = {A: 2}
        first = led.claim(w1, scope, 8, limits)
        assert [r["model"] for r in first].count(A) == 2 and [r["model"] for r in first].count(B) == 4
        assert led.claim(w2, scope, 8, limits) == []  # A is full fleet-wide, B all taken
        # w1 starts one of its A jobs and it ends: one A slot frees for the fleet.
        a_job = next(r for r in first if r["model"] == A)
        led.apply([Transition(a_job["id"], "submitting", ("queued",), owner=w1),
                   Transition(a_job["id"], "submitted", ("submitting",), task_id="t-a", owner=w1),
                   Transition(a_job["id"], "completed", ("submitted",), owner=w1)])
        again = led.claim(w3, scope, 8, limits)
        assert [r["model"] for r in again] == [A]
    finally:
        led.close()
