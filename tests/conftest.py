from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import sys
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from batchgen.simulator import SimConfig

KEY = "sk-canary-ops-98765"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_configure(config):
    """The suite starts hundreds of Python processes (xdist workers, `batchgen` subprocesses,
    each run's spawned verification workers) that import this checkout's modules. Under
    PYTHONDONTWRITEBYTECODE (set on some machines, this project's among them) each one compiled
    every module it imports from source again, and every worker rewrote every test module's
    asserts again: the suite keeps its bytecode (in the `__pycache__` folders git ignores), as an
    installed batchgen has its own. Set here, before xdist starts its workers: they and every
    process they start inherit the environment."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _rewrite_test_modules_once(config)


def _rewrite_test_modules_once(config) -> None:
    """Each xdist worker imports every test module through pytest's assertion rewriting, which
    keeps the rewritten code in `__pycache__` — but on a first run (a fresh clone, an edited
    test) the workers start together, find no such file, and each rewrote every module: about
    4 s of CPU a worker for the 77 modules, four times over at the README's `-n 4`. The
    controller, which collects nothing itself, writes them once here, before xdist starts the
    workers, with pytest's own functions (so the files are exactly the ones a worker would
    write). Only files that are missing or stale are rewritten; anything unexpected (pytest's
    private functions moved) leaves the workers to do it as before."""
    import struct
    from importlib.util import MAGIC_NUMBER

    try:
        from _pytest.assertion.rewrite import PYC_TAIL, _rewrite_test, _write_pyc, get_cache_dir
        from _pytest.assertion.rewrite import assertstate_key
    except ImportError:
        return
    state = config.stash.get(assertstate_key, None)
    if state is None or sys.dont_write_bytecode:
        return
    files: set[Path] = set()
    for arg in config.args:
        p = Path(config.invocation_params.dir, arg.split("::")[0])
        if p.is_dir():
            files.update(p.rglob("test_*.py"))
        elif p.name.startswith("test_") and p.suffix == ".py":
            files.add(p)
    for fn in sorted(files):
        pyc = get_cache_dir(fn) / (fn.name[:-3] + PYC_TAIL)
        try:
            st = fn.stat()
            with open(pyc, "rb") as f:
                head = f.read(16)
            if head == MAGIC_NUMBER + bytes(4) + struct.pack("<LL", int(st.st_mtime) & 0xFFFFFFFF,
                                                             st.st_size & 0xFFFFFFFF):
                continue  # up to date: what a worker's import would check
        except OSError:
            pass
        try:
            pyc.parent.mkdir(exist_ok=True)
            source_stat, co = _rewrite_test(fn, config)
            _write_pyc(state, co, source_stat, pyc)
        except (OSError, SyntaxError):
            return  # the worker that imports it reports the problem, as without this


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups set here
def pytest_collection_modifyitems(config, items):
    """How the suite is spread over parallel workers (pyproject.toml: ``-n 4 --dist loadgroup
    --no-loadscope-reorder``):
    - a test that uses a module- or class-scoped fixture (test_docs.py's site build) stays on one
      worker with the rest of its module, which builds that fixture once, not once per worker;
    - the longest units of work (a test, or a group's tests together) first, by the seconds
      tests/durations.py expects of them, so that the longest start at once instead of ending the
      run alone. xdist hands out units in the order of their first test here
      (``--no-loadscope-reorder``; its own order put the groups with the most tests first)."""
    from durations import expected

    unit: dict[str, str] = {}
    for item in items:
        fixturedefs = getattr(item, "_fixtureinfo", None)
        for defs in (fixturedefs.name2fixturedefs.values() if fixturedefs else ()):
            if defs and defs[-1].scope in ("module", "class", "package"):
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
                break
        group = item.get_closest_marker("xdist_group")
        unit[item.nodeid] = (group.args[0] if group.args else group.kwargs.get("name", "default")) if group else ""
    seconds: dict[str, float] = {}
    for item in items:
        key = unit[item.nodeid] or item.nodeid
        seconds[key] = seconds.get(key, 0.0) + expected(item.nodeid, item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -seconds[unit[item.nodeid] or item.nodeid])  # stable: a group keeps its order


@pytest.fixture(scope="session")
def _sim_media(request, tmp_path_factory) -> Path:
    """One folder of simulated clips shared by every worker process and every `batchgen run
    --simulate` they start (BATCHGEN_SIM_MEDIA_CACHE), and kept from one run of the suite to the
    next in pytest's cache folder (`.pytest_cache/d/`): each clip shape is encoded once, not once
    per process nor once per run (an encode is 0.2-2 s of CPU; the fast lane's shapes took some
    10 s of each run). The folder's name holds a hash of the encoder's source and PyAV's version,
    so clips made by another encoder are never read. Without the cache (`-p no:cacheprovider`),
    one folder for the run."""
    import hashlib
    from importlib.metadata import version

    import batchgen

    media = Path(batchgen.__file__).parent / "simulator" / "media.py"  # its source, without importing aiohttp
    key = hashlib.sha256(media.read_bytes() + version("av").encode()).hexdigest()[:12]
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(f"sim-media-{key}"))
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder = root / "sim-media"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch, _sim_media):
    """Every test gets its own world, so tests run side by side (pytest-xdist workers, see
    pyproject.toml's addopts) exactly as they do alone; a new test file has it without asking:
    - its own working directory: a command's default `./out`, `./batchgen.db`, `./demo-out`
      lands there, never in the checkout nor beside another test's;
    - none of the shell's `BATCHGEN_*` or `AWS_*` variables (a developer's BATCHGEN_LEDGER would
      point every test at one ledger), but the run's shared simulated clips (`_sim_media`).
      Subprocesses inherit this environment.
    Ports are the OS's (the simulator and every test server bind port 0; tests/s3server.py
    retries when the port it had to pick was taken), PostgreSQL a private schema (`pg_url`)."""
    isolated_env(monkeypatch, _sim_media)
    # mkdtemp, not tmp_path_factory.mktemp: that one lists the worker's whole temporary folder
    # (a numbered name: one entry more for every test so far) for each new folder — as each
    # `tmp_path` does, so these folders are kept out of it, in a folder of their own
    import tempfile

    cwds = tmp_path_factory.getbasetemp() / "cwd"
    cwds.mkdir(exist_ok=True)
    monkeypatch.chdir(tempfile.mkdtemp(dir=cwds))


def isolated_env(monkeypatch, sim_media: Path) -> None:
    """`_isolated`'s environment, also for a module-scoped fixture (set up before any test's own
    fixtures): no `BATCHGEN_*` or `AWS_*` variable of the shell, the run's shared clips."""
    for name in list(os.environ):
        if name.startswith(("BATCHGEN_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATCHGEN_SIM_MEDIA_CACHE", str(sim_media))


# batchgen is imported where it is used, not at the top: a test's module imports it anyway,
# while the nested pytest of test_xdist_groups.py (this conftest, trivial tests, three
# processes) would pay SQLAlchemy's and aiohttp's imports for nothing.
def run_cli(args, **env):
    """`batchgen ARGS` in-process, with a canary API key in the environment."""
    from click.testing import CliRunner

    from batchgen.cli import cli

    return CliRunner().invoke(cli, args, env={"BATCHGEN_API_KEY": KEY, **env}, catch_exceptions=False)


def run_args(sim, manifest, tmp_path, *extra):
    return ["run", str(manifest), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"), "--out",
            str(tmp_path / "out"), "--concurrency", "16", "--rpm", "0", "--poll-min", "0.05", *extra]


class SimThread:
    """The simulator on its own event loop in a background thread, so the code under test (CLI
    runs, subprocesses) talks to it over real loopback HTTP."""

    def __init__(self, config: SimConfig) -> None:
        from batchgen.simulator import Simulator

        self.sim = Simulator(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.url = ""

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.url = self.loop.run_until_complete(self.sim.start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.sim.stop())
        self.loop.close()

    def start(self) -> SimThread:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if not self.thread.is_alive():
            return  # already stopped (a test may kill the API mid-run)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def set(self, **values: Any) -> None:
        req = urllib.request.Request(self.url + "/_sim/config", data=json.dumps(values).encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def truth(self) -> dict[str, Any]:
        return json.loads(urllib.request.urlopen(self.url + "/_sim/ground-truth", timeout=30).read())


@pytest.fixture
def sim_factory():
    started: list[SimThread] = []

    from batchgen.simulator import SimConfig

    def make(**knobs: Any) -> SimThread:
        s = SimThread(SimConfig(**{"render_min": 0.05, "render_max": 0.3, **knobs})).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def zygote():
    """Runs that are killed or crash, forked from one warm process (tests/forkrun.py): real
    processes with their own pid, killed by a real SIGKILL or ending at a crash point (exit 137),
    each running `python -m batchgen ARGS` as a new interpreter does, without its ~1.2 s of CPU
    of imports first (test_kill.py: 19 per run of its two tests, about a quarter of their CPU;
    under load, kills timed from the start landed in the imports; test_crash_sweep.py: 27).
    Session-scoped: one per worker that runs them, and no xdist group (module-scoped fixtures'
    tests are grouped on one worker, above). Not for tests of how a real process starts
    (test_signals.py's signal delivery)."""
    from forkrun import Zygote

    z = Zygote()
    yield z
    z.close()


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs with the given options (``size=40k``, ``ro``…); unmounted afterwards. In CI
    (CI=true) a mount that fails is a failure, never a skip."""
    import os
    import subprocess

    mounted: list[Path] = []

    def mount(options: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"cannot mount a tmpfs: {r.stderr}")
            pytest.skip(f"cannot mount a tmpfs: {r.stderr}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def sim(sim_factory):
    return sim_factory()


def write_csv_manifest(path: Path, n: int, *, model: str = "grok-imagine-text-to-video", prefix: str = "shot",
                       small: bool = False) -> Path:
    """``n`` jobs of clips of one to ten seconds at the model's default resolution (720p).
    ``small``: 2-second 480p clips, for a test of many clips that checks what happens to them,
    not what is in them: each clip's verification (decoding, poster, contact sheet) is most of
    a run's CPU (80 jobs under faults, in-process: 4.4 s; 3.3 s small; 2.0 s small with
    ``--no-pictures``; 1.0 s with ``--no-verify``)."""
    lines = ["name,model,prompt,duration" + (",resolution" if small else "")]
    for i in range(n):
        lines.append(f"{prefix}{i:04d},{model},A test clip number {i} of a lighthouse,"
                     + ("2,480p" if small else f"{1 + i % 10}"))
    path.write_text("\n".join(lines) + "\n")
    return path


def ledger_rows(ledger: Path) -> list[dict]:
    """Every job of a SQLite ledger, as ``batchgen export`` reads it (one dict a job)."""
    from batchgen.ledger import Ledger

    led = Ledger(str(ledger), create=False)
    try:
        return [dict(j) for j in led.iter_export()]
    finally:
        led.close()


def ledger_states(ledger: Path) -> dict[str, int]:
    """Jobs per state in a SQLite ledger another process is running on, read with sqlite3
    directly (read-only: reading never writes); {} while it does not exist or is locked."""
    import sqlite3

    if not ledger.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as c:
            return dict(c.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    except sqlite3.Error:
        return {}


def wait_for(cond, timeout: float = 60.0) -> None:
    """Wait for a condition another process brings about. Never a fixed sleep: on a loaded
    machine a subprocess may still be importing when a sleep that suffices on an idle one ends."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def check_invariants(truth: dict[str, Any], ledger_path: Path | str, out_dir: Path) -> dict[str, int]:
    """Assert the money invariants (batchgen.audit) against the simulator's ground truth."""
    from batchgen.audit import audit

    a = audit(truth, ledger_path, out_dir)
    assert a.ok, a.violations
    return {"jobs": a.jobs, "done": a.done, "creates": a.creates, "unknown_in_doubt": a.unknown_in_doubt,
            "duplicates": a.duplicates, "in_doubt": a.in_doubt}


PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def migrated_down(url: str, monkeypatch, revision: str):
    """The ledger at ``url`` (migrated to head) checked against the models, downgraded to
    ``revision`` for the block to look at (a connection is yielded), then upgraded to head and
    checked again: a migration's both ways."""
    from alembic import command
    from alembic.config import Config

    from batchgen.ledger import make_engine, migrations_dir

    monkeypatch.setenv("BATCHGEN_LEDGER", url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.check(cfg)
    command.downgrade(cfg, revision)
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            yield c
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
    command.check(cfg)


@contextlib.contextmanager
def ledger_at_revision(url: str, revision: str):
    """A ledger migrated only up to ``revision`` (an older batchgen's), for the block to fill in
    one transaction (the connection is yielded); the engine is disposed afterwards."""
    from alembic import command
    from alembic.config import Config

    from batchgen.ledger import migrations_dir, make_engine

    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    try:
        with engine.begin() as c:
            cfg.attributes["connection"] = c
            command.upgrade(cfg, revision)
            yield c
    finally:
        engine.dispose()


@pytest.fixture
def pg_url():
    """A private schema in the `test` database of the local PostgreSQL server. In CI (CI=true)
    an unreachable server is a failure, never a silent skip."""
    import os
    import secrets

    from sqlalchemy import create_engine, text

    engine = create_engine(PG_BASE)
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any connection problem
        engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {e}")
        pytest.skip(f"PostgreSQL not reachable: {e}")
    schema = "bg_" + secrets.token_hex(4)
    with engine.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with engine.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


class _Collect(HTMLParser):
    """External resources (there must be none) and the embedded job data."""

    def __init__(self) -> None:
        super().__init__()
        self.external = 0
        self._in_data = False
        self.data_text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "img", "video") and (a.get("src") or a.get("href")):
            self.external += 1
        self._in_data = tag == "script" and a.get("id") == "data"

    def handle_endtag(self, tag):
        self._in_data = False

    def handle_data(self, data):
        if self._in_data:
            self.data_text += data


def page_data(page: str) -> dict:
    p = _Collect()
    p.feed(page)
    assert p.external == 0  # one self-contained file
    return json.loads(gzip.decompress(base64.b64decode(p.data_text)))


@pytest.fixture(scope="session")
def _s3_server():
    from s3server import S3Server

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(_s3_server):
    """moto's S3 server (its own process, real HTTP, authentication on), as new for each test:
    one server per worker process, reset before every test that asks for it."""
    if _s3_server.proc.poll() is not None:  # a test stopped it: a new one
        _s3_server.proc.wait()
        _s3_server.__init__()
    else:
        _s3_server.reset()
    return _s3_server



# Per-test CPU (`PYTEST_CPU_LOG=DIR pytest ...`): user+system time of the test process and of
# the children it waited for, around each test's setup, call and teardown, one line per test
# in DIR/<worker>.tsv (CPU s, wall s, test id), plus the process's CPU before its first test
# (start-up and collection) and at its end. CPU, unlike wall time, barely moves with the load
# of a shared machine: how DEVELOPERS.md's fast-lane figures were found.
_CPU_LOG = os.environ.get("PYTEST_CPU_LOG")


def _cpu_s() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _cpu_line(cpu: float, wall: float, what: str) -> None:
    path = Path(_CPU_LOG or ".") / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv"
    with path.open("a") as f:
        f.write(f"{cpu:.3f}\t{wall:.3f}\t{what}\n")


if _CPU_LOG:
    _cpu_first = [True]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import time

        if _cpu_first:
            _cpu_first.clear()
            _cpu_line(_cpu_s(), 0.0, "<before the first test>")
        cpu, wall = _cpu_s(), time.monotonic()
        yield
        _cpu_line(_cpu_s() - cpu, time.monotonic() - wall, item.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(session):
        _cpu_line(_cpu_s(), 0.0, "<session end>")
