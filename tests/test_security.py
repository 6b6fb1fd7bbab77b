"""Security battery: the API key never leaks; hostile manifests are refused quickly and within a
memory bound; hostile names never write outside --out."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.errors import ManifestError
from batchgen.manifest import Manifest
from conftest import write_csv_manifest

CANARY = "sk-CANARY-7f3a9c1e5b2d"


@pytest.mark.slow
def test_canary_key_appears_nowhere(sim_factory, tmp_path):
    sim = sim_factory(seed=8, p500_after=0.2, p429=0.2, retry_after=0.05, p_fail=0.2, p_truncate=0.2)
    m = write_csv_manifest(tmp_path / "m.csv", 12)
    log = tmp_path / "run.jsonl"
    env = {"BATCHGEN_API_KEY": CANARY}
    runner = CliRunner()
    outputs = []
    outputs.append(runner.invoke(cli, ["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"),
                                       "--out", str(tmp_path / "out"), "--rpm", "0", "--poll-min", "0.05",
                                       "--progress-every", "1", "--log-file", str(log), "--log-format", "json"], env=env).output)
    # a key the API refuses: the error path must not echo it either
    bad = sim_factory(api_key="sk-something-else")
    outputs.append(runner.invoke(cli, ["run", str(m), "--api-base", bad.url, "--ledger", str(tmp_path / "l2.db"),
                                       "--out", str(tmp_path / "out2"), "--log-file", str(log)], env=env).output)
    outputs.append(runner.invoke(cli, ["export", "--ledger", str(tmp_path / "l.db"), "-o", str(tmp_path / "r.csv")]).output)
    outputs.append(runner.invoke(cli, ["report", "--ledger", str(tmp_path / "l.db"), "-o", str(tmp_path / "r.html")]).output)
    outputs.append(runner.invoke(cli, ["status", "--ledger", str(tmp_path / "l.db"), "--json"]).output)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and log.exists()
    for text in outputs:
        assert CANARY not in text
    for p in files:
        assert CANARY.encode() not in p.read_bytes(), p
    assert "download_with_authorization" not in sim.truth()["counters"]["faults"]


def test_alias_bomb_and_huge_file_are_refused_fast_and_small(tmp_path):
    bomb = "a: &a [" + ",".join(["x"] * 50) + "]\n" + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 50) + "]\n" for p, c in zip("abcdefghij", "bcdefghijk"))
    (tmp_path / "bomb.yaml").write_text(bomb)
    with open(tmp_path / "huge.yaml", "wb") as f:
        f.truncate(100 * 1024 * 1024)
    deep = tmp_path / "deep.yaml"
    deep.write_text("jobs: " + "[" * 5000 + "]" * 5000 + "\n")
    for p in (tmp_path / "bomb.yaml", tmp_path / "huge.yaml", deep):
        tracemalloc.start()
        t = time.process_time()  # CPU, not wall: the bound is on the work, not on a busy machine
        with pytest.raises(ManifestError):
            Manifest(p).validate()
        elapsed = time.process_time() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 5 and peak < 64 * 1024 * 1024, (p.name, elapsed, peak)


def test_hostile_names_never_write_outside_out(sim, tmp_path):
    m = tmp_path / "m.csv"
    names = ["../../escape", "/etc/passwd", "a\x00b", "CON", "...x", "x" * 300, "..", "~root"]
    m.write_text("name,model,prompt\n" + "".join(
        f'"{n}",grok-imagine-text-to-video,hostile {i}\n' for i, n in enumerate(names)))
    before = {p for p in tmp_path.parent.rglob("*")}
    r = CliRunner().invoke(cli, ["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"), "--out",
                                 str(tmp_path / "out"), "--rpm", "0", "--poll-min", "0.05", "-q", "--json"],
                           env={"BATCHGEN_API_KEY": "k"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"done": len(names)}
    new = {p for p in tmp_path.parent.rglob("*")} - before
    outside = [p for p in new if tmp_path / "out" not in p.parents and p.parent != tmp_path]
    assert outside == []
    for p in (tmp_path / "out").rglob("*.mp4"):
        assert len(p.name) <= 90 and "\x00" not in p.name and not p.name.startswith(".")
