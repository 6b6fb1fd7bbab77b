"""A damaged SQLite ledger is one line, never a traceback (issue 28): a real ledger (a run
against the simulator) is damaged in the ways disks and people damage files — cut short at many
offsets (inside the header, at and between page boundaries), pages overwritten with random
bytes, emptied, given a write-ahead log (-wal) of another database — and every command that
opens a ledger is run on each copy, through the CLI in-process (and once as a process).

Each answer is exit 7 (or 2) with one line naming the file (the JSON error form with --json),
no traceback, and the damaged file and its -wal byte for byte as they were. A command that only
reads may also answer exactly what it answers on the intact ledger, when the damage lies in
pages it does not read (it cannot write, so it cannot spread it; a command that may write has
every page checked first). Random bytes that land where SQLite cannot see them (unused space;
inside a row with every b-tree still valid: SQLite keeps no page checksums) are told apart by
the test's own oracle and held only to "no traceback" (see ``check_every_command``)."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.simulator import SimConfig
from conftest import KEY, SimThread, write_csv_manifest

PAGE = 4096
EMPTY = hashlib.sha256(b"").hexdigest()


@dataclass
class Built:
    """The intact ledger, the simulator it was run against, and the foreign logs to try."""

    folder: Path
    ledger: Path
    manifest: Path
    sim: SimThread
    foreign_wals: dict[str, bytes]  # name → the bytes of another database's -wal


def _run(sim: SimThread, manifest: Path, ledger: Path, out: Path) -> None:
    r = CliRunner().invoke(cli, ["run", str(manifest), "--api-base", sim.url, "--ledger", str(ledger), "--out",
                                 str(out), "--rpm", "0", "--poll-min", "0.02", "--no-verify", "-q"],
                           env={"BATCHGEN_API_KEY": KEY}, catch_exceptions=False)
    assert r.exit_code == 0, r.output


def _log_of(path: Path, fill, *, page_size: int = PAGE, source: Path | None = None) -> bytes:
    """The write-ahead log a database at ``path`` has after ``fill(con)`` (autocheckpoint off, so
    the log holds every page written; from a copy of ``source`` when given), copied while open."""
    if source is not None:
        shutil.copy(source, path)
    con = sqlite3.connect(path, isolation_level=None)
    if source is None:
        con.execute(f"PRAGMA page_size={page_size}")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    fill(con)
    data = Path(f"{path}-wal").read_bytes()
    con.close()
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    folder = tmp_path_factory.mktemp("damaged")
    sim = SimThread(SimConfig(render_min=0.01, render_max=0.05, media="stub")).start()
    try:
        manifest = write_csv_manifest(folder / "m.csv", 24)
        ledger = folder / "l.db"
        _run(sim, manifest, ledger, folder / "out")
        # Another batchgen ledger, of another manifest: its own identity, its own page layout.
        other = folder / "other.db"
        _run(sim, write_csv_manifest(folder / "o.csv", 7, prefix="other"), other, folder / "out-o")
    except BaseException:
        sim.stop()
        raise
    src = sqlite3.connect(other)

    def copy_other(con: sqlite3.Connection) -> None:  # a new database never checkpointed: all of it in its log
        src.backup(con)

    def app(con: sqlite3.Connection) -> None:  # another application's new database
        con.execute("CREATE TABLE things (x)")
        con.execute("INSERT INTO things VALUES (randomblob(9000))")

    def edits(con: sqlite3.Connection) -> None:  # a live run of the other ledger, mid-night
        con.execute("UPDATE jobs SET name = name || '-x', updated_at = updated_at + 1")
        con.execute("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                    "VALUES ('m', 'x', 1, 'finished', 'h', 1)")

    wals = {"other-ledger-whole": _log_of(folder / "w1.db", copy_other),
            "other-ledger-edits": _log_of(folder / "w2.db", edits, source=other),
            "app-1k-pages": _log_of(folder / "w3.db", app, page_size=1024),
            "app-same-pages": _log_of(folder / "w4.db", app)}
    src.close()
    assert Path(f"{ledger}-wal").exists() is False  # a finished run leaves no log: the file is whole
    yield Built(folder, ledger, manifest, sim, wals)
    sim.stop()


# ------------------------------------------------------------------------------------ damage
def truncations(size: int, *, wide: bool) -> list[int]:
    """Offsets to cut at: inside the header, at page boundaries and between them, a third."""
    pages = size // PAGE
    cuts = {16, 100, PAGE, size // 3, size - PAGE}  # in the header, at page 1's end, the issue's third, one page
    if wide:
        cuts |= {1, 15, 17, 99, 101, PAGE - 1, PAGE + 1, size - 1}
        cuts |= {k * PAGE for k in range(2, pages)} | {k * PAGE + PAGE // 2 for k in range(1, pages)}
    return sorted(c for c in cuts if 0 < c < size)


def overwrites(size: int, *, wide: bool) -> list[tuple[str, int, int, int]]:
    """(name, seed, page, length): random bytes over all of a page or a stretch of it."""
    pages = size // PAGE
    seeds = range(40) if wide else range(3)
    out = []
    for seed in seeds:
        rnd = random.Random(seed)
        page = 0 if seed == 0 else rnd.randrange(pages)  # page 1 (the header and the schema) once at least
        length = PAGE if seed % 2 == 0 else rnd.randrange(16, PAGE)
        out.append((f"random-page{page + 1}-{length}b-s{seed}", seed, page, length))
    return out


def damage(built: Built, case: tuple, dest: Path) -> Path:
    """A damaged copy of the ledger at ``dest`` (a fresh folder); returns its path."""
    dest.mkdir(parents=True)
    path = dest / "l.db"
    data = built.ledger.read_bytes()
    kind = case[0]
    if kind == "cut":
        path.write_bytes(data[:case[1]])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        _, _, seed, page, length = case
        rnd = random.Random(seed)
        start = page * PAGE + (0 if length == PAGE else rnd.randrange(PAGE - length))
        buf = bytearray(data)
        buf[start:start + length] = rnd.randbytes(length)
        path.write_bytes(bytes(buf))
    elif kind == "wal":
        path.write_bytes(data)
        Path(f"{path}-wal").write_bytes(built.foreign_wals[case[1]])
    else:
        raise AssertionError(case)
    return path


def cases(built_size: int, *, wide: bool) -> list[tuple]:
    return ([("cut", n) for n in truncations(built_size, wide=wide)] + [("empty",)]
            + [("random", *o) for o in overwrites(built_size, wide=wide)]
            + [("wal", name) for name in ("other-ledger-whole", "other-ledger-edits", "app-1k-pages", "app-same-pages")])


# ------------------------------------------------------------------------------------ commands
READERS = ("status", "status-json", "export", "export-json", "report", "plan", "plan-json", "diff")
WRITERS = ("run", "run-json", "db-upgrade", "verify", "resolve", "recover", "recover-json", "deliver", "stop",
           "cancel", "retake", "retake-yes", "retake-json", "review-set")


def command(name: str, built: Built, ledger: Path, tmp: Path) -> list[str]:
    m = str(built.manifest)
    args = {
        "status": ["status"], "status-json": ["status", "--json"],
        "export": ["export"], "export-json": ["export", "--json"],
        "report": ["report", "-o", str(tmp / "r.html")],
        "plan": ["plan", m], "plan-json": ["plan", m, "--json"], "diff": ["diff", m],
        "run": ["run", m, "--api-base", built.sim.url, "--out", str(tmp / "out"), "--rpm", "0", "-q"],
        "run-json": ["run", m, "--api-base", built.sim.url, "--out", str(tmp / "out"), "--rpm", "0", "--json"],
        "db-upgrade": ["db", "upgrade"], "verify": ["verify", "--no-pictures"],
        "resolve": ["resolve", "abcdef", "--abandon"], "recover": ["recover"], "recover-json": ["recover", "--json"],
        "deliver": ["deliver"], "stop": ["stop"], "cancel": ["cancel", "--run", "1"],
        "retake": ["retake"], "retake-yes": ["retake", "--yes"], "retake-json": ["retake", "--json"],
        "review-set": ["review", "--set", "approve", "abcdef"],
    }[name]
    return [*args, "--ledger", str(ledger)]


def _steady(output: str) -> str:
    """An output without what changes from one second to the next (a heartbeat's age)."""
    return re.sub(r'"heartbeat_age_s": [0-9.]+', '"heartbeat_age_s": …', output)


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _intact_outputs(built: Built, tmp: Path) -> dict[str, str]:
    """What each reader prints on the intact ledger (a copy at the same path as the damaged ones)."""
    out = {}
    tmp.mkdir()
    ledger = tmp / "l.db"
    shutil.copy(built.ledger, ledger)
    for name in READERS:
        r = CliRunner().invoke(cli, command(name, built, ledger, tmp), env={"BATCHGEN_API_KEY": KEY})
        assert r.exit_code == 0, (name, r.output)
        out[name] = r.stdout
    ledger.unlink()
    return out


def _content(path: Path) -> str | None:
    """Everything the file holds as SQL (None: SQLite's integrity_check — b-trees, and indexes
    against their tables — finds it damaged): the test's own oracle, stronger than the
    quick_check batchgen runs."""
    con = sqlite3.connect(f"file:{path}?mode=ro" + ("" if Path(f"{path}-wal").exists() else "&immutable=1"),
                          uri=True)
    try:
        if con.execute("PRAGMA integrity_check").fetchall() != [("ok",)]:
            return None
        return "\n".join(con.iterdump())
    except sqlite3.DatabaseError:
        return None
    finally:
        con.close()


def _structure_ok(path: Path) -> bool:
    """SQLite's own structural check (``quick_check``: every b-tree page) finds nothing."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


def check_every_command(built: Built, case: tuple, tmp: Path, intact: dict[str, str], whole: str) -> tuple[str, dict]:
    """Run every command on a damaged copy and assert the contract; returns the copy's class and
    each command's exit code. Random bytes may land where nothing can see them: in unused space
    (the ledger is whole, as SQLite and its content say: it may be used), or inside a row's bytes
    with every b-tree still valid ("hidden": SQLite keeps no page checksums, so no check short of
    reading every value finds it; a command meets it when it reads that row — exit 7 — and a
    command that writes may have written before). For both only no traceback is asserted, and one
    line naming the file for a refusal; every other copy gets the whole contract."""
    path = damage(built, case, tmp / "d")
    wal = Path(f"{path}-wal")
    before = (_sha(path), _sha(wal))
    kind = "damaged"
    if case[0] == "random" and _structure_ok(path):
        kind = "unused" if _content(path) == whole else "hidden"
    codes = {}
    for name in (*READERS, *WRITERS):
        args = command(name, built, path, tmp)
        r = CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": KEY})
        where = (case, kind, name, r.exit_code, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), where
        assert "Traceback" not in r.output, where
        codes[name] = r.exit_code
        if kind == "unused" and name in READERS:
            assert _steady(r.stdout) == _steady(intact[name]), where
        if kind != "damaged":
            if r.exit_code == 7:  # met the damage (else: what it answers on the whole ledger)
                errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
                assert len(errors) == 1 and str(path) in errors[0], where
            continue
        # The damaged file and its log are never written to (a reader of an idle WAL ledger may
        # leave SQLite's empty -wal beside it, as on an intact one).
        assert (_sha(path), _sha(wal) if before[1] or _sha(wal) != EMPTY else None) == before, where
        if r.exit_code == 0 and name in READERS and _steady(r.stdout) == _steady(intact[name]):
            continue  # the damage lies in pages this reader does not read: the same answer, nothing written
        assert r.exit_code in (7, 2), where
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and str(path) in errors[0], where
        if "--json" in args:
            # The error object is the last line: `export --json` streams, and a damaged page met
            # mid-way ends what was already written to stdout (to a file, -o, nothing is left).
            doc = json.loads(r.stdout.splitlines()[-1])
            assert doc["exit_code"] == r.exit_code and str(path) in doc["error"], where
        if name in WRITERS and "not a batchgen ledger" not in errors[0]:
            assert r.exit_code == 7, where
    return kind, codes


def _sweep(built: Built, tmp_path: Path, monkeypatch, *, wide: bool) -> None:
    # `status` reads a SQLite file through its own reader (ledger.SqliteReader, no SQLAlchemy):
    # counted, so that the sweep is known to cover it rather than Ledger.
    from batchgen.ledger import SqliteReader
    from batchgen.operations import runstate

    opened: list[Path] = []

    class Counted(SqliteReader):
        def __init__(self, path: Path) -> None:
            opened.append(path)
            super().__init__(path)

    monkeypatch.setattr(runstate, "SqliteReader", Counted)
    intact = _intact_outputs(built, tmp_path / "intact")
    whole = _content(built.ledger)
    assert whole is not None
    every = cases(built.ledger.stat().st_size, wide=wide)
    tally: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for i, case in enumerate(every):
        kind, codes = check_every_command(built, case, tmp_path / f"c{i}", intact, whole)
        kinds[kind] = kinds.get(kind, 0) + 1
        for code in codes.values():
            tally[f"{kind} exit {code}"] = tally.get(f"{kind} exit {code}", 0) + 1
        if kind == "damaged":
            # Every command that may write refused the copy before writing (exit 7, or 2 for a
            # log whose database has no batchgen tables at all).
            assert all(codes[w] in (7, 2) for w in WRITERS), (case, codes)
    assert len(opened) == 2 * (len(every) + 1), len(opened)  # status and status --json, on each copy and the intact one
    # The sweep is about damage SQLite can see: most copies must be damaged, not lucky.
    assert kinds["damaged"] >= 0.75 * len(every), kinds
    print(f"{len(every)} damaged ledgers {kinds} × {len(READERS) + len(WRITERS)} commands: {tally}")


def test_every_command_answers_a_damaged_ledger_in_one_line(built, tmp_path, monkeypatch):
    _sweep(built, tmp_path, monkeypatch, wide=False)


@pytest.mark.slow
def test_every_command_answers_a_damaged_ledger_in_one_line_wide(built, tmp_path, monkeypatch):
    _sweep(built, tmp_path, monkeypatch, wide=True)


def test_the_issue_as_a_process_no_traceback(built, tmp_path):
    """The report of issue 28, as the user ran it: a ledger cut to a third, `export --json`."""
    path = damage(built, ("cut", built.ledger.stat().st_size // 3), tmp_path / "d")
    before = _sha(path)
    p = subprocess.run([sys.executable, "-m", "batchgen", "export", "--ledger", str(path), "--json"],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 7, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert str(path) in p.stderr and "restore it from a backup" in p.stderr and ".recover" in p.stderr
    doc = json.loads(p.stdout)
    assert doc["exit_code"] == 7 and "cut short" in doc["error"]
    assert _sha(path) == before


def test_the_review_page_is_not_served_from_a_damaged_ledger(built, tmp_path):
    """`batchgen review` without --set serves until interrupted: on a damaged ledger it must
    say so at once (a process, with a deadline, so that a regression cannot hang the suite)."""
    size = built.ledger.stat().st_size
    for i, case in enumerate([("cut", size // 3), ("empty",), ("wal", "other-ledger-whole")]):
        path = damage(built, case, tmp_path / f"d{i}")
        before = (_sha(path), _sha(Path(f"{path}-wal")))
        p = subprocess.run([sys.executable, "-m", "batchgen", "review", "--ledger", str(path), "--port", "0"],
                           capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert p.returncode == 7 and "Traceback" not in p.stderr, (case, p.stderr)
        assert p.stderr.count("\n") == 1 and str(path) in p.stderr, (case, p.stderr)
        assert (_sha(path), _sha(Path(f"{path}-wal"))) == before, case


def test_a_log_of_the_ledgers_own_crash_is_replayed_not_refused(built, tmp_path):
    """The log a crash leaves (committed, never checkpointed) is the ledger's own: it carries the
    ledger's identity and is read, never refused — refusing it would lose committed task ids."""
    ledger = tmp_path / "l.db"
    shutil.copy(built.ledger, ledger)
    con = sqlite3.connect(ledger, isolation_level=None)
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("UPDATE jobs SET task_id = 'task-kept-by-the-log' WHERE id = 1")
    # A run that grows the file: page 1 (its size, and the ledger's identity) is in the log too.
    con.execute("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid, options) "
                "VALUES ('m', 'x', 1, 'finished', 'h', 1, ?)", ("x" * 50_000,))
    saved = Path(f"{ledger}-wal").read_bytes()
    frames = range(32, len(saved) - 24 - PAGE + 1, 24 + PAGE)
    assert any(int.from_bytes(saved[i:i + 4], "big") == 1 for i in frames)
    image = ledger.read_bytes()
    con.close()  # checkpoints; put back the file and the log as the crash left them
    ledger.write_bytes(image)
    Path(f"{ledger}-wal").write_bytes(saved)
    r = CliRunner().invoke(cli, ["export", "--json", "--ledger", str(ledger)], env={"BATCHGEN_API_KEY": KEY})
    assert r.exit_code == 0, r.output
    assert "task-kept-by-the-log" in r.stdout
    r = CliRunner().invoke(cli, ["db", "upgrade", "--ledger", str(ledger)], env={"BATCHGEN_API_KEY": KEY})
    assert r.exit_code == 0, r.output


def test_an_error_a_damaged_file_explains_is_named_as_damage(built, tmp_path):
    """A value a damaged page made that no column can hold fails in Python, not in SQLite: the
    boundary asks SQLite whether the file is damaged, and says so (exit 7) — while the same error
    on a whole file goes on as the bug it would be."""
    from batchgen.errors import LedgerDamaged
    from batchgen.ledger import Ledger
    from batchgen.ledger.database import Room

    class Probe(Room):
        def fails(self) -> None:
            raise ValueError("a state no JobState has")

    ledger = tmp_path / "l.db"
    shutil.copy(built.ledger, ledger)
    led = Ledger(str(ledger), create=False)
    try:
        with pytest.raises(ValueError):
            Probe(led.database).fails()
        index = sqlite3.connect(ledger).execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ix_jobs_state'").fetchone()[0]
        with open(ledger, "r+b") as f:  # the index's page, overwritten as a disk might
            f.seek((index - 1) * PAGE)
            f.write(random.Random(7).randbytes(PAGE))
        with pytest.raises(LedgerDamaged, match=f"ledger {ledger} is damaged"):
            Probe(led.database).fails()
    finally:
        led.close()
