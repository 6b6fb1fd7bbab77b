"""Every file batchgen writes goes through one door (``files.atomic_output`` / ``AtomicFile``):
a device, FIFO, socket or folder at the target is refused with one line naming it and never
replaced; nothing is written outside ``--out`` (symlinked sub-folders, a symlinked
``.batchgen``); one exit code per cause (2: the path names no place for a file; 7: the file
system refuses). Also the preflight checks (``check_output_target``, ``check_out_dir``), which
leave nothing behind, and a refused run, which leaves no ledger or lock."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen import files
from conftest import run_args, run_cli, write_csv_manifest

ROOT = Path(__file__).resolve().parent.parent


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture
def specials(tmp_path):
    """A FIFO, a folder, a unix socket and a symlink to the character device /dev/null, each in
    tmp_path (the link keeps the test harmless should the refusal ever regress: a rename
    replaces the link, never /dev/null itself)."""
    d = tmp_path / "specials"
    d.mkdir()
    os.mkfifo(d / "fifo")
    (d / "folder").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    (d / "null").symlink_to(os.devnull)
    yield {"FIFO": d / "fifo", "folder": d / "folder", "socket": d / "sock", "character device": d / "null"}
    sock.close()


def _intact(kinds: dict[str, Path]) -> None:
    for kind, p in kinds.items():
        mode = os.stat(p).st_mode
        assert {"FIFO": stat.S_ISFIFO, "folder": stat.S_ISDIR, "socket": stat.S_ISSOCK,
                "character device": stat.S_ISCHR}[kind](mode), f"{p} was replaced"
    assert os.path.islink(kinds["character device"]) and os.readlink(kinds["character device"]) == os.devnull
    # no temp file left beside them
    assert sorted(x.name for x in kinds["FIFO"].parent.iterdir()) == ["fifo", "folder", "null", "sock"]


@pytest.fixture
def done_ledger(sim_factory, tmp_path):
    sim = sim_factory(seed=191)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--no-verify"))
    assert r.exit_code == 0, r.output
    return sim, m, tmp_path / "l.db"


def test_export_and_report_refuse_every_non_regular_target(done_ledger, specials):
    _sim, _m, led = done_ledger
    for kind, target in specials.items():
        for cmd in (["export"], ["export", "--json"], ["report"]):
            r = run_cli([*cmd, "--ledger", str(led), "-o", str(target)])
            assert r.exit_code == 2, (cmd, kind, r.output)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and str(target) in lines[0], r.output
            if "--json" in cmd:  # with --json the error is JSON on stdout too (issue 23)
                assert str(target) in json.loads(r.stdout)["error"], r.stdout
            else:
                assert r.stdout == "", r.stdout
            assert f"it exists and is a {kind}" in lines[0] and "refusing to replace it" in lines[0]
    _intact(specials)


def test_run_report_and_metrics_file_never_replace_a_special_file(done_ledger, specials):
    sim, m, _led = done_ledger
    tmp_path = m.parent
    for kind in ("FIFO", "socket", "character device"):
        target = specials[kind]
        # --report and --metrics-file are refused before the run (preflight, exit 2) or only
        # warned about after it paid (the run's own exit code stands); either way the special
        # file stays what it is and the line names it.
        r = run_cli(run_args(sim, m, tmp_path, "--no-verify", "--report", str(target)))
        assert r.exit_code in (0, 2) and str(target) in r.output and "refusing to replace it" in r.output, r.output
        assert "Traceback" not in r.output
        r = run_cli(run_args(sim, m, tmp_path, "--no-verify", "--metrics-file", str(target)))
        assert r.exit_code in (0, 2) and str(target) in r.output and "refusing to replace it" in r.output, r.output
    _intact(specials)


def test_dash_is_stdout_for_export_and_report(done_ledger, tmp_path, monkeypatch):
    _sim, _m, led = done_ledger
    monkeypatch.chdir(tmp_path)
    r = run_cli(["export", "--ledger", str(led), "-o", "-"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("job_key,name,") and len(r.stdout.splitlines()) == 3
    r = run_cli(["export", "--ledger", str(led), "--json", "-o", "-"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 2
    r = run_cli(["report", "--ledger", str(led), "-o", "-", "-q"])
    assert r.exit_code == 0 and r.stdout.startswith("<!doctype html>") and r.stdout.rstrip().endswith("</html>")
    assert not (tmp_path / "-").exists()


def test_one_exit_code_per_cause(done_ledger, tmp_path, tmpfs):
    """A path that names no place for a file: 2. A file system that refuses: 7 — for export,
    report, and the same for both."""
    _sim, _m, led = done_ledger
    ro = tmpfs("ro,size=64k")
    for cmd in (["export"], ["report"]):
        r = run_cli([*cmd, "--ledger", str(led), "-o", str(ro / "x.out")])
        assert r.exit_code == 7, (cmd, r.output)
        assert r.output.strip().splitlines() == [f"error: cannot write the {cmd[0]} {ro / 'x.out'}: Read-only file system"]
        r = run_cli([*cmd, "--ledger", str(led), "-o", str(tmp_path / "no" / "such" / "x.out")])
        assert r.exit_code == 2 and "does not exist" in r.output, (cmd, r.output)
    # permission refused by the kernel even to root: /sys takes no new files
    if files.check_output_target("/sys/batchgen-probe.html") is not None:
        r = run_cli(["export", "--ledger", str(led), "-o", "/sys/batchgen-probe.html"])
        assert r.exit_code == 7 and "cannot write the export /sys/batchgen-probe.html" in r.output
    # a symlink loop: one line, exit 2, for export, report and run --report
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for cmd in (["export"], ["report"]):
        r = run_cli([*cmd, "--ledger", str(led), "-o", str(tmp_path / "loop")])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert lines[0].startswith(f"error: the {cmd[0]} {tmp_path / 'loop'}: cannot be resolved"), r.output
    # a path with a newline and a terminal escape: still one line, escaped
    r = run_cli(["export", "--ledger", str(led), "-o", str(tmp_path / "no\x1b[2Jdir" / "a\nb.csv")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "\x1b" not in r.output, r.output
    assert "no\\x1b[2Jdir/a\\x0ab.csv" in r.output
    # an existing report keeps its permission bits when rewritten
    rep = tmp_path / "kept.html"
    rep.write_text("old")
    rep.chmod(0o640)
    assert run_cli(["report", "--ledger", str(led), "-o", str(rep), "-q"]).exit_code == 0
    assert stat.S_IMODE(rep.stat().st_mode) == 0o640 and rep.read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("where", ["loop", "loop/x.out", "loop/deeper/x.out"])
def test_a_symlink_loop_is_refused_whatever_pathlib_makes_of_it(tmp_path, monkeypatch, where):
    """Python 3.13's non-strict ``Path.resolve`` no longer raises on a symlink loop; it leaves the
    link in the path (an export then replaced the link with a file). The answer must not depend
    on the Python: here 3.13's resolve is imitated on any version (a loop left as it is), and an
    output target, an out folder and a name under it are refused as a loop all the same."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.setattr(Path, "resolve", lambda self, strict=False: Path(os.path.abspath(self)))
    target = tmp_path / where
    assert "cannot be resolved" in (files.check_output_target(target) or "")
    assert "cannot be resolved" in str(files.out_dir_problem(target))
    with pytest.raises(ValueError, match="cannot be resolved"):
        files.resolve_inside(tmp_path, where)
    assert not files.inside(tmp_path, target)
    assert (tmp_path / "loop").is_symlink()  # nothing replaced it


