"""Environmental failures end in one line naming the cause and a documented exit code, never a
Python traceback (issue 10): a missing ledger (2), a ledger or output folder that cannot be
created, a read-only file system, a corrupt ledger (7)."""

from __future__ import annotations

import subprocess

import pytest

from conftest import run_cli, write_csv_manifest


def one_line_error(r, code: int, *needles: str) -> str:
    assert r.exit_code == code, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_commands_that_only_read_never_create_a_ledger(tmp_path):
    missing = tmp_path / "nowhere" / "l.db"
    for cmd in (["status"], ["export"], ["report", "-o", str(tmp_path / "r.html")], ["stop"], ["cancel", "--run", "1"],
                ["resolve", "abcdef", "--abandon"]):
        one_line_error(run_cli([*cmd, "--ledger", str(missing)]), 2, "no ledger at", str(missing))
    assert not (tmp_path / "nowhere").exists()


def test_a_ledger_or_output_folder_that_cannot_be_created(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    (tmp_path / "afile").write_text("x")
    # A path that names no place for a folder is bad input (exit 2, README's table), found
    # before anything is created or paid; a file system that refuses a write is exit 7.
    one_line_error(run_cli(["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "afile" / "l.db")]),
                   2, "ledger", "afile")
    one_line_error(run_cli(["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"),
                            "--out", str(tmp_path / "afile" / "out")]), 2, "afile")


def test_a_corrupt_ledger(tmp_path):
    bad = tmp_path / "l.db"
    bad.write_bytes(b"this is not a database" * 500)
    for cmd in (["status"], ["export"], ["db", "upgrade"]):
        one_line_error(run_cli([*cmd, "--ledger", str(bad)]), 7, "not a ledger")


@pytest.mark.tmpfs
def test_a_read_only_file_system(sim, tmp_path, tmpfs):
    mnt = tmpfs("size=4m")
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    args = ["run", str(m), "--api-base", sim.url, "--ledger", str(mnt / "l.db"), "--out", str(tmp_path / "out"),
            "--rpm", "0", "--poll-min", "0.05", "-q"]
    assert run_cli(args).exit_code == 0
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    m2 = write_csv_manifest(tmp_path / "m2.csv", 2, prefix="other")
    one_line_error(run_cli([*args[:1], str(m2), *args[2:]]), 7, "read-only")
    # SQLite's WAL needs its -shm file even to read: a clear line, not a traceback
    one_line_error(run_cli(["status", "--ledger", str(mnt / "l.db")]), 7, "read-only")
    one_line_error(run_cli([*args[:1], str(m2), *args[2:4], "--ledger", str(tmp_path / "l2.db"), "--out",
                            str(mnt / "out")]), 7, "Read-only")


def test_a_reader_that_stops_early_ends_the_command_quietly_with_141(tmp_path):
    """`batchgen export | head -1`: the pipe closes while batchgen still writes. Like any
    Unix filter it stops with 128 + SIGPIPE, and prints no "error: Broken pipe" (it was one)."""
    import os
    import sys

    from batchgen.errors import EXIT_BROKEN_PIPE

    m = tmp_path / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-text-to-video, duration: 4}\njobs:\n"
                 + "".join(f"  - {{name: shot{i}, prompt: 'a lighthouse number {i} {'x' * 200}'}}\n" for i in range(400)))
    r, w = os.pipe()
    p = subprocess.Popen([sys.executable, "-m", "batchgen", "plan", str(m), "--explain"], cwd=tmp_path,
                         stdout=w, stderr=subprocess.PIPE, text=True)
    os.close(w)
    # The reader goes away before batchgen writes (a `head` that has had enough): whatever the
    # machine's pace, the first write finds the pipe closed. (Reading a line first, the whole
    # output could fit in the pipe's buffer before the reader closed it, and end with exit 0.)
    os.close(r)
    _, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_BROKEN_PIPE, (p.returncode, err)
    assert "error" not in err.lower() and "Traceback" not in err, err
