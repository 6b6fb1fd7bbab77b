from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.ledger import Ledger, Transition, _migrations_dir
from conftest import check_invariants, write_csv_manifest

pytestmark = pytest.mark.postgres


def test_migrations_match_models_on_postgres(pg_url, monkeypatch):
    Ledger(pg_url).close()  # migrate on open
    monkeypatch.setenv("BATCHGEN_LEDGER", pg_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    command.check(cfg)  # raises if the models and the migrations disagree


def test_run_resume_and_export_on_postgres(pg_url, sim_factory, tmp_path):
    sim = sim_factory(seed=2, p429=0.05, retry_after=0.05, p_truncate=0.1)
    m = write_csv_manifest(tmp_path / "m.csv", 25)
    args = ["run", str(m), "--api-base", sim.url, "--ledger", pg_url, "--out", str(tmp_path / "out"),
            "--rpm", "0", "--poll-min", "0.05", "-q", "--json"]
    r = CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": "sk-pg"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"done": 25}
    r = CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": "sk-pg"}, catch_exceptions=False)
    assert r.exit_code == 0 and len(sim.truth()["creates"]) == 25
    stats = check_invariants(sim.truth(), pg_url, tmp_path / "out")
    assert stats["done"] == 25 and stats["duplicates"] == 0
    e = CliRunner().invoke(cli, ["export", "--ledger", pg_url, "--json"])
    assert len(json.loads(e.stdout)) == 25


def test_constraints_on_postgres(pg_url):
    from batchgen.manifest import Job

    led = Ledger(pg_url)
    try:
        run = led.start_run("m", "0" * 64, {}, 2)
        led.upsert_jobs(run, [Job(f"{i:064x}", i, f"j{i}", "r", "m", {"i": i}, f"j{i}.mp4") for i in (1, 2)])
        ids = [j["id"] for j in led.iter_export()]
        led.apply([Transition(ids[0], "submitting", ("queued",)), Transition(ids[1], "submitting", ("queued",))])
        led.apply([Transition(ids[0], "submitted", ("submitting",), task_id="t-1")])
        with pytest.raises(Exception):
            led.apply([Transition(ids[1], "submitted", ("submitting",), task_id="t-1")])
        assert led.orphans_to_in_doubt()[0]["id"] == ids[1]
    finally:
        led.close()


def test_second_run_on_a_postgres_ledger_is_refused_and_the_lock_dies_with_its_holder(pg_url):
    from batchgen.errors import LedgerBusy

    a, b = Ledger(pg_url), Ledger(pg_url)
    try:
        a.acquire_lock()
        with pytest.raises(LedgerBusy):
            b.acquire_lock()
        a.close()  # as a killed process's connection would: the server releases the lock
        b.acquire_lock()
    finally:
        a.close()
        b.close()