def test_preflight_checks_probe_and_leave_nothing(tmp_path, specials, tmpfs):
    ro = tmpfs("ro,size=64k")
    before = _tree(tmp_path)
    assert files.check_output_target(tmp_path / "report.html") is None
    assert files.check_output_target("-") is None
    for kind, p in specials.items():
        problem = files.check_output_target(p)
        assert problem is not None and str(p) in problem and (kind in problem or "folder" in problem), problem
    assert "does not exist" in files.check_output_target(tmp_path / "nodir" / "sub" / "r.html")
    assert "Read-only file system" in files.check_output_target(ro / "metrics.prom")
    assert files.check_out_dir(tmp_path / "out") is None  # missing but creatable
    assert files.check_out_dir(tmp_path / "new" / "deeper") is None
    assert "Read-only file system" in files.check_out_dir(ro)
    assert "Read-only file system" in files.check_out_dir(ro / "sub")
    (tmp_path / "plain").write_text("x")
    assert "a file, not a folder" in files.check_out_dir(tmp_path / "plain")
    assert "not a folder" in files.check_out_dir(tmp_path / "plain" / "below")
    assert "FIFO" in files.check_out_dir(specials["FIFO"])
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert files.check_out_dir(loop) is not None and files.check_output_target(loop / "x") is not None
    assert _tree(tmp_path) == before | {"plain", "loop"}  # every probe removed its temp file
    _intact(specials)


