"""Know what you got (issue 13): every delivered clip is read back with PyAV and compared with
its request — ok, mismatch (naming the field) or undecodable — recorded, exported, summarised,
resumable after a crash, re-checkable with `batchgen verify`, with a poster and a contact sheet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen import frames, media, specs
from conftest import KEY, ledger_rows, run_args, run_cli

ROOT = Path(__file__).resolve().parent.parent
T2V = "grok-imagine-text-to-video"


def manifest(path: Path, n: int = 3) -> Path:
    path.write_text("name,model,prompt,duration,aspect_ratio,resolution\n"
                    + "".join(f"v{i},{T2V},clip {i},{2 + i % 3},16:9,480p\n" for i in range(n)))
    return path


def rows(tmp_path: Path) -> list[dict]:
    return ledger_rows(tmp_path / "l.db")


@pytest.mark.parametrize("knob,outcome,field", [
    ({}, "ok", None),
    ({"p_short": 1.0}, "mismatch", "duration"),
    ({"p_wrong_aspect": 1.0}, "mismatch", "aspect_ratio"),
    ({"p_undecodable": 1.0}, "undecodable", None),
])
@pytest.mark.slow
def test_each_outcome_end_to_end(sim_factory, tmp_path, knob, outcome, field):
    sim = sim_factory(**knob)
    r = run_cli(run_args(sim, manifest(tmp_path / "m.csv"), tmp_path))
    assert r.exit_code == (0 if outcome == "ok" else 1), r.output
    jobs = rows(tmp_path)
    assert {j["state"] for j in jobs} == {"done"} and {j["verify"] for j in jobs} == {outcome}
    if outcome == "ok":
        assert all(j["m_width"] == 854 and j["m_height"] == 480 and j["m_codec"] == "h264" and j["m_audio"]
                   and abs(j["m_duration"] - json.loads(j["request"])["duration"]) < 0.05 for j in jobs)
        for j in jobs:  # a small JPEG poster and contact sheet next to the videos, in a hidden folder
            # (a sheet the run's end did not wait for, on a loaded machine, is said: `batchgen verify` draws it)
            assert j["poster"] and (j["sheet"] or "contact sheet(s) not drawn" in r.stderr)
            for pic in filter(None, (j["poster"], j["sheet"])):
                assert "/.batchgen/" in pic and Path(pic).read_bytes()[:3] == b"\xff\xd8\xff"
                assert Path(pic).stat().st_size < 60_000
        assert "verified clips: ok=3" in r.stderr
    else:
        assert all(field is None or j["verify_detail"].startswith(field) for j in jobs)
        assert r.stderr.count("NOT AS ASKED") == 3
    export = json.loads(run_cli(["export", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert {e["verify"] for e in export} == {outcome} and all("duration_s" in e for e in export)
    status = json.loads(run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert status["verified"] == {outcome: 3}


@pytest.mark.slow
def test_on_mismatch_fail_makes_the_job_retryable(sim_factory, tmp_path):
    sim = sim_factory(p_short=1.0)
    m = manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--on-mismatch", "fail"))
    assert r.exit_code == 1
    jobs = rows(tmp_path)
    assert {(j["state"], j["error_code"], j["retryable"]) for j in jobs} == {("failed", "verify_mismatch", True)}
    sim.set(p_short=0.0)
    r = run_cli(run_args(sim, m, tmp_path, "--on-mismatch", "fail", "--retry-failed"))
    assert r.exit_code == 0, r.output
    assert {(j["state"], j["verify"]) for j in rows(tmp_path)} == {("done", "ok")}
    assert len(sim.truth()["creates"]) == 4


@pytest.mark.slow
def test_a_crash_before_verification_is_verified_on_the_next_run(sim, tmp_path):
    m = manifest(tmp_path / "m.csv", 3)
    env = {**os.environ, "BATCHGEN_API_KEY": KEY, "BATCHGEN_CRASH_AT": "before_verify"}
    p = subprocess.run([sys.executable, "-m", "batchgen", *run_args(sim, m, tmp_path, "-q")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 137, p.stderr
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 0, r.output
    assert {(j["state"], j["verify"]) for j in rows(tmp_path)} == {("done", "ok")}
    assert len(sim.truth()["creates"]) == 3  # verifying never re-renders


def test_verify_notices_files_changed_or_deleted(sim, tmp_path):
    run_cli(run_args(sim, manifest(tmp_path / "m.csv", 3), tmp_path, "-q"))
    a, b, c = sorted(rows(tmp_path), key=lambda j: j["name"])
    Path(a["output_path"]).unlink()
    Path(b["output_path"]).write_bytes(Path(b["output_path"]).read_bytes()[:-10] + b"0123456789")
    r = run_cli(["verify", "--ledger", str(tmp_path / "l.db")])
    assert r.exit_code == 1
    assert "missing=1" in r.stdout and "changed=1" in r.stdout and "ok=1" in r.stdout
    got = {j["name"]: j["verify"] for j in rows(tmp_path)}
    assert got == {a["name"]: "missing", b["name"]: "changed", c["name"]: "ok"}


def test_compare_checks_resolution_class_and_promised_audio(monkeypatch):
    m = {"duration": 6.0, "width": 1280, "height": 720, "fps": 24.0, "audio": False, "error": None}
    assert media.compare(m, {"duration": 6, "aspect_ratio": "16:9", "resolution": "720p"}, T2V) == ("ok", [])
    outcome, diffs = media.compare(m, {"duration": 6, "aspect_ratio": "16:9", "resolution": "480p"}, T2V)
    assert outcome == "mismatch" and diffs == ["resolution 720p (1280×720), asked 480p"]
    # 9:16 at 720p is 720×1280: the class is the short side
    tall = dict(m, width=720, height=1280)
    assert media.compare(tall, {"duration": 6, "aspect_ratio": "9:16", "resolution": "720p"}, T2V) == ("ok", [])
    # one frame of slack on the duration, no more
    assert media.compare(dict(m, duration=6.04), {"duration": 6}, T2V)[0] == "ok"
    assert media.compare(dict(m, duration=6.2), {"duration": 6}, T2V)[0] == "mismatch"
    # edit-video follows its input: its duration is not checked
    assert media.compare(dict(m, duration=3.0), {"resolution": "720p"}, "grok-imagine-edit-video") == ("ok", [])
    spec = specs.SHIPPED.models[T2V]
    monkeypatch.setitem(specs.SHIPPED.models, T2V, specs.ModelSpec(spec.name, spec.fields, audio=True))
    assert media.compare(m, {"duration": 6}, T2V) == ("mismatch", ["audio: no audio track, the model promises one"])


def test_a_clip_left_unverified_is_checked_against_its_recorded_sha256_first(sim, tmp_path):
    """A --no-verify night leaves its clips unverified. If a file was replaced before the next
    run (an edited row with the same output name, a hand edit), that run's sweep records it
    `changed` instead of reading the new bytes as the job's clip and calling it ok."""
    m = manifest(tmp_path / "m.csv", 3)
    assert run_cli(run_args(sim, m, tmp_path, "--no-verify")).exit_code == 0
    a, b, c = sorted(rows(tmp_path), key=lambda j: j["name"])
    assert {j["verify"] for j in (a, b, c)} == {None}
    p = Path(b["output_path"])
    p.write_bytes(p.read_bytes() + b"\x00\x00\x00\x10free" + b"\x00" * 8)  # a padding box: still a fine clip
    measured = media.inspect(str(p))
    assert media.compare(measured, json.loads(b["request"]), T2V)[0] == "ok"  # read alone, it would pass
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 1, r.output
    got = {j["name"]: (j["verify"], j["verify_detail"]) for j in rows(tmp_path)}
    assert got[a["name"]][0] == got[c["name"]][0] == "ok"
    assert got[b["name"]][0] == "changed" and got[b["name"]][1].startswith("sha256 "), got
    assert len(sim.truth()["creates"]) == 3  # verifying never re-renders


