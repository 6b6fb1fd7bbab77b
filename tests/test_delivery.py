"""`run --deliver s3://…` against a real S3-compatible server (moto's, in its own process, over
HTTP, with authentication on): uploads with checksums, resume without re-uploading, kill -9
mid-upload, wrong credentials, missing bucket, pruning local copies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import KEY, check_invariants, page_data, run_args, run_cli, write_csv_manifest

ROOT = Path(__file__).resolve().parent.parent
DEST = "s3://renders/nightly/"


def _ledger_rows(tmp_path: Path) -> list[dict]:
    led = Ledger(str(tmp_path / "l.db"), create=False)
    try:
        return list(led.iter_export())
    finally:
        led.close()


def _assert_delivered(s3, tmp_path: Path, n: int, *, pictures: bool = True, in_doubt_allowed: bool = False) -> None:
    """Every done clip is in the bucket with the file's bytes, and the ledger says so. With
    ``in_doubt_allowed`` (random kills: a kill mid-create leaves its job in doubt, never
    resubmitted), the jobs that are not done are in doubt and none of them has an object."""
    objects = s3.objects("nightly/")
    rows = _ledger_rows(tmp_path)
    assert len(rows) == n
    if in_doubt_allowed:
        assert all(r["state"] in ("done", "in_doubt") for r in rows)
        rows = [r for r in rows if r["state"] == "done"]
    assert all(r["state"] == "done" for r in rows)
    for r in rows:
        key = "nightly/" + r["output"]
        assert r["delivered_url"] == f"s3://renders/{key}", r
        assert objects[key]["sha256"] == r["sha256"] == objects[key]["meta_sha256"]
        assert objects[key]["size"] == r["bytes"]
        if pictures:
            assert "nightly/.batchgen/" + r["output"] + ".poster.jpg" in objects
            assert "nightly/.batchgen/" + r["output"] + ".sheet.jpg" in objects
    assert len([k for k in objects if k.endswith(".mp4")]) == len(rows)  # nothing else, no stray halves


def delivery_events(tmp_path: Path) -> list[str]:
    """The ledger's "delivered …" event details, oldest first."""
    led = Ledger(str(tmp_path / "l.db"), create=False)
    try:
        with led.engine.connect() as c:
            return [r[0] for r in c.exec_driver_sql("SELECT detail FROM events WHERE detail LIKE 'delivered %' "
                                                    "ORDER BY id")]
    finally:
        led.close()


def _subprocess_run(sim, manifest: Path, tmp_path: Path, s3, *extra: str,
                    **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "BATCHGEN_CRASH_AT"}
    full.update(BATCHGEN_API_KEY=KEY, **s3.env(), **env)
    return subprocess.run([sys.executable, "-m", "batchgen", *run_args(sim, manifest, tmp_path, "-q", "--deliver",
                                                                       DEST, *extra)],
                          env=full, cwd=ROOT, capture_output=True, text=True, timeout=180)


def _crashed_run(zygote, sim, manifest: Path, tmp_path: Path, s3, point: str, *extra: str) -> None:
    """``batchgen run --deliver`` forked from the warm process (conftest's ``zygote``: a real
    process without a new interpreter's imports), ending at crash point ``point``: exit 137, as a
    SIGKILL there. A run that ended otherwise never reached its point and tested nothing."""
    env = {k: v for k, v in os.environ.items() if k != "BATCHGEN_CRASH_AT"}
    env.update(BATCHGEN_API_KEY=KEY, BATCHGEN_CRASH_AT=point, **s3.env())
    err = tmp_path / f"crash-{point.replace(':', '-')}.err"
    rc = zygote.start(run_args(sim, manifest, tmp_path, "-q", "--deliver", DEST, *extra), env=env, cwd=ROOT,
                      stderr=err).wait(180)
    assert rc == 137, (point, rc, err.read_text()[-3000:])


@pytest.mark.slow
def test_clips_and_pictures_are_delivered_with_their_checksums(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=3)
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST, "--json"), **s3.env())
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["delivery"] == {"destination": DEST, "delivered": 6, "undelivered": 0, "delivered_now": 6,
                                   "error": None}
    _assert_delivered(s3, tmp_path, 6)
    # export and report name the object
    e = run_cli(["export", "--ledger", str(tmp_path / "l.db"), "--json"])
    assert {j["delivered_url"] for j in json.loads(e.stdout)} == {f"s3://renders/nightly/shot{i:04d}.mp4"
                                                                  for i in range(6)}
    rep = run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(tmp_path / "r.html")])
    assert rep.exit_code == 0
    data = page_data((tmp_path / "r.html").read_text())
    col = data["fields"].index("delivered")
    assert {data["strings"][r[col]] for r in data["rows"]} == {"s3://renders/nightly/"}  # one shared prefix
    # a re-run of the finished manifest uploads nothing and creates nothing
    before = {k: v["sha256"] for k, v in s3.objects().items()}
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST, "--json"), **s3.env())
    assert r.exit_code == 0 and json.loads(r.stdout)["delivery"]["delivered_now"] == 0
    assert {k: v["sha256"] for k, v in s3.objects().items()} == before
    assert len(sim.truth()["creates"]) == 6


