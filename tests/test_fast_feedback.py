"""Fast feedback before slow work (issue 28): what a command can check before its slow part
is checked first. ``plan`` and ``diff`` check the ledger (it exists, is a batchgen ledger, is
up to date) before they read and expand the manifest, so a mistyped ledger is said at once, not
after a million-row expansion; the manifest's own problems come once the ledger is right. A
ledger named through BATCHGEN_LEDGER follows the same rule as ``--ledger``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import run_cli, write_csv_manifest

# Row 2 names no model the catalog knows and row 3 asks for an impossible duration: both are
# only found by expanding the rows.
BAD_CSV = ("name,model,prompt,duration\n"
           "a,grok-imagine-text-to-video,a lighthouse,4\n"
           "b,no-such-model,a harbour,4\n"
           "c,grok-imagine-text-to-video,a storm,999\n")

COMMANDS = [["plan"], ["plan", "--explain"], ["plan", "--json"], ["plan", "--diff"], ["diff"], ["diff", "--json"]]


def _one_line(r, code: int, *needles: str) -> None:
    assert r.exit_code == code, r.output
    for n in needles:
        assert n in r.output, (n, r.output)
    assert "Traceback" not in r.output
    assert "no-such-model" not in r.output and "problem(s)" not in r.output  # the manifest was not expanded


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_missing_ledger_is_said_before_the_manifest_is_expanded(tmp_path, cmd):
    m = tmp_path / "bad.csv"
    m.write_text(BAD_CSV)
    missing = tmp_path / "missing.db"
    _one_line(run_cli([cmd[0], str(m), *cmd[1:], "--ledger", str(missing)]), 2, "no ledger at", str(missing))
    # named through the environment, the same answer (it was "never run", exit 0)
    _one_line(run_cli([cmd[0], str(m), *cmd[1:]], BATCHGEN_LEDGER=str(missing)), 2, "no ledger at", str(missing))
    assert not missing.exists()
    if "--json" in cmd:  # with --json the error is JSON on stdout too
        r = run_cli([cmd[0], str(m), *cmd[1:], "--ledger", str(missing)])
        assert json.loads(r.stdout)["exit_code"] == 2


@pytest.mark.parametrize("cmd", [["plan"], ["diff"]])
def test_another_applications_database_is_refused_before_the_manifest(tmp_path, cmd):
    db = tmp_path / "places.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    con.commit()
    con.close()
    m = tmp_path / "bad.csv"
    m.write_text(BAD_CSV)
    _one_line(run_cli([*cmd, str(m), "--ledger", str(db)]), 2, "not a batchgen ledger")
    _one_line(run_cli([*cmd, str(m)], BATCHGEN_LEDGER=str(db)), 2, "not a batchgen ledger")


def test_once_the_ledger_is_right_the_manifest_problems_are_named(tmp_path, monkeypatch):
    """The order is ledger, then manifest: with no ledger named and no ./batchgen.db (planning
    before the first run) the bad rows are what the command says."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHGEN_LEDGER", raising=False)
    m = tmp_path / "bad.csv"
    m.write_text(BAD_CSV)
    for cmd in (["plan"], ["diff"]):
        r = run_cli([*cmd, str(m)])
        assert r.exit_code == 2 and "no-such-model" in r.output and "no ledger" not in r.output, r.output
    good = write_csv_manifest(tmp_path / "good.csv", 3)
    r = run_cli(["plan", str(good), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["states"]["new"] == 3
    assert not (tmp_path / "batchgen.db").exists()  # planning never creates a ledger


def test_a_manifest_that_cannot_be_read_is_never_opened_when_the_ledger_is_wrong(tmp_path):
    """A FIFO with no writer as the manifest: reading it would block for ever. With a missing
    ledger the command ends at once (exit 2) — the manifest was never opened. Whole process,
    as a user would type it."""
    import os

    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "batchgen", "plan", str(fifo), "--ledger", str(tmp_path / "missing.db")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "no ledger at" in r.stderr, r.stderr


def test_options_that_do_not_go_together_are_refused_before_anything_is_read(tmp_path):
    m = tmp_path / "bad.csv"
    m.write_text(BAD_CSV)
    r = run_cli(["plan", str(m), "--diff", "--explain", "--ledger", str(tmp_path / "missing.db")])
    assert r.exit_code == 2 and "--explain" in r.output and "--diff" in r.output, r.output
    assert "no ledger" not in r.output and "no-such-model" not in r.output
