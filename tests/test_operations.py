"""Operating nightly runs: progress, status, report, budget, stop/cancel, JSON logs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen import budget as budget_mod
from batchgen.budget import RequestBudget
from batchgen.cli import cli
from batchgen.ledger import Ledger
from batchgen.progress import Display, Snapshot
from conftest import write_csv_manifest

KEY = "sk-canary-ops-98765"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def run_cli(args, **env):
    return CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": KEY, **env}, catch_exceptions=False)


def run_args(sim, manifest, tmp_path, *extra):
    return ["run", str(manifest), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"), "--out",
            str(tmp_path / "out"), "--concurrency", "16", "--rpm", "0", "--poll-min", "0.05", *extra]


# ------------------------------------------------------------------ progress
class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rich_on_a_terminal_plain_otherwise_nothing_when_quiet(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: no column is abbreviated
    snap = Snapshot(states={"queued": 5, "rendering": 3, "done": 12, "failed": 1}, elapsed=120.0, done_last_minute=6,
                    requests_last_minute=40, budget_rpm=60.0, throttled=2, credits=33.6, in_flight=3)
    tty = _Tty()
    d = Display(stream=tty)
    assert d.rich
    d.start()
    d.update(snap)
    d.stop(snap)
    out = tty.getvalue()
    for word in ("queued", "rendering", "downloading", "done", "failed", "in doubt", "jobs/min", "40 / 60", "credits 33.6", "ETA"):
        assert word in out, word
    assert snap.eta_seconds() == pytest.approx(80.0)  # 8 left at 6 jobs/min
    plain = io.StringIO()
    d = Display(stream=plain, every=1.0)
    assert not d.rich
    d.update(snap)
    assert "queued=5" in plain.getvalue() and "ETA 1m20s" in plain.getvalue() and "40/60 req/min" in plain.getvalue()
    quiet = io.StringIO()
    Display(stream=quiet, quiet=True).update(snap)
    assert quiet.getvalue() == ""


def test_run_prints_plain_progress_lines_when_not_a_tty(sim_factory, tmp_path):
    sim = sim_factory(render_min=1.5, render_max=2.5)
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    r = run_cli(run_args(sim, m, tmp_path, "--progress-every", "1"))
    assert r.exit_code == 0
    lines = [l for l in r.stderr.splitlines() if "jobs/min" in l]
    assert len(lines) >= 1 and "rendering=" in r.stderr


# ------------------------------------------------------------------ budget
def test_budget_backs_off_on_429_and_recovers_slowly(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(budget_mod.time, "monotonic", lambda: now[0])
    b = RequestBudget(600)
    assert b.current_rpm == 600
    b.throttle(2.0)
    assert b.current_rpm == pytest.approx(420) and b._not_before == pytest.approx(1002.0)
    b.throttle(2.0)  # same burst: no second cut
    assert b.current_rpm == pytest.approx(420)
    now[0] += 3
    b.throttle(None)
    assert b.current_rpm == pytest.approx(294)
    now[0] += budget_mod.RECOVER_EVERY + 2
    b._maybe_recover()
    assert b.current_rpm == pytest.approx(324)  # +5% of 600
    for _ in range(40):
        now[0] += budget_mod.RECOVER_EVERY
        b._maybe_recover()
    assert b.current_rpm == 600
    for _ in range(30):
        now[0] += 2
        b.throttle(0)
    assert b.current_rpm == pytest.approx(60)  # floor: 10%


def test_rate_limited_api_all_jobs_finish_and_429s_stay_rare(sim_factory, tmp_path):
    sim = sim_factory(rpm_limit=600, render_min=0.05, render_max=0.1)
    m = write_csv_manifest(tmp_path / "m.csv", 40)
    args = run_args(sim, m, tmp_path, "-q", "--json")
    args[args.index("--rpm") + 1] = "600"
    r = run_cli(args)
    s = json.loads(r.stdout)
    assert r.exit_code == 0 and s["counts"] == {"done": 40}
    st = sim.truth()["counters"]["status"]
    assert st.get("429", 0) <= 0.05 * st["200"]


# ------------------------------------------------------------------ status / report
def _mixed_ledger(sim_factory, tmp_path):
    sim = sim_factory(seed=4, p_fail=0.2, p500_after=0.1)
    m = write_csv_manifest(tmp_path / "m.csv", 30)
    run_cli(run_args(sim, m, tmp_path, "-q"))
    led = Ledger(str(tmp_path / "l.db"))
    try:  # one result left undownloaded, 23 h old: it expires within the hour
        done = led.jobs_in_state("done")[0]
        with led.engine.begin() as c:
            c.exec_driver_sql("UPDATE jobs SET state='completed', result_at=? WHERE id=?", (time.time() - 23 * 3600, done["id"]))
    finally:
        led.close()
    return sim, done


def test_status_lists_runs_in_doubt_with_credits_and_expiring_results(sim_factory, tmp_path):
    _sim, expiring = _mixed_ledger(sim_factory, tmp_path)
    r = run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"])
    doc = json.loads(r.stdout)
    assert doc["runs"][0]["counts"]["done"] > 0 and doc["runs"][0]["status"] == "finished"
    assert doc["in_doubt"] and all(j["credits_at_risk"] > 0 for j in doc["in_doubt"])
    assert doc["credits_at_risk"] == pytest.approx(sum(j["credits_at_risk"] for j in doc["in_doubt"]))
    assert [j["id"] for j in doc["expiring"]] == [expiring["id"]] and 0 < doc["expiring"][0]["expires_in_s"] <= 3600
    assert doc["oldest_unfinished"][0]["id"] == expiring["id"]
    text = run_cli(["status", "--ledger", str(tmp_path / "l.db")])
    assert "runs" in text.stdout and "in doubt" in text.stdout and "expiring" in text.stdout


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.videos: list[str] = []
        self.rows = 0
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "video":
            self.videos.append(a["src"])
        if tag == "tr" and "data-state" in a:
            self.rows += 1
        if tag in ("script", "link", "img") and (a.get("src") or a.get("href")):
            self.scripts += 1  # external resources: there must be none


def test_report_is_self_contained_and_escapes_user_text(sim_factory, tmp_path):
    sim = sim_factory(seed=4, p_fail=0.25)
    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt\n" + "".join(
        f"c{i},grok-imagine-text-to-video,<script>alert({i})</script> clip\n" for i in range(12)))
    run_cli(run_args(sim, m, tmp_path, "-q"))
    out = tmp_path / "report.html"
    assert run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    assert "<script>alert(" not in page and "&lt;script&gt;alert(" in page
    p = _Collect()
    p.feed(page)
    led = Ledger(str(tmp_path / "l.db"))
    done = led.jobs_in_state("done")
    led.close()
    assert p.rows == 12 and p.scripts == 0
    assert sorted(p.videos) == sorted(os.path.relpath(j["output_path"], tmp_path) for j in done)
    assert all((tmp_path / v).is_file() for v in p.videos)
    assert "Failures by error code" in page and "submit → complete" in page and "polls per job" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chrome(*args: str, url: str, user_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={user_dir}", *args, url], capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(sim_factory, tmp_path):
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed")
    _mixed_ledger(sim_factory, tmp_path)
    out = tmp_path / "report.html"
    run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(out)])
    dom = _chrome("--dump-dom", "--virtual-time-budget=3000", url=out.as_uri() + "#state=failed",
                  user_dir=tmp_path / "chrome1").stdout
    assert "id=\"tiles\"" in dom and "<video" in dom
    shown = dom.split('id="shown">')[1].split("<")[0]
    led = Ledger(str(tmp_path / "l.db"))
    n_failed = len(led.jobs_in_state("failed"))
    led.close()
    assert int(shown) == n_failed > 0  # the #state=failed filter ran in the browser
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _chrome(f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars", url=out.as_uri(),
            user_dir=tmp_path / "chrome2")
    assert shot.is_file() and shot.stat().st_size > 10_000


# ------------------------------------------------------------------ stop / cancel / logs
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


def test_json_log_has_one_object_per_event_and_no_key(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 5)
    log = tmp_path / "logs" / "run.jsonl"
    r = run_cli(run_args(sim, m, tmp_path, "--log-format", "json", "--log-file", str(log), "-q"))
    assert r.exit_code == 0
    lines = log.read_text().splitlines()
    docs = [json.loads(l) for l in lines]
    done = [d for d in docs if d.get("event") == "state" and d["to"] == "done"]
    assert len(done) == 5 and all(d["task_id"] and d["ts"].endswith("Z") for d in done)
    assert {d["to"] for d in docs if d.get("event") == "state"} >= {"submitting", "submitted", "done"}
    assert KEY not in log.read_text() and KEY not in r.output


# ------------------------------------------------------------------ local reference images
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def _local_manifest(d: Path, n: int, extra: str = "") -> Path:
    (d / "refs").mkdir(exist_ok=True)
    (d / "refs" / "mascot.png").write_bytes(PNG)
    (d / "refs" / "logo.png").write_bytes(PNG + b"logo")
    rows = "".join(f"  - {{name: s{i}, prompt: 'shot {i} @Image1 @Image2', "
                   f"reference_image_urls: [refs/mascot.png, {'refs/logo.png' if i % 2 else 'https://cdn.example.com/a.png'}]}}\n"
                   for i in range(n))
    m = d / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-reference-to-video}\njobs:\n" + rows + extra)
    return m


def test_local_images_are_uploaded_once_and_their_urls_used(sim, tmp_path):
    m = _local_manifest(tmp_path, 6)
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--json"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 6}
    truth = sim.truth()
    assert truth["counters"]["uploads"] == 2  # two distinct files, six jobs
    import hashlib
    assert {u["sha256"] for u in truth["uploads"]} == {hashlib.sha256(PNG).hexdigest(), hashlib.sha256(PNG + b"logo").hexdigest()}
    led = Ledger(str(tmp_path / "l.db"))
    jobs = list(led.iter_export())
    led.close()
    assert all(json.loads(j["request"])["reference_image_urls"][0].startswith("upload:sha256:") for j in jobs)
    # a new job using the same image reuses the upload (cached in the ledger by content)
    m2 = _local_manifest(tmp_path, 7)
    assert run_cli(run_args(sim, m2, tmp_path, "-q")).exit_code == 0
    assert sim.truth()["counters"]["uploads"] == 2


def test_local_input_keys_follow_content_and_are_confined(tmp_path):
    from batchgen.errors import ManifestError
    from batchgen.manifest import Manifest

    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ka = [j.key for j in Manifest(_local_manifest(a, 2)).expand()]
    kb = [j.key for j in Manifest(_local_manifest(b, 2)).expand()]
    assert ka == kb  # same content elsewhere → same jobs
    (b / "refs" / "mascot.png").write_bytes(PNG + b"changed")
    assert [j.key for j in Manifest(b / "m.yaml").expand()] != ka
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    for bad, why in (("../secret.png", "inside the manifest's folder"), ("refs/missing.png", r"neither an http\(s\) URL"),
                     ("m.yaml", "image or video")):
        m = a / "bad.yaml"
        m.write_text(f"defaults: {{model: grok-imagine-reference-to-video}}\njobs:\n  - {{prompt: x, reference_image_urls: [{bad}]}}\n")
        with pytest.raises(ManifestError, match=why) as ei:
            Manifest(m).validate()
        assert ei.value.problems[0].field == "reference_image_urls"


def test_oversized_upload_fails_the_job_not_the_run(sim_factory, tmp_path):
    sim = sim_factory(upload_max_bytes=100)
    m = _local_manifest(tmp_path, 2)
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--json"))
    s = json.loads(r.stdout)
    assert r.exit_code == 1 and s["counts"] == {"failed": 2}
    assert {f["error"] for f in s["failed"]} == {"file_too_large"}
    assert sim.truth()["creates"] == []


def test_json_log_format_makes_progress_json_too(sim_factory, tmp_path):
    sim = sim_factory(render_min=1.5, render_max=2.5)
    m = write_csv_manifest(tmp_path / "m.csv", 4)
    r = run_cli(run_args(sim, m, tmp_path, "--log-format", "json", "--progress-every", "1"))
    assert r.exit_code == 0
    progress = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    progress = [p for p in progress if p.get("event") == "progress"]
    assert progress and all({"states", "eta_s", "requests_per_min", "credits"} <= p.keys() for p in progress)
    assert not any(line.startswith("batchgen: ") and "jobs/min" in line for line in r.stderr.splitlines())
