"""`batchgen retake` (issue 29): every clip marked retake gets a new take of the same request
(or of the request as the reviewer changed it, checked like a manifest row), queued only with
--yes, and the next run of the same manifest renders exactly those: 2 retakes → exactly 2 new
paid tasks, verified. Real simulator over loopback, real ledger."""

from __future__ import annotations

import json

import pytest

from batchgen.jobs import Verdict
from batchgen.ledger import Change, Ledger
from conftest import run_args, run_cli
from reviewpage import night


def _jobs(ledger) -> dict[str, dict]:
    led = Ledger(str(ledger), create=False)
    try:
        return {f"{j['name']}/{j['take']}": j for j in led.iter_export()}
    finally:
        led.close()


def test_two_retakes_make_exactly_two_new_paid_tasks(sim, tmp_path):
    ledger = night(sim, tmp_path, shots=3, takes=1, hostile=False, small=True)  # the paid tasks, not the clips
    jobs = _jobs(ledger)
    led = Ledger(str(ledger))
    try:
        led.decide([Change(jobs["shot00/1"]["id"], verdict=Verdict.RETAKE),
                    Change(jobs["shot01/1"]["id"], verdict=Verdict.RETAKE,
                           changes=json.dumps({"prompt": "A lighthouse at dawn, calm sea"})),
                    Change(jobs["shot02/1"]["id"], verdict=Verdict.APPROVE)], "ann")
    finally:
        led.close()
    r = run_cli(["retake", "--ledger", str(ledger)])
    assert r.exit_code == 2 and "2 retake(s): 2 new paid task(s)" in r.stderr and "--yes" in r.stderr
    assert "shot00: take 1 → take 2 (shot00-take2.mp4)" in r.stdout
    assert 'prompt: "A lighthouse at night number 1" → "A lighthouse at dawn, calm sea"' in r.stdout
    assert len(_jobs(ledger)) == 3  # nothing queued without --yes
    m = tmp_path / "night.csv"
    plan = json.loads(run_cli(["plan", str(m), "--ledger", str(ledger), "--json"]).stdout)
    assert plan["retakes"]["queued"] == 0 and plan["retakes"]["marked"] == 2
    r = run_cli(["retake", "--ledger", str(ledger), "--yes"])
    assert r.exit_code == 0 and "queued 2 retake(s)" in r.stderr
    again = run_cli(["retake", "--ledger", str(ledger), "--yes"])
    assert again.exit_code == 0 and "no clip is waiting for a retake" in again.stderr  # never queued twice
    plan = json.loads(run_cli(["plan", str(m), "--ledger", str(ledger), "--json"]).stdout)
    assert plan["retakes"]["queued"] == 2 and plan["retakes"]["credits"] > 0
    # ... and the forecast counts them (it said "nothing to submit" of a night of retakes only).
    T2V = "grok-imagine-text-to-video"
    assert plan["retakes"]["models"] == {T2V: 2}
    assert [(f["model"], f["jobs"]) for f in plan["forecast"]["models"]] == [(T2V, 2)]
    text = run_cli(["plan", str(m), "--ledger", str(ledger)]).stdout
    assert "forecast: ≈" in text and "nothing to submit" not in text, text
    diff = json.loads(run_cli(["diff", str(m), "--ledger", str(ledger), "--json"]).stdout)
    assert [(f["model"], f["jobs"]) for f in diff["forecast"]["models"]] == [(T2V, 2)]
    before = len(sim.truth()["creates"])
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    truth = sim.truth()
    assert len(truth["creates"]) == before + 2  # exactly the two retakes were paid for
    now = _jobs(ledger)
    assert set(now) == {"shot00/1", "shot01/1", "shot02/1", "shot00/2", "shot01/2"}
    for k in ("shot00/2", "shot01/2"):
        assert (now[k]["state"], now[k]["verify"]) == ("done", "ok")
    assert now["shot00/2"]["retake_of"] == jobs["shot00/1"]["id"]
    assert json.loads(now["shot01/2"]["request"])["prompt"] == "A lighthouse at dawn, calm sea"
    assert json.loads(now["shot00/2"]["request"]) == json.loads(jobs["shot00/1"]["request"])
    assert now["shot00/2"]["output"] == "shot00-take2.mp4"
    # the next run of the same manifest pays for nothing more
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0 and len(sim.truth()["creates"]) == before + 2


def test_a_change_the_catalog_refuses_is_named_and_nothing_is_queued(sim, tmp_path):
    ledger = night(sim, tmp_path, shots=1, takes=1, hostile=False)
    jobs = _jobs(ledger)
    led = Ledger(str(ledger))
    try:
        led.decide([Change(jobs["shot00/1"]["id"], verdict=Verdict.RETAKE,
                           changes=json.dumps({"duration": 99, "aspect_ration": "9:16"}))], "ann")
    finally:
        led.close()
    r = run_cli(["retake", "--ledger", str(ledger), "--yes"])
    assert r.exit_code == 2
    assert "retake of shot00" in r.stderr and "field 'duration'" in r.stderr
    assert "field 'aspect_ration'" in r.stderr and "did you mean 'aspect_ratio'" in r.stderr
    assert len(_jobs(ledger)) == 1


def _round_trip_0012(url: str, monkeypatch) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect, text

    from batchgen.jobs import Job
    from batchgen.ledger import migrations_dir, make_engine

    led = Ledger(url)
    run = led.start_run("/m.yaml", "0" * 64, {}, 2)
    led.upsert_jobs(run, [Job(key="a" * 64, seq=1, name="a", source="row 1", model="m",
                              request={"model": "m", "prompt": "p"}, output="a.mp4", take="1")])
    with led.engine.begin() as c:
        c.execute(text("UPDATE jobs SET state = 'done'"))
    led.decide([Change(1, verdict=Verdict.RETAKE, changes='{"prompt": "q"}')], "ann")
    led.record_retakes([(run, Job(key="b" * 64, seq=1, name="a", source="retake", model="m",
                                  request={"model": "m", "prompt": "q"}, output="a-take2.mp4", take="2", retake_of=1))])
    assert led.job("b" * 64)["retake_of"] == 1 and led.latest_decisions([1])[1]["changes"] == '{"prompt": "q"}'
    led.close()
    monkeypatch.setenv("BATCHGEN_LEDGER", url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.downgrade(cfg, "0011")
    engine = make_engine(url)
    with engine.connect() as c:
        assert "retake_of" not in {col["name"] for col in inspect(c).get_columns("jobs")}
        assert "changes" not in {col["name"] for col in inspect(c).get_columns("decisions")}
        assert c.execute(text("SELECT count(*) FROM jobs")).scalar() == 2  # the retake job stays a job
        assert c.execute(text("SELECT verdict FROM decisions")).scalar() == "retake"
    engine.dispose()
    command.upgrade(cfg, "head")
    led = Ledger(url)
    try:
        assert led.job("b" * 64)["retake_of"] is None and led.latest_decisions([1])[1]["changes"] is None
    finally:
        led.close()


def test_migration_0012_upgrades_and_downgrades_on_sqlite(tmp_path, monkeypatch):
    _round_trip_0012(f"sqlite:///{tmp_path / 'l.db'}", monkeypatch)



@pytest.mark.postgres
def test_migration_0012_upgrades_and_downgrades_on_postgres(pg_url, monkeypatch):
    _round_trip_0012(pg_url, monkeypatch)
