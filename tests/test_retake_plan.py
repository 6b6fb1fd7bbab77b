"""`plan` and `diff` count the retakes a run of the manifest AS IT IS NOW renders: queued retakes
(and clips marked retake) whose chain leads to a job of the current expansion. A run carries
exactly those (the membership of a manifest is rewritten by each run); counting by the
membership as last recorded made plan say "1 to submit" after an edit removed the retaken clip
while the run rendered nothing, and the reverse after the edit was undone. Each case here checks
plan's and diff's counts against the creates the following run actually paid for (the
simulator's own record). Real simulator over loopback, real SQLite ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.jobs import Verdict
from batchgen.ledger import Change, Ledger
from conftest import run_args, run_cli
from reviewpage import night


def _jobs(ledger: Path) -> dict[str, dict[str, Any]]:
    led = Ledger(str(ledger), create=False)
    try:
        return {f"{j['name']}/{j['take']}": dict(j) for j in led.iter_export()}
    finally:
        led.close()


def _mark(ledger: Path, name: str) -> None:
    led = Ledger(str(ledger))
    try:
        led.decide([Change(_jobs(ledger)[name]["id"], verdict=Verdict.RETAKE)], "ann")
    finally:
        led.close()


def _queue(ledger: Path, n: int) -> None:
    r = run_cli(["retake", "--ledger", str(ledger), "--yes"])
    assert r.exit_code == 0 and f"queued {n} retake(s)" in r.stderr, r.output


def _retakes_done(ledger: Path) -> int:
    return sum(1 for j in _jobs(ledger).values() if j["retake_of"] is not None and j["state"] == "done")


def _edit(m: Path, lines: list[str]) -> None:
    m.write_text("\n".join(lines) + "\n")


def _promise_kept(sim: Any, tmp_path: Path, m: Path, *, submit: int, queued: int, marked: int = 0) -> None:
    """plan and diff say ``submit`` creates, ``queued`` of them retakes (and ``marked`` clips
    waiting for `batchgen retake`); the run that follows pays for exactly that many creates,
    ``queued`` of them retakes."""
    ledger = tmp_path / "l.db"
    plan = json.loads(run_cli(["plan", str(m), "--ledger", str(ledger), "--json"]).stdout)
    assert (plan["to_submit"], plan["retakes"]["queued"], plan["retakes"]["marked"]) == (submit, queued, marked), plan
    assert sum(f["jobs"] for f in plan["forecast"]["models"]) == submit
    diff = json.loads(run_cli(["diff", str(m), "--ledger", str(ledger), "--json"]).stdout)
    assert (diff["retakes"]["queued"], diff["retakes"]["marked"]) == (queued, marked), diff["retakes"]
    assert diff["retakes"]["credits"] == plan["retakes"]["credits"]
    assert sum(f["jobs"] for f in diff["forecast"]["models"]) == submit
    creates, retakes = len(sim.truth()["creates"]), _retakes_done(ledger)
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    assert len(sim.truth()["creates"]) - creates == submit  # what the run paid for
    assert _retakes_done(ledger) - retakes == queued


def _night_and_its_edit(sim, tmp_path, shots):
    """A rendered night of ``shots`` rows: its ledger, its manifest, the manifest's lines (v1) and
    the same lines without shot01's row (v2)."""
    ledger = night(sim, tmp_path, shots=shots, takes=1, hostile=False, small=True)  # retakes and money, not pictures
    m = tmp_path / "night.csv"
    v1 = m.read_text().splitlines()
    return ledger, m, v1, [line for line in v1 if not line.startswith("shot01,")]