@pytest.mark.slow
def test_a_verification_pool_that_cannot_start_is_said_and_the_clips_stay_unverified(sim, tmp_path, monkeypatch,
                                                                                     caplog):
    """The pool used to be created outside the `try`: its failure ended each verification task
    with asyncio's "Task exception was never retrieved" in the log, and the run exited 0 as if
    its clips were verified. Said once, the clips unverified (not `ok`), the run exits 1, and the
    next run checks them."""
    def no_pool(workers: int | None = None, nice: int = media.WORKER_NICE) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(media, "pool", no_pool)
    m = manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 1, r.output
    assert r.stderr.count("verification could not start its worker processes") == 1, r.stderr
    assert "Resource temporarily unavailable" in r.stderr and "NOT VERIFIED 3 clip(s)" in r.stderr
    assert "Traceback" not in r.output and "never retrieved" not in caplog.text, caplog.text
    assert {(j["state"], j["verify"]) for j in rows(tmp_path)} == {("done", None)}  # not read as verified
    monkeypatch.undo()
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 0, r.output
    assert {(j["state"], j["verify"]) for j in rows(tmp_path)} == {("done", "ok")}
    assert len(sim.truth()["creates"]) == 3  # verifying never re-renders


def _blocked_signals(pid: int) -> int:
    """The process's blocked-signal mask (Linux: /proc/PID/status, SigBlk)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigBlk for {pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_verification_workers_are_forked_as_needed_from_one_quiet_server():
    """Issue 28: a pool's workers are forks of one fork server per process (PyAV imported once),
    started as the work needs them — one for one clip — where every run used to spawn one new
    interpreter per core. The server is what every worker inherits from: stdout and stderr on
    /dev/null, SIGINT and SIGTERM blocked (a worker orphaned by a kill -9 prints nothing, the
    terminal's Ctrl-C is the run's). A worker ignores both signals and leaves with the pool."""
    import signal

    with media.pool(4) as p:
        server = p.submit(os.getppid).result()
        assert server != os.getpid()  # not a fork of this (threaded) process
        assert len(p._processes) == 1  # one job, one worker
        worker = next(iter(p._processes))
        assert p.submit(media.inspect, "/nonexistent.mp4").result()["error"]  # a real inspect, in the worker
    with media.pool(4) as p:
        assert p.submit(os.getppid).result() == server  # the same server for the next run of this process
    for fd in (1, 2):
        assert os.readlink(f"/proc/{server}/fd/{fd}") == os.devnull
    blocked = _blocked_signals(server)
    assert blocked >> (signal.SIGINT - 1) & 1 and blocked >> (signal.SIGTERM - 1) & 1
    assert not Path(f"/proc/{worker}").exists() or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]


@pytest.mark.skipif(not hasattr(os, "nice"), reason="POSIX niceness")
def test_verification_workers_are_niced_below_the_run():
    """A worker decodes on every core it is given; the run's event loop must keep the CPU it needs."""
    with media.pool(1) as p:
        assert p.submit(os.nice, 0).result() >= os.nice(0) + media.WORKER_NICE
    with media.pool(1, nice=media.SHEET_NICE) as p:  # contact sheets: below the verdicts too
        assert p.submit(os.nice, 0).result() >= min(19, os.nice(0) + media.SHEET_NICE)


