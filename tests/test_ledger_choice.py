"""Which ledger a command reads (issue 23, "Where did my run go?"): `run --simulate` writes
./batchgen-sim.db, so every other command that takes --ledger also takes --simulate (that
default), and when ./batchgen.db is missing but ./batchgen-sim.db exists it says so in one line
(exit 2) instead of reading nothing. A URL that cannot be a ledger (postgres://) is named by every
command, not only `run`. Through the CLI, on real SQLite files."""

from __future__ import annotations

import json

import pytest

from batchgen.ledger import Ledger
from conftest import run_cli, write_csv_manifest

MANIFEST = "defaults: {model: grok-imagine-text-to-video, prompt: a lighthouse}\njobs:\n  - {name: a, duration: 4}\n"


def _commands(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(MANIFEST)
    return [["status"], ["export"], ["report", "-o", str(tmp_path / "r.html")], ["plan", str(m)], ["diff", str(m)],
            ["verify"], ["deliver", "--to", str(tmp_path / "store")], ["recover"], ["resolve", "abcdef", "--abandon"],
            ["stop"], ["cancel", "--run", "1"], ["db", "upgrade"]]


def _error_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def sim_only(tmp_path, monkeypatch):
    """A folder holding only the ledger `run --simulate` leaves (a real, empty ledger)."""
    monkeypatch.chdir(tmp_path)
    Ledger("batchgen-sim.db").close()
    return tmp_path


def test_every_ledger_command_names_the_simulated_ledger_when_the_default_is_missing(sim_only):
    for cmd in _commands(sim_only):
        r = run_cli(cmd, BATCHGEN_LEDGER=None)
        assert r.exit_code == 2, (cmd, r.output)
        line = _error_line(r)
        assert "./batchgen.db" in line and "--simulate" in line and "--ledger batchgen-sim.db" in line, line
    assert not (sim_only / "batchgen.db").exists()


def test_simulate_reads_the_simulated_ledger(sim_only):
    r = run_cli(["status", "--simulate", "--json"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"] == []
    m = sim_only / "m.yaml"
    m.write_text(MANIFEST)
    r = run_cli(["plan", str(m), "--simulate", "--json"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["to_submit"] == 1
    assert run_cli(["export", "--simulate", "--json"], BATCHGEN_LEDGER=None).exit_code == 0
    # The real ledger, once it exists, is the default again: no hint, no error.
    Ledger("batchgen.db").close()
    assert run_cli(["status"], BATCHGEN_LEDGER=None).exit_code == 0


def test_simulate_and_ledger_together_is_a_usage_error(sim_only):
    r = run_cli(["status", "--simulate", "--ledger", "other.db"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 2 and "--simulate and --ledger" in _error_line(r)


def test_simulate_without_a_simulated_ledger_says_none_is_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli(["status", "--simulate"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 2 and "batchgen-sim.db" in _error_line(r)
    assert not (tmp_path / "batchgen-sim.db").exists()


def test_plan_and_diff_with_simulate_before_any_simulated_run_plan_against_nothing(tmp_path, monkeypatch):
    """--simulate's ./batchgen-sim.db is a default, like ./batchgen.db: before the first simulated
    run, plan and diff say what a run would do (everything new), not "no ledger" (exit 2), and
    create nothing. A ledger named --ledger batchgen-sim.db must exist, as any named one."""
    monkeypatch.chdir(tmp_path)
    m = tmp_path / "m.yaml"
    m.write_text(MANIFEST)
    r = run_cli(["plan", str(m), "--simulate", "--json"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["to_submit"] == 1
    assert run_cli(["diff", str(m), "--simulate"], BATCHGEN_LEDGER=None).exit_code == 0
    r = run_cli(["plan", str(m), "--ledger", "batchgen-sim.db"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 2 and "batchgen-sim.db" in _error_line(r)
    # BATCHGEN_LEDGER names a ledger under --simulate too: it must exist.
    r = run_cli(["plan", str(m), "--simulate"], BATCHGEN_LEDGER=str(tmp_path / "typo.db"))
    assert r.exit_code == 2 and "typo.db" in _error_line(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]


@pytest.mark.slow
def test_a_run_with_simulate_is_found_by_status_and_export_with_simulate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    assert run_cli(["run", str(m), "--simulate", "--out", "out", "-q"], BATCHGEN_LEDGER=None).exit_code == 0
    assert "--simulate" in _error_line(run_cli(["export"], BATCHGEN_LEDGER=None))
    r = run_cli(["export", "--simulate", "--json"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 0 and [j["state"] for j in json.loads(r.stdout)] == ["done"], r.output


@pytest.mark.parametrize("url", ["postgres://u:secret@localhost/db", "postgresql://u:secret@localhost/db"])
def test_every_ledger_command_names_the_postgresql_driver_url(tmp_path, url):
    for cmd in _commands(tmp_path):
        r = run_cli([*cmd, "--ledger", url])
        assert r.exit_code == 2, (cmd, r.output)
        line = _error_line(r)
        assert "postgresql+psycopg://" in line and "secret" not in r.output, line


def test_a_named_ledger_that_does_not_exist_is_an_error_for_plan_and_diff(tmp_path):
    for cmd in _commands(tmp_path)[:5]:
        r = run_cli([*cmd, "--ledger", str(tmp_path / "typo.db")])
        assert r.exit_code == 2 and "typo.db" in _error_line(r), (cmd, r.output)
        assert not (tmp_path / "typo.db").exists()