def test_manifest_deliver_key_and_no_verify(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=4)
    (tmp_path / "m.yaml").write_text(
        'deliver: "s3://renders/nightly/"\n'
        "defaults: {model: grok-imagine-text-to-video, duration: 6}\n"
        "jobs:\n  - {name: a, prompt: a lighthouse}\n  - {name: b, prompt: a harbour}\n")
    # --no-deliver overrides the manifest (no bucket check: wrong credentials do not matter)
    r = run_cli(run_args(sim, tmp_path / "m.yaml", tmp_path, "--no-verify", "--no-deliver"),
                **s3.env(AWS_SECRET_ACCESS_KEY="wrong"))
    assert r.exit_code == 0 and "delivered to" not in r.output and s3.objects() == {}
    r = run_cli(run_args(sim, tmp_path / "m.yaml", tmp_path, "--no-verify"), **s3.env())
    assert r.exit_code == 0, r.output
    assert "delivered to s3://renders/nightly/: 2 clip(s)" in r.output
    _assert_delivered(s3, tmp_path, 2, pictures=False)


@pytest.mark.slow
def test_crash_after_upload_then_resume_uploads_nothing_twice(sim_factory, s3, tmp_path, zygote):
    sim = sim_factory(seed=5)
    m = write_csv_manifest(tmp_path / "m.csv", 4)
    # Killed after the store acknowledged the 2nd clip, before the ledger recorded it.
    _crashed_run(zygote, sim, m, tmp_path, s3, "after_upload_before_record:2")
    stored = s3.objects("nightly/")
    assert len([k for k in stored if k.endswith(".mp4")]) >= 2
    p = _subprocess_run(sim, m, tmp_path, s3, "--json")
    assert p.returncode == 0, p.stderr
    _assert_delivered(s3, tmp_path, 4)
    details = delivery_events(tmp_path)
    # Each clip recorded delivered once; the one whose record was lost was found already there.
    assert len(details) == 4 and sum("(already there)" in d for d in details) >= 1
    assert len(sim.truth()["creates"]) == 4


@pytest.mark.slow
def test_kill_mid_upload_leaves_no_object_that_counts(sim_factory, s3, tmp_path, zygote):
    sim = sim_factory(seed=6)
    m = write_csv_manifest(tmp_path / "m.csv", 4)
    _crashed_run(zygote, sim, m, tmp_path, s3, "mid_upload:3")
    rows = _ledger_rows(tmp_path)
    objects = s3.objects("nightly/")
    for r in rows:  # whatever the ledger calls delivered is complete in the store
        if r["delivered_url"]:
            assert objects["nightly/" + r["output"]]["sha256"] == r["sha256"]
    assert sum(1 for r in rows if r["delivered_url"]) < 4
    p = _subprocess_run(sim, m, tmp_path, s3)
    assert p.returncode == 0, p.stderr
    _assert_delivered(s3, tmp_path, 4)
    assert len(sim.truth()["creates"]) == 4


def test_wrong_credentials_stop_before_anything_is_paid(sim_factory, s3, tmp_path):
    sim = sim_factory()
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST), **s3.env(AWS_SECRET_ACCESS_KEY="wrong-secret"))
    assert r.exit_code == 8
    assert "delivery to s3://renders/nightly/" in r.output and "403" in r.output
    assert "wrong-secret" not in r.output and s3.secret not in r.output
    assert sim.truth()["creates"] == [] and not (tmp_path / "l.db").exists()  # nothing paid, nothing recorded
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST), **s3.env(AWS_ACCESS_KEY_ID="AKIAUNKNOWN"))
    assert r.exit_code == 8 and sim.truth()["creates"] == []


def test_missing_bucket_and_bad_destination(sim_factory, s3, tmp_path):
    sim = sim_factory()
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", "s3://no-such-bucket/x/"), **s3.env())
    assert r.exit_code == 8 and "the bucket does not exist" in r.output
    for bad in ("https://renders/x", "s3:///x", "s3://renders/../x", "s3://Bad_Bucket!/x/", "s3://ab/x"):
        r = run_cli(run_args(sim, m, tmp_path, "--deliver", bad), **s3.env())
        assert r.exit_code == 2 and "--deliver" in r.output, (bad, r.output)
    r = run_cli(run_args(sim, m, tmp_path, "--prune-local"), **s3.env())
    assert r.exit_code == 2 and "--prune-local" in r.output
    assert sim.truth()["creates"] == []


