"""Issue 30 (a): `priority` in manifests — higher submitted first, equal in manifest order — never
part of a job's key; stored in the ledger (0011) so the feed and fleet claims follow it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from batchgen.errors import ManifestError
from batchgen.jobs import Job
from batchgen.ledger import Ledger, Scope
from batchgen.manifest import Manifest
from conftest import ledger_at_revision, migrated_down, run_args, run_cli

T2V = "grok-imagine-text-to-video"


def _write(path: Path, text_: str) -> Path:
    path.write_text(text_)
    return path


def test_priority_comes_from_defaults_rows_and_the_matrix_and_never_changes_the_key(tmp_path):
    plain = Manifest(_write(tmp_path / "a.yaml", f"defaults: {{model: {T2V}}}\njobs:\n"
                            "  - {name: a, prompt: one}\n  - {name: b, prompt: two}\n"))
    ranked = Manifest(_write(tmp_path / "b.yaml", f"defaults: {{model: {T2V}, priority: 3}}\njobs:\n"
                             "  - {name: a, prompt: one, priority: 9}\n  - {name: b, prompt: two}\n"))
    before, after = list(plain.expand()), list(ranked.expand())
    assert [j.priority for j in before] == [0, 0] and [j.priority for j in after] == [9, 3]
    assert [j.key for j in before] == [j.key for j in after]  # not part of the request nor the key
    assert [j.request for j in before] == [j.request for j in after] and "priority" not in after[0].request
    matrix = Manifest(_write(tmp_path / "c.yaml", f"defaults: {{model: {T2V}}}\nmatrix: {{duration: [2, 4]}}\n"
                             "jobs:\n  - {name: a, prompt: one, priority: '-2'}\n"))
    assert [j.priority for j in matrix.expand()] == [-2, -2]
    # A CSV's cells are text: the plain path and the general path read it alike.
    csv = Manifest(_write(tmp_path / "d.csv", f"name,model,prompt,priority\nx,{T2V},p1,5\ny,{T2V},p2,\n"
                          f"z,{T2V},p {{name}},+7\n"))
    assert [j.priority for j in csv.expand()] == [5, 0, 7]


@pytest.mark.parametrize("value", ["high", "1.5", "99999999", "true"])
def test_a_priority_that_is_not_a_whole_number_is_a_problem_naming_row_and_field(tmp_path, value):
    m = Manifest(_write(tmp_path / "m.csv", f"name,model,prompt,priority\nok,{T2V},fine,1\nbad,{T2V},fine2,{value}\n"))
    with pytest.raises(ManifestError) as ei:
        m.validate()
    (p,) = ei.value.problems
    assert p.where.startswith("row 2") and p.field == "priority" and "whole number" in p.message


def test_yaml_booleans_are_not_priorities(tmp_path):
    m = Manifest(_write(tmp_path / "m.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{prompt: a, priority: yes}}\n"))
    with pytest.raises(ManifestError, match="priority"):
        m.validate()


def _job(i: int, priority: int, model: str = "m") -> Job:
    return Job(f"{i:064x}", i, f"j{i}", "r", model, {"model": model, "i": i}, f"j{i}.mp4", priority=priority)


def test_queued_pages_come_highest_priority_first_then_in_manifest_order(tmp_path):
    led = Ledger(str(tmp_path / "l.db"))
    try:
        prios = [0, 5, 0, 5, -1, 9, 0, 5]
        run_id, _ = led.record_run("m", "a" * 64, {}, [_job(i, p) for i, p in enumerate(prios, 1)], lambda: None)
        assert led.queued_models(run_id) == ["m"]
        seen, after = [], None
        while page := led.queued_page(run_id, "m", after, 3):  # small pages cross priority levels
            seen += [(r["priority"], r["seq"]) for r in page]
            after = (page[-1]["priority"], page[-1]["seq"])
        assert seen == [(9, 6), (5, 2), (5, 4), (5, 8), (0, 1), (0, 3), (0, 7), (-1, 5)]
        # Recorded again with new priorities: the same jobs (keys), the new order.
        again, _ = led.record_run("m", "b" * 64, {}, [_job(i, -p) for i, p in enumerate(prios, 1)], lambda: None)
        assert [r["seq"] for r in led.queued_page(again, "m", None, 3)] == [5, 1, 3]
        assert led.counts() == {"queued": 8}
    finally:
        led.close()


def test_a_run_submits_higher_priorities_first(sim, tmp_path):
    rows = [f"j{i},grok-imagine-text-to-video,clip {i},1,{p}" for i, p in enumerate([0, 2, 0, 7, 2, 0])]
    m = _write(tmp_path / "m.csv", "name,model,prompt,duration,priority\n" + "\n".join(rows) + "\n")
    args = run_args(sim, m, tmp_path)
    args[args.index("--concurrency") + 1] = "1"  # one at a time: the order of creates is the order
    assert run_cli(args).exit_code == 0
    with sqlite3.connect(tmp_path / "l.db") as c:
        order = [n for (n,) in c.execute("SELECT j.name FROM events e JOIN jobs j ON j.id = e.job_id "
                                         "WHERE e.to_state = 'submitting' ORDER BY e.id")]
    assert order == ["j3", "j1", "j4", "j0", "j2", "j5"]


@pytest.mark.postgres
def test_fleet_claims_take_the_highest_priorities_first(pg_url):
    led = Ledger(pg_url)
    try:
        jobs = [_job(i, p) for i, p in enumerate([0, 3, 0, 3, 8], 1)]
        a, _ = led.record_run("m.csv", "c" * 64, {}, jobs, lambda: None)
        b, _ = led.record_run("m.csv", "c" * 64, {}, jobs, lambda: None)
        assert [r["seq"] for r in led.claim(a, Scope("", "c" * 64), 2)] == [5, 2]
        assert [r["seq"] for r in led.claim(b, Scope("", "c" * 64), 2)] == [4, 1]
        assert [r["seq"] for r in led.claim(a, Scope("", "c" * 64), 5)] == [3]
    finally:
        led.close()


def _migrate_0011_and_back(url: str, monkeypatch) -> None:
    with ledger_at_revision(url, "0010") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                       "VALUES ('m', 'x', 1, 'finished', 'h', 1)"))
        c.execute(text("INSERT INTO jobs (key, run_id, seq, name, source, model, request, output, state, "
                       "created_at, updated_at) VALUES (:k, 1, 1, 'n', 's', 'm', '{}', 'o.mp4', 'queued', 1, 1)"),
                  {"k": bytes.fromhex("ab" * 32)})
    led = Ledger(url)  # migrates on open
    try:
        (row,) = led.queued_page(1, "m", None, 10)
        assert row["priority"] == 0 and row["key"] == "ab" * 32
    finally:
        led.close()
    # checked against the models both ways (the partial index included), down and up again
    with migrated_down(url, monkeypatch, "0010") as c:
        assert "priority" not in {col["name"] for col in inspect(c).get_columns("jobs")}
        assert "ix_jobs_queued" not in {i["name"] for i in inspect(c).get_indexes("jobs")}
        assert c.execute(text("SELECT name, state FROM jobs")).all() == [("n", "queued")]


def test_migration_0011_upgrades_and_downgrades_on_sqlite(tmp_path, monkeypatch):
    _migrate_0011_and_back(f"sqlite:///{tmp_path / 'old.db'}", monkeypatch)


@pytest.mark.postgres
def test_migration_0011_upgrades_and_downgrades_on_postgres(pg_url, monkeypatch):
    _migrate_0011_and_back(pg_url, monkeypatch)


def test_the_nightly_example_manifest_expands_with_its_priorities_and_limits():
    m = Manifest(Path(__file__).resolve().parent.parent / "manifests" / "nightly.yaml")
    jobs = list(m.expand())
    m.check()
    assert m.limits == {"veo-3.1-fast": 4, "sora-2": 2}
    assert [j.name for j in sorted(jobs, key=lambda j: (-j.priority, j.seq))][:2] == ["hero-lighthouse", "hero-market"]
    assert len({j.model for j in jobs}) == 3 and jobs[-1].priority == -5
