"""Outputs on a tiny tmpfs: downloads fail cleanly (no temp file, no partial final file), no new
task is paid for, the results stay collectable, and the run completes when space returns."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.ledger import Ledger
from conftest import check_invariants, write_csv_manifest


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs("size=40k")


@pytest.mark.tmpfs
def test_disk_full_then_space_returns(sim_factory, tmp_path, small_disk):
    sim = sim_factory(media="stub", file_min=12000, file_max=14000)  # three files fit in 40k, not twelve
    m = write_csv_manifest(tmp_path / "m.csv", 12)
    args = ["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"), "--out", str(small_disk),
            "--concurrency", "4", "--rpm", "0", "--poll-min", "0.05", "-q", "--json", "--no-verify"]  # stub files are not video
    env = {"BATCHGEN_API_KEY": "sk-disk"}
    r = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    s = json.loads(r.stdout)
    assert r.exit_code == 3 and "cannot write to the output folder" in s["reason"]
    assert 0 < s["counts"].get("done", 0) < 12
    assert not list(small_disk.rglob("*.part"))
    for p in small_disk.rglob("*.mp4"):  # what is there is whole
        assert p.read_bytes()[4:8] == b"ftyp"
    created = len(sim.truth()["creates"])
    assert created < 12  # submission stopped once the disk was full
    led = Ledger(str(tmp_path / "l.db"))
    counts = led.counts()
    led.close()
    assert counts.get("completed", 0) >= 1 and "failed" not in counts  # results kept for the next run
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    r = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 12}
    stats = check_invariants(sim.truth(), tmp_path / "l.db", small_disk)
    assert stats["creates"] == 12 and stats["done"] == 12
