"""What a run leaves behind is finished later, whatever was edited since (issue 18): delivery
scoped by what a manifest asks for (not the bytes of its file), `batchgen deliver` without a
manifest, strays recorded, interrupted pruning finished, and `batchgen recover` for lost clips.
Real S3-compatible server (moto, own process), real files, the simulator over loopback."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import run_args, run_cli
from test_delivery import DEST, _assert_delivered, _crashed_run, _ledger_rows, delivery_events

TWO = ('deliver: "s3://renders/nightly/"\n'
       "defaults: {model: grok-imagine-text-to-video, duration: 2, resolution: 480p}\n"
       "jobs:\n  - {name: a, prompt: a lighthouse}\n  - {name: b, prompt: a harbour}\n")


def _metrics(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("batchgen_clips_") and "{" in line:
            name, value = line.split("{", 1)[0], line.rsplit(" ", 1)[1]
            out[name] = float(value)
    return out


@pytest.mark.slow
def test_an_edited_manifest_still_delivers_what_an_earlier_run_left(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=21)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    r = run_cli(run_args(sim, m, tmp_path, "--no-deliver"), **s3.env())
    assert r.exit_code == 0, r.output
    assert s3.objects() == {}
    st = json.loads(run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert st["undelivered"] == 2 and {j["destination"] for j in st["not_delivered"]} == {DEST}
    m.write_text(TWO + "# tonight\n")  # any edit: a comment
    r = run_cli(run_args(sim, m, tmp_path, "--json", "--metrics-file", str(tmp_path / "m.prom")), **s3.env())
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["delivery"]
    assert (d["delivered"], d["undelivered"], d["delivered_now"]) == (2, 0, 2)
    _assert_delivered(s3, tmp_path, 2)
    assert len(sim.truth()["creates"]) == 2  # delivered from the local files, never rendered again
    prom = _metrics(tmp_path / "m.prom")
    assert prom["batchgen_clips_delivered"] == 2 and prom["batchgen_clips_undelivered"] == 0


def test_store_outage_then_edited_manifest_counts_agree_with_the_bucket(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=22)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    from batchgen import deliver

    real_put = deliver.S3Store.put

    def refusing_put(self, path, relative, sha256, content_type):
        raise deliver.DeliveryError("delivery to s3://renders/nightly/: uploading refused (NoSuchBucket)", fatal=True)

    deliver.S3Store.put = refusing_put
    try:
        r = run_cli(run_args(sim, m, tmp_path, "--json"), **s3.env())
    finally:
        deliver.S3Store.put = real_put
    assert r.exit_code == 8, r.output
    assert json.loads(r.stdout)["delivery"]["undelivered"] == 2
    # the next night: one row added, one comment
    m.write_text(TWO + "  - {name: c, prompt: a pier}\n# edited\n")
    r = run_cli(run_args(sim, m, tmp_path, "--json", "--report", str(tmp_path / "r.html")), **s3.env())
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["delivery"]
    assert (d["delivered"], d["undelivered"]) == (3, 0)
    _assert_delivered(s3, tmp_path, 3)
    st = json.loads(run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert st["delivered"] == 3 and st["undelivered"] == 0 and st["not_delivered"] == []
    assert len([k for k in s3.objects("nightly/") if k.endswith(".mp4")]) == 3


def test_batchgen_deliver_needs_no_manifest(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=23)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    assert run_cli(run_args(sim, m, tmp_path, "--no-deliver")).exit_code == 0
    m.unlink()  # the manifest is gone: the ledger knows what is owed where
    led = ["--ledger", str(tmp_path / "l.db")]
    r = run_cli(["deliver", *led, "--json"], **s3.env())
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["delivered_now"] == {DEST: 2} and doc["undelivered"] == 0 and doc["delivered"] == 2
    _assert_delivered(s3, tmp_path, 2)
    r = run_cli(["deliver", *led], **s3.env())  # nothing left: says so, exit 0
    assert r.exit_code == 0 and "2 clip(s) delivered, 0 not yet" in r.output
    # wrong credentials: exit 8, one line, the secret not printed, nothing recorded as delivered
    m.write_text(TWO.replace("a pier", "x") + "  - {name: z, prompt: a tide}\n")
    assert run_cli(run_args(sim, m, tmp_path, "--no-deliver")).exit_code == 0
    r = run_cli(["deliver", *led], **s3.env(AWS_SECRET_ACCESS_KEY="wrong-secret"))
    assert r.exit_code == 8 and "wrong-secret" not in r.output and "403" in r.output
    assert sum(1 for row in _ledger_rows(tmp_path) if row["delivered_url"]) == 2


def test_deliver_to_a_destination_no_manifest_named(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=24)
    m = tmp_path / "m.yaml"
    m.write_text(TWO.replace('deliver: "s3://renders/nightly/"\n', ""))
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    r = run_cli(["deliver", "--ledger", str(tmp_path / "l.db")], **s3.env())
    assert r.exit_code == 0 and s3.objects() == {}  # nothing was asked to be delivered
    r = run_cli(["deliver", "--ledger", str(tmp_path / "l.db"), "--to", DEST, "--manifest", str(m)], **s3.env())
    assert r.exit_code == 0, r.output
    _assert_delivered(s3, tmp_path, 2)
    r = run_cli(["deliver", "--ledger", str(tmp_path / "l.db"), "--to", "s3://renders/x/", "--manifest",
                 str(tmp_path / "other.yaml")], **s3.env())
    assert r.exit_code == 2 and "no run of this manifest" in r.output


@pytest.mark.slow
def test_stray_upload_before_a_kill_is_recorded_by_the_next_run_of_an_edited_manifest(sim_factory, s3, tmp_path,
                                                                                     zygote):
    sim = sim_factory(seed=25)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    _crashed_run(zygote, sim, m, tmp_path, s3, "after_upload_before_record:1")  # exit 137 there, or it fails
    m.write_text(TWO + "# edited after the crash\n")
    # The next run in this process: only the killed one needs a process of its own (a new
    # interpreter cost ~1 s of imports, boto3's included).
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--deliver", DEST, "--json"), **s3.env())
    assert r.exit_code == 0, r.output
    _assert_delivered(s3, tmp_path, 2)
    details = delivery_events(tmp_path)
    assert len(details) == 2 and sum("(already there)" in d for d in details) >= 1  # strays: recorded, not re-sent


@pytest.mark.slow
def test_pruning_a_kill_interrupted_is_finished_by_the_next_run(sim_factory, s3, tmp_path, zygote):
    sim = sim_factory(seed=26)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    _crashed_run(zygote, sim, m, tmp_path, s3, "before_prune:1", "--prune-local")  # exit 137 there, or it fails
    left = [r for r in _ledger_rows(tmp_path) if r["delivered_url"] and not r["pruned_at"]]
    assert left and all(Path(r["output_path"]).exists() for r in left)
    m.write_text(TWO + "# edited\n")
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--deliver", DEST, "--prune-local"), **s3.env())  # in this process
    assert r.exit_code == 0, r.output
    rows = _ledger_rows(tmp_path)
    assert all(r["pruned_at"] and not Path(r["output_path"]).exists() for r in rows)
    assert not list((tmp_path / "out").rglob("*.mp4"))
    _assert_delivered(s3, tmp_path, 2)


@pytest.mark.slow
def test_recover_a_deleted_clip_free_while_its_url_is_valid(sim_factory, tmp_path):
    sim = sim_factory(seed=27)
    m = tmp_path / "m.yaml"
    m.write_text(TWO.replace('deliver: "s3://renders/nightly/"\n', ""))
    led = ["--ledger", str(tmp_path / "l.db")]
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    lost = Path(_ledger_rows(tmp_path)[0]["output_path"])
    lost.unlink()
    v = run_cli(["verify", *led])
    assert v.exit_code == 1 and "MISSING" in v.output and "batchgen recover" in v.output
    plan = run_cli(["plan", str(m), *led, "--explain", "--json"])
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["states"]["lost"] == 1
    r = run_cli(["recover", *led])
    assert r.exit_code == 0 and "1 clip(s) will be fetched again" in r.output, r.output
    creates = len(sim.truth()["creates"])
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 0, r.output
    assert lost.exists() and len(sim.truth()["creates"]) == creates  # fetched again, not paid again
    assert run_cli(["verify", *led]).exit_code == 0


def test_recover_an_expired_clip_says_what_it_costs_before_it_spends(sim_factory, tmp_path):
    sim = sim_factory(seed=28)
    m = tmp_path / "m.yaml"
    m.write_text(TWO.replace('deliver: "s3://renders/nightly/"\n', ""))
    led = ["--ledger", str(tmp_path / "l.db")]
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    lost = Path(_ledger_rows(tmp_path)[1]["output_path"])
    lost.unlink()
    ledger = Ledger(str(tmp_path / "l.db"), create=False)
    with ledger.engine.begin() as c:  # a day and more later: the result URL has expired
        c.exec_driver_sql("UPDATE jobs SET result_at = ?", (time.time() - 25 * 3600,))
    ledger.close()
    r = run_cli(["recover", *led])
    assert r.exit_code == 0 and "can only be rendered again (paid)" in r.output and "credits" in r.output
    r = run_cli(["recover", *led, "--rerender"])
    assert r.exit_code == 2 and "1 new paid task(s)" in r.output and "--yes" in r.output
    creates = len(sim.truth()["creates"])
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 1  # still lost: the run says so, pays nothing
    assert len(sim.truth()["creates"]) == creates
    r = run_cli(["recover", *led, "--rerender", "--yes"])
    assert r.exit_code == 0 and "queued to render again" in r.output, r.output
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 0, r.output
    assert lost.exists() and len(sim.truth()["creates"]) == creates + 1
    assert os.path.getsize(lost) > 0


def test_start_of_run_sweeps_page_through_what_earlier_runs_left(sim_factory, s3, tmp_path, monkeypatch):
    """Clips left unverified and undelivered by earlier runs are swept page by page (a
    million of them must never be read at once): with pages of 2, seven clips are all
    verified, then all delivered, each exactly once."""
    from batchgen.pipeline import context

    monkeypatch.setattr(context, "SWEEP_PAGE", 2)
    sim = sim_factory(seed=33)
    m = tmp_path / "m.yaml"
    m.write_text('deliver: "s3://renders/nightly/"\n'
                 "defaults: {model: grok-imagine-text-to-video, duration: 2, resolution: 480p}\n"
                 "jobs:\n" + "".join(f"  - {{name: c{i}, prompt: a lighthouse number {i}}}\n" for i in range(7)))
    r = run_cli(run_args(sim, m, tmp_path, "--no-verify", "--no-deliver"), **s3.env())
    assert r.exit_code == 0, r.output
    r = run_cli(run_args(sim, m, tmp_path, "--json"), **s3.env())
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["verified"] == {"ok": 7}, out
    assert (out["delivery"]["delivered"], out["delivery"]["delivered_now"], out["delivery"]["undelivered"]) == (7, 7, 0)
    _assert_delivered(s3, tmp_path, 7)
    assert len(sim.truth()["creates"]) == 7


def test_a_refusing_destination_is_said_before_any_clip_is_verified(sim_factory, s3, tmp_path):
    """Fast feedback before slow work (issue 28): `batchgen deliver` checks every destination
    (credentials, bucket) before it reads back the clips never verified, so wrong credentials
    are said at once and nothing is verified, recorded or uploaded."""
    sim = sim_factory(seed=34)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    assert run_cli(run_args(sim, m, tmp_path, "--no-verify", "--no-deliver")).exit_code == 0
    assert {row["verify"] for row in _ledger_rows(tmp_path)} == {None}  # owed to DEST, never verified
    led = ["--ledger", str(tmp_path / "l.db")]
    r = run_cli(["deliver", *led], **s3.env(AWS_SECRET_ACCESS_KEY="wrong-secret"))
    assert r.exit_code == 8 and "403" in r.output and "verifying" not in r.output, r.output
    rows = _ledger_rows(tmp_path)
    assert {row["verify"] for row in rows} == {None} and not any(row["delivered_url"] for row in rows)
    assert s3.objects() == {}
    # with the right credentials the same command verifies, then delivers
    r = run_cli(["deliver", *led, "--json"], **s3.env())
    assert r.exit_code == 0, r.output
    assert {row["verify"] for row in _ledger_rows(tmp_path)} == {"ok"}
    _assert_delivered(s3, tmp_path, 2)