def test_removing_the_retaken_clip_and_putting_it_back(sim, tmp_path):
    ledger, m, v1, v2 = _night_and_its_edit(sim, tmp_path, shots=3)
    _mark(ledger, "shot01/1")
    _edit(m, v2)
    _promise_kept(sim, tmp_path, m, submit=0, queued=0, marked=0)  # the marked clip is not the manifest's now
    _edit(m, v1)
    r = run_cli(["plan", str(m), "--ledger", str(ledger), "--json"])
    assert json.loads(r.stdout)["retakes"]["marked"] == 1
    _queue(ledger, 1)
    _edit(m, v2)
    _promise_kept(sim, tmp_path, m, submit=0, queued=0)  # was: plan "1 to submit", the run rendered 0
    _edit(m, v1)
    _promise_kept(sim, tmp_path, m, submit=1, queued=1)  # was: plan 0, the run rendered the retake
    _promise_kept(sim, tmp_path, m, submit=0, queued=0)  # the same bytes again (the reuse path)


def test_changing_the_retaken_rows_request_leaves_its_retake_behind(sim, tmp_path):
    """A changed request is a new job (a new key): the old clip's retake is not the manifest's."""
    ledger = night(sim, tmp_path, shots=3, takes=1, hostile=False)
    m = tmp_path / "night.csv"
    v1 = m.read_text().splitlines()
    _mark(ledger, "shot01/1")
    _queue(ledger, 1)
    changed = [line.replace("night number 1,", "dusk number 1,") if line.startswith("shot01,") else line for line in v1]
    assert changed != v1
    _edit(m, changed)
    _promise_kept(sim, tmp_path, m, submit=1, queued=0)  # the changed row's new job, not the retake
    _edit(m, v1)
    _promise_kept(sim, tmp_path, m, submit=1, queued=1)  # back: the old clip is listed again, its retake with it


def test_a_retake_of_a_retake_follows_its_first_clip(sim, tmp_path):
    ledger, m, v1, v2 = _night_and_its_edit(sim, tmp_path, shots=2)
    _mark(ledger, "shot01/1")
    _queue(ledger, 1)
    _promise_kept(sim, tmp_path, m, submit=1, queued=1)  # take 2, a retake of take 1
    _mark(ledger, "shot01/2")  # the retake itself marked retake: take 3 replaces take 2
    _promise_kept(sim, tmp_path, m, submit=0, queued=0, marked=1)
    _edit(m, v2)
    _promise_kept(sim, tmp_path, m, submit=0, queued=0, marked=0)
    _queue(ledger, 1)
    take3 = _jobs(ledger)["shot01/3"]
    assert take3["retake_of"] == _jobs(ledger)["shot01/2"]["id"] and take3["state"] == "queued"
    _promise_kept(sim, tmp_path, m, submit=0, queued=0)
    _edit(m, v1)
    _promise_kept(sim, tmp_path, m, submit=1, queued=1)  # its chain leads to shot01 take 1, listed again
    assert _jobs(ledger)["shot01/3"]["state"] == "done"


def test_a_rows_file_edited_and_edited_back_under_an_unchanged_manifest(sim, tmp_path):
    """The manifest's own bytes never change, only its rows CSV: the runs of the edited and of
    the restored rows may take the path that reuses an earlier validated expansion, and still
    render what plan says."""
    d = tmp_path / "m"
    d.mkdir()
    rows = d / "rows.csv"
    v1 = ["name,model,prompt,duration", *(f"shot{i},grok-imagine-text-to-video,A harbour number {i},{1 + i}"
                                         for i in range(3))]
    v2 = [line for line in v1 if not line.startswith("shot1,")]
    _edit(rows, v1)
    m = d / "m.yaml"
    m.write_text("defaults: {aspect_ratio: '16:9'}\nrows: rows.csv\n")
    r = run_cli(run_args(sim, m, tmp_path, "-q"))
    assert r.exit_code == 0, r.output
    ledger = tmp_path / "l.db"
    _mark(ledger, "shot1/None")
    _queue(ledger, 1)
    _edit(rows, v2)
    _promise_kept(sim, tmp_path, m, submit=0, queued=0)
    _promise_kept(sim, tmp_path, m, submit=0, queued=0)
    _edit(rows, v1)
    _promise_kept(sim, tmp_path, m, submit=1, queued=1)
    _promise_kept(sim, tmp_path, m, submit=0, queued=0)


