"""`batchgen stop` from another terminal and `batchgen cancel`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.ledger import Ledger
from conftest import KEY, run_args, run_cli, write_csv_manifest


# ------------------------------------------------------------------ stop / cancel / logs
@pytest.mark.slow
def test_stop_from_another_terminal_drains_the_run(sim_factory, tmp_path):
    sim = sim_factory(render_min=3.0, render_max=4.0)
    m = write_csv_manifest(tmp_path / "m.csv", 40)
    env = {**os.environ, "BATCHGEN_API_KEY": KEY}
    p = subprocess.Popen([sys.executable, "-m", "batchgen", *run_args(sim, m, tmp_path, "-q")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not sim.truth()["creates"]:
        time.sleep(0.1)
    r = run_cli(["stop", "--ledger", str(tmp_path / "l.db")])
    assert r.exit_code == 0
    t = time.monotonic()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 3 and time.monotonic() - t < 10, err
    led = Ledger(str(tmp_path / "l.db"))
    counts = led.counts()
    led.close()
    assert "submitting" not in counts and "in_doubt" not in counts and counts.get("queued", 0) > 0
    assert run_cli(["stop", "--ledger", str(tmp_path / "l.db")]).exit_code == 2  # nothing running now


@pytest.mark.slow
def test_cancel_marks_unsubmitted_jobs_so_they_are_never_submitted(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 10)
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--max-credits", "5"))  # only the first few fit
    assert r.exit_code == 3
    created = len(sim.truth()["creates"])
    r = run_cli(["cancel", "--run", "1", "--ledger", str(tmp_path / "l.db")])
    assert r.exit_code == 0 and f"{10 - created} unsubmitted" in r.stderr
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--json"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": created, "cancelled": 10 - created}
    assert len(sim.truth()["creates"]) == created
    r = CliRunner().invoke(cli, ["cancel", "--help"])
    assert "no cancel endpoint" in r.output