# ------------------------------------------------------------------------- --out containment
def test_verify_never_writes_pictures_through_a_symlinked_batchgen_folder(sim_factory, tmp_path):
    sim = sim_factory(seed=192)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--no-verify"))
    assert r.exit_code == 0, r.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out" / ".batchgen").symlink_to(elsewhere)
    r = run_cli(["verify", "--ledger", str(tmp_path / "l.db"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"ok": 2}
    assert list(elsewhere.iterdir()) == []
    assert "leads outside the output folder" in r.output
    rows = json.loads(run_cli(["export", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert [(j["verify"], j["poster"], j["contact_sheet"]) for j in rows] == [("ok", None, None)] * 2


def test_a_fifo_where_a_poster_goes_is_left_alone(sim_factory, tmp_path):
    sim = sim_factory(seed=190)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    assert run_cli(run_args(sim, m, tmp_path, "--no-verify")).exit_code == 0
    pictures = tmp_path / "out" / ".batchgen"
    pictures.mkdir()
    os.mkfifo(pictures / "shot0000.mp4.poster.jpg")
    r = run_cli(["verify", "--ledger", str(tmp_path / "l.db"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"ok": 2}, r.output
    assert stat.S_ISFIFO(os.lstat(pictures / "shot0000.mp4.poster.jpg").st_mode)
    assert (pictures / "shot0001.mp4.poster.jpg").is_file()  # the other clip's pictures are drawn
    rows = {j["name"]: j for j in json.loads(run_cli(["export", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)}
    assert rows["shot0000"]["poster"] is None and rows["shot0001"]["poster"]
    assert sorted(p.name for p in pictures.iterdir() if p.name.startswith(".")) == []  # no temp files left


def test_a_run_never_writes_outside_out(sim_factory, tmp_path):
    """Clips through a symlinked sub-folder and pictures through a symlinked .batchgen: nothing
    lands outside --out (the job is refused, before or after paying, and says why), and clips
    that stay inside are written and pictured normally."""
    sim = sim_factory(seed=193)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    (out / ".batchgen").symlink_to(elsewhere)
    m = tmp_path / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-text-to-video, duration: 6, resolution: 480p}\n"
                 "jobs:\n  - {name: a, prompt: a lighthouse, output: sub/a.mp4}\n  - {name: b, prompt: a harbour}\n")
    r = run_cli(run_args(sim, m, tmp_path))
    assert "Traceback" not in r.output
    assert list(elsewhere.iterdir()) == [], r.output
    assert "escapes the output directory" in r.output or "outside" in r.output
    if r.exit_code != 2:  # the run went ahead: b is done, a refused
        assert (out / "b.mp4").is_file()


def test_a_clip_path_that_is_a_fifo_is_refused_not_replaced(sim_factory, tmp_path):
    sim = sim_factory(seed=194)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "shot0000.mp4")
    r = run_cli(run_args(sim, m, tmp_path, "--no-verify", "--json"))
    assert "Traceback" not in r.output
    assert stat.S_ISFIFO(os.lstat(out / "shot0000.mp4").st_mode)
    assert "not a regular file" in r.output, r.output
    if r.exit_code == 2:  # refused at plan time (every clip path is checked before anything is paid)
        assert sim.truth()["creates"] == [] and not (out / "shot0001.mp4").exists()
        return
    assert (out / "shot0001.mp4").is_file()
    rows = {j["name"]: j for j in json.loads(run_cli(["export", "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)}
    assert rows["shot0001"]["state"] == "done" and rows["shot0000"]["state"] != "done"


# ------------------------------------------------------------------------- refused runs
def test_a_refused_run_leaves_no_ledger_and_no_lock(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-text-to-video, duration: 6, resolution: 480p}\n"
                 "per_model:\n  grok-imagine-text-to-video: {duration: 99}\n"
                 "jobs:\n  - {name: a, prompt: a lighthouse}\n")
    before = _tree(tmp_path)
    r = run_cli(["run", str(m), "--simulate", "--out", str(tmp_path / "out"), "--ledger",
                 str(tmp_path / "ledgers" / "new" / "l.db")])
    assert r.exit_code == 2 and "duration" in r.output, r.output
    assert _tree(tmp_path) == before  # no ledger, no lock, no folders, no out
    # an existing ledger is kept as it was (only what this run created is removed)
    led = tmp_path / "kept.db"
    ok = tmp_path / "ok.yaml"
    ok.write_text("defaults: {model: grok-imagine-text-to-video, duration: 6, resolution: 480p}\n"
                  "jobs:\n  - {name: a, prompt: a lighthouse}\n")
    assert run_cli(["run", str(ok), "--simulate", "--sim-set", "render_min=0.05", "--sim-set", "render_max=0.2",
                    "--out", str(tmp_path / "out"), "--ledger", str(led), "--no-verify", "-q"]).exit_code == 0
    before = led.read_bytes()
    r = run_cli(["run", str(m), "--simulate", "--out", str(tmp_path / "out"), "--ledger", str(led)])
    assert r.exit_code == 2 and led.is_file() and led.read_bytes() == before


def test_a_plain_script_without_a_main_guard_runs_once(tmp_path):
    """The README's "Use it from Python" example, as a plain script: neither the verification
    workers nor the fork server they are forked from (multiprocessing's default preload is
    ``__main__``) may run it again. Counted in a file too: a worker's stdout is /dev/null."""
    (tmp_path / "shots.yaml").write_text(
        "defaults: {model: grok-imagine-text-to-video, duration: 6, resolution: 480p}\n"
        "jobs:\n  - {name: a, prompt: a lighthouse}\n  - {name: b, prompt: a harbour}\n")
    (tmp_path / "script.py").write_text(
        "import batchgen\n"
        "print('top level ran')\n"
        "open('ran.txt', 'a').write('ran\\n')\n"
        "result = batchgen.run('shots.yaml', out_dir='renders', ledger='nightly.db',\n"
        "                      simulate=batchgen.SimConfig(render_min=0.05, render_max=0.2))\n"
        "print('exit', result.exit_code, result.counts)\n"
        "for row in batchgen.operations.results('nightly.db'):\n"
        "    print('row', row['name'], row['state'], row['verify'])\n")
    r = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                       env={k: v for k, v in os.environ.items() if not k.startswith("BATCHGEN_")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("top level ran") == 1
    assert (tmp_path / "ran.txt").read_text() == "ran\n"  # in any process, whatever its stdout
    assert "exit 0 {'done': 2}" in r.stdout
    assert sorted(line for line in r.stdout.splitlines() if line.startswith("row")) == ["row a done ok", "row b done ok"]
    assert "LedgerBusy" not in r.stderr and "could not verify" not in r.stderr and "Traceback" not in r.stderr