def test_rows_edited_back_are_recorded_again_so_their_clips_retakes_are_the_manifests(sim, tmp_path):
    """Rows CSV edited (a clip dropped) and edited back, the manifest's bytes unchanged: the run
    of the restored rows records the manifest's membership again (it had the dropped version's),
    so `batchgen retake --manifest` finds the restored clip and its retake is the manifest's."""
    d = tmp_path / "m"
    d.mkdir()
    rows = d / "rows.csv"
    v1 = ["name,model,prompt,duration", "shot0,grok-imagine-text-to-video,A harbour,1",
          "shot1,grok-imagine-text-to-video,A lighthouse,2"]
    m = d / "m.yaml"
    m.write_text("rows: rows.csv\n")
    ledger = tmp_path / "l.db"
    for version in (v1, v1[:2], v1):
        _edit(rows, version)
        r = run_cli(run_args(sim, m, tmp_path, "-q"))
        assert r.exit_code == 0, r.output
    led = Ledger(str(ledger), create=False)
    try:
        assert sorted(j["name"] for j in led.manifest_members(str(m.resolve())) or []) == ["shot0", "shot1"]
    finally:
        led.close()
    _mark(ledger, "shot1/None")
    r = run_cli(["retake", "--ledger", str(ledger), "--manifest", str(m), "--yes"])
    assert r.exit_code == 0 and "queued 1 retake(s)" in r.stderr, r.output
    _promise_kept(sim, tmp_path, m, submit=1, queued=1)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_ledger_carries_into_a_run_exactly_the_retakes_it_counts_for_plan(backend, tmp_path, request):
    """The ledger's half, on both databases: for each expansion, the queued retakes
    ``retake_candidates().of_expansion`` counts are exactly the queued retakes ``record_run``
    puts in the new run (what its scheduler reads, ``queued_page``), and its marked clips those
    of the new membership."""
    from sqlalchemy import text

    from batchgen.jobs import Job

    url = str(tmp_path / "l.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    model = "grok-imagine-text-to-video"

    def job(i: int, take: str | None = None, retake_of: int | None = None) -> Job:
        return Job(f"{i:064x}", i, f"j{i}", "r", model, {"model": model, "prompt": f"p{i % 10}"}, f"j{i}.mp4",
                   take=take, retake_of=retake_of)

    j1, j2, j3 = job(1), job(2), job(3)
    led = Ledger(url)
    try:
        run, _ = led.record_run("/m.csv", "a" * 64, {}, [j1, j2, j3], lambda: None)
        ids = {j["key"]: j["id"] for j in led.iter_export()}
        with led.engine.begin() as c:
            c.execute(text("UPDATE jobs SET state = 'done'"))
        assert led.record_retakes([(run, job(12, "2", ids[j2.key]))]) == 1  # j2's retake...
        with led.engine.begin() as c:
            c.execute(text("UPDATE jobs SET state = 'done'"))
        retake = led.job(f"{12:064x}")
        assert retake is not None
        assert led.record_retakes([(run, job(22, "3", retake["id"]))]) == 1  # ... and a retake of it, queued
        led.decide([Change(ids[j3.key], verdict=Verdict.RETAKE)], "ann")  # j3 marked, not queued
        for expansion in ([j1, j3], [j1, j2, j3], [j1], [j1, j2], [j2, j3]):
            queued, marked = led.retake_candidates().of_expansion({j.key for j in expansion})
            new_run, total = led.record_run("/m.csv", "a" * 64, {}, expansion, lambda: None)
            carried = [j["key"] for j in led.queued_page(new_run, model, None, 100) if j["retake_of"] is not None]
            assert [j["key"] for j in queued] == carried, [j.name for j in expansion]
            members = {j["id"] for j in led.manifest_members("/m.csv") or []}
            assert [j["id"] for j in marked] == [j for j in (ids[j3.key],) if j in members]
            assert total == len(expansion) + 2 * (j2 in expansion)  # both takes of j2's chain are members
    finally:
        led.close()