@pytest.mark.slow
def test_store_failing_mid_run_keeps_clips_and_next_run_delivers(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=8)
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    # The bucket vanishes after the pre-flight check: every upload is refused.
    from batchgen import deliver

    real_put = deliver.S3Store.put

    def refusing_put(self, path, relative, sha256, content_type):
        raise deliver.DeliveryError("delivery to s3://renders/nightly/: uploading refused (NoSuchBucket)", fatal=True)

    deliver.S3Store.put = refusing_put
    try:
        r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST, "--json"), **s3.env())
    finally:
        deliver.S3Store.put = real_put
    assert r.exit_code == 8, r.output
    d = json.loads(r.stdout)["delivery"]
    assert d["undelivered"] == 3 and "NoSuchBucket" in d["error"]
    assert all(Path(row["output_path"]).exists() and row["delivery_error"] for row in _ledger_rows(tmp_path))
    st = run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"])
    doc = json.loads(st.stdout)
    assert doc["delivered"] == 0 and len(doc["not_delivered"]) == 3 and "NoSuchBucket" in doc["not_delivered"][0]["error"]
    assert "not delivered: shot" in run_cli(["status", "--ledger", str(tmp_path / "l.db")]).stdout
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST), **s3.env())
    assert r.exit_code == 0, r.output
    _assert_delivered(s3, tmp_path, 3)
    assert len(sim.truth()["creates"]) == 3  # delivered from the local files, never rendered again
    doc = json.loads(run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert doc["delivered"] == 3 and doc["not_delivered"] == []


@pytest.mark.slow
def test_prune_local_after_delivery(sim_factory, s3, tmp_path):
    sim = sim_factory(seed=9)
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST, "--prune-local"), **s3.env())
    assert r.exit_code == 0, r.output
    _assert_delivered(s3, tmp_path, 3)
    assert not list((tmp_path / "out").rglob("*.mp4")) and not list((tmp_path / "out").rglob("*.jpg"))
    assert all(row["pruned_at"] for row in _ledger_rows(tmp_path))
    # verify knows the clips were delivered and pruned, not lost
    v = run_cli(["verify", "--ledger", str(tmp_path / "l.db"), "--json"])
    assert v.exit_code == 0, v.output
    assert "missing" not in json.loads(v.stdout).get("counts", {})
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST), **s3.env())
    assert r.exit_code == 0 and len(sim.truth()["creates"]) == 3


@pytest.mark.slow
def test_kill_minus_9_with_delivery_on(sim_factory, s3, tmp_path, zygote):
    """The chaos check with --deliver: the delivery crash points and random kills, then every
    money invariant and every delivered object's checksum. The killed runs are forked from the
    warm process (conftest's ``zygote``: real processes, a real SIGKILL or exit 137, without a
    new interpreter's imports each), and each crash point must really end its run: a run that
    finished before reaching its point tested nothing."""
    sim = sim_factory(seed=12, render_min=0.3, render_max=1.0, p429=0.05, retry_after=0.05, p_truncate=0.05)
    m = write_csv_manifest(tmp_path / "m.csv", 40, small=True)  # each clip verified and drawn, in every run
    # Each point counts from its own run's start: the 2nd clip uploaded, the 5th recorded, the
    # 9th — 16 of the 40 at most, so each run meets its point with clips still to deliver.
    for point in ("mid_upload:2", "after_upload_before_record:5", "mid_upload:9"):
        _crashed_run(zygote, sim, m, tmp_path, s3, point)
    args = run_args(sim, m, tmp_path, "-q", "--deliver", DEST)
    env = {k: v for k, v in os.environ.items() if k != "BATCHGEN_CRASH_AT"}
    env.update(BATCHGEN_API_KEY=KEY, **s3.env())
    rng = random.Random(99)
    for _ in range(6):
        proc = zygote.start(args, env=env, cwd=ROOT)
        time.sleep(rng.uniform(0.5, 2.0))  # the moment of the kill: random, by design not an event
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    for _ in range(5):  # to the end, in this process (no imports to pay again: ~1 s of CPU a run)
        if run_cli(run_args(sim, m, tmp_path, "-q", "--deliver", DEST), **s3.env()).exit_code == 0:
            break
    stats = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    # A kill between a job's intent and its task id leaves it in doubt (never resubmitted);
    # how many depends on the machine's speed. Everything else is done and delivered.
    assert stats["duplicates"] == 0 and stats["done"] + stats["in_doubt"] == 40 and stats["done"] > 0
    _assert_delivered(s3, tmp_path, 40, in_doubt_allowed=True)