def _one_keyframe_clip(path: Path, seconds: int = 2, fps: int = 24, gop: int | None = None) -> None:
    """A real H.264 clip as x264 makes it by default — one keyframe, at frame 0 — with its index
    at its head (faststart: what survives a download cut short), noise so every frame costs bytes,
    and a brightness that climbs frame by frame so moments differ."""
    import av

    noise = os.urandom(320 * 180 * 2)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        vs = out.add_stream("libx264", rate=fps, options={"g": str(gop), "keyint_min": str(gop)} if gop else {})
        vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
        for i in range(seconds * fps):
            fr = av.VideoFrame(320, 180, "yuv420p")
            for k, pl in enumerate(fr.planes):
                size = pl.line_size * pl.height
                level = bytes([(i * 5 + k * 60) % 256]) * (size // 2)
                pl.update(level + noise[i * 997 % 1000: i * 997 % 1000 + size - size // 2])
            fr.pts = i
            for pkt in vs.encode(fr):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)


def test_a_one_keyframe_clip_cut_in_its_tail_is_undecodable_and_its_sheet_shows_nine_moments(tmp_path):
    """Verification reads every packet but decodes only the first frame and the last keyframe
    (here the same): a clip whose index survived but whose last frames did not must still fail.
    And the contact sheet of a one-keyframe clip is 9 moments, not 9 copies of its first frame."""
    import av
    from PIL import ImageStat

    clip = tmp_path / "one.mp4"
    _one_keyframe_clip(clip)
    with av.open(str(clip)) as c:
        assert sum(p.is_keyframe for p in c.demux(c.streams.video[0])) == 1
    whole = media.inspect(str(clip), str(tmp_path / "p.jpg"), str(tmp_path / "s.jpg"))
    assert whole["error"] is None and whole["sheet"]
    with av.open(str(clip)) as c:
        vs = c.streams.video[0]
        _first, thumbs = frames.read(c, vs, media._sheet_times(media._duration(c, vs)))
    means = [ImageStat.Stat(t.convert("L")).mean[0] for t in thumbs]
    assert len(thumbs) == 9 and means == sorted(means) and len(set(means)) == 9  # brightness climbs
    data = clip.read_bytes()
    for cut in (len(data) - 3000, len(data) * 3 // 4):
        cut_clip = tmp_path / f"cut{cut}.mp4"
        cut_clip.write_bytes(data[:cut])
        assert "ends early" in (media.inspect(str(cut_clip))["error"] or "")
    zeroed = tmp_path / "zeroed.mp4"  # same length, a run of zeros inside (packets not decoded)
    zeroed.write_bytes(data[: len(data) * 3 // 4] + bytes(len(data) // 10) + data[len(data) * 17 // 20:])
    assert "damaged" in (media.inspect(str(zeroed))["error"] or "")


def test_a_clip_with_a_keyframe_a_second_gets_its_sheet_from_keyframes_alone(tmp_path):
    """Five keyframes or more: each thumbnail is the keyframe at or before its time, one frame
    decoded each (decoding on to each time tripled a night's verification CPU); the moments climb
    and are keyframes' moments (brightness 5 a frame, a keyframe every 8 frames)."""
    import av
    from PIL import ImageStat

    clip = tmp_path / "keyed.mp4"
    _one_keyframe_clip(clip, seconds=6, fps=8, gop=8)
    with av.open(str(clip)) as c:
        assert sum(p.is_keyframe for p in c.demux(c.streams.video[0])) >= frames.DENSE_KEYFRAMES
    with av.open(str(clip)) as c:
        vs = c.streams.video[0]
        _first, thumbs = frames.read(c, vs, media._sheet_times(media._duration(c, vs)))
    means = [ImageStat.Stat(t.convert("L")).mean[0] for t in thumbs]
    assert len(thumbs) == 9 and means == sorted(means)
    assert 5 <= len({round(m) for m in means}) <= 6  # six keyframes in six seconds: a moment or more repeats


def test_a_sheet_drawn_apart_from_the_checks_shows_nine_moments_in_order(tmp_path):
    """The pictures lane's sheet (``media.contact_sheet``: its own opening of the file, the
    deblocking filter skipped) of a one-keyframe clip: nine moments, climbing as the clip does,
    within a few levels of the ones decoded with the decoder's defaults."""
    import av
    from PIL import Image, ImageStat

    clip = tmp_path / "one.mp4"
    _one_keyframe_clip(clip)
    with av.open(str(clip)) as c:
        vs = c.streams.video[0]
        times = media._sheet_times(media._duration(c, vs))
        _first, exact = frames.read(c, vs, times)
    with av.open(str(clip)) as c:
        cheap = frames.sheet(c, c.streams.video[0], times)
    means = [ImageStat.Stat(t.convert("L")).mean[0] for t in cheap]
    assert len(cheap) == 9 and means == sorted(means) and len(set(means)) == 9
    assert all(abs(m - ImageStat.Stat(e.convert("L")).mean[0]) < 4 for m, e in zip(means, exact, strict=True))
    sheet = tmp_path / "s.jpg"
    assert media.contact_sheet(str(clip), str(sheet)) == str(sheet)
    assert Image.open(sheet).size == (3 * 200 + 4 * 3, 3 * 112 + 4 * 3)
    assert media.contact_sheet(str(tmp_path / "gone.mp4"), str(tmp_path / "t.jpg")) is None  # no sheet, no error


@pytest.mark.slow
def test_the_end_of_a_run_does_not_wait_for_contact_sheets_and_verify_draws_the_rest(sim, tmp_path, monkeypatch):
    """Sheets are drawn after the verdict, in a lane the run's end waits for only so long (here
    not at all): every clip verified with its poster, the sheets not drawn counted and said, the
    report's data showing which clips have one; `batchgen verify` draws the rest."""
    from batchgen.pipeline import check

    monkeypatch.setattr(check, "PICTURES_GRACE_S", 0.0)
    n = 4
    r = run_cli(run_args(sim, manifest(tmp_path / "m.csv", n), tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    left = json.loads(r.stdout)["sheets_left"]
    jobs = rows(tmp_path)
    assert {j["verify"] for j in jobs} == {"ok"} and all(j["poster"] for j in jobs)
    drawn = [j for j in jobs if j["sheet"]]
    assert left >= 1 and len(drawn) + left == n
    assert all(Path(j["sheet"]).read_bytes()[:3] == b"\xff\xd8\xff" for j in drawn)
    assert f"{left} contact sheet(s) not drawn" in r.stderr
    assert run_cli(["verify", "--ledger", str(tmp_path / "l.db")]).exit_code == 0
    assert all(j["sheet"] and Path(j["sheet"]).exists() for j in rows(tmp_path))


def test_the_simulator_serves_a_given_file_as_every_real_clip(tmp_path):
    """``media_file``: a benchmark's real clip (x264's defaults, one keyframe) is what every real
    result is, whatever its request; the undecodable variant still spoils it."""
    import asyncio
    from types import SimpleNamespace

    from batchgen.simulator import media as served
    from batchgen.simulator.config import SimConfig

    clip = tmp_path / "one.mp4"
    _one_keyframe_clip(clip)
    shape = SimpleNamespace(id="t1", file_size=0, width=1280, height=720, seconds=6.0, audio=True, variant=None)
    config = SimConfig(media_file=str(clip))
    assert asyncio.run(served.clip(config, shape)) == clip.read_bytes()
    spoiled = asyncio.run(served.clip(config, SimpleNamespace(**{**vars(shape), "variant": "undecodable"})))
    assert len(spoiled) == clip.stat().st_size and spoiled != clip.read_bytes()
