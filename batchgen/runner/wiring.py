"""The one call (``run``): everything ``batchgen run`` does, wired — preflight checks, the
ledger opened (and removed again when a refused run created it), the destination checked,
``prepare``, the embedded simulator when asked, the HTTP client, the signal handlers,
``execute``, the report and the notifications. Also ``serve_simulator`` and ``demo``.

This module holds the program's only ``asyncio.run`` (``_sync``): everything below it is
asynchronous, everything above it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import logs, notify, preflight, signals
from ..client import DEFAULT_API_BASE, Client, Secret, api_key_from_env
from ..deliver import Destination, Store, open_store
from ..errors import BatchgenError, UsageError
from ..jobs import short_key
from ..ledger import Ledger, safe_ledger_url
from ..manifest import Manifest
from ..progress import Display
from ..scheduler import RunOptions
from ..simulator import SimConfig, Simulator
from ..specs import Catalog
from .execution import RunResult, execute
from .preparation import Prepared, api_identity, prepare

T = TypeVar("T")
log = logs.log


def run(manifest: str | Path | Manifest, *, out_dir: str | Path = "out", ledger: str | Ledger | None = None,
        api_base: str | None = None, api_key: Secret | str | None = None, simulate: SimConfig | bool | None = None,
        options: RunOptions | None = None, display: Display | None = None,
        handle_signals: bool = True, deliver: str | Store | bool | None = None, deliver_endpoint: str | None = None,
        notify_urls: Sequence[str] = (), report: str | Path | None = None, catalog: Catalog | None = None) -> RunResult:
    """Submit, poll and download every job of ``manifest``; resume whatever an earlier run of it
    left in the ledger. Returns how the run ended (``RunResult.exit_code`` is what ``batchgen
    run`` exits with).

    ``ledger``: a path, a SQLAlchemy URL or an open ``Ledger`` (default: BATCHGEN_LEDGER, else
    ``./batchgen.db``). ``api_key``: default the environment variable BATCHGEN_API_KEY.
    ``simulate``: run against the embedded simulator (``True`` or a ``SimConfig``) — nothing is
    billed. ``options``: concurrency, request budget, credit cap… (``out_dir`` fills its
    ``out_dir`` when it is not given). ``deliver``: an ``s3://bucket/prefix/`` URL (default: the
    manifest's ``deliver:``; ``False``: not even that) or a ``Store``; checked before anything is
    submitted. Raises
    ``ManifestError`` (nothing recorded) for a bad manifest, ``UsageError`` without an API key,
    ``DeliveryError`` when the destination refuses, ``LedgerError`` when the ledger cannot be used.
    ``report``: write the HTML report there when the run ends. ``notify_urls``: apprise URLs
    that get one message when the run ends (or cannot start); a failed message is only logged.
    ``catalog``: the models to validate against (default the shipped catalog; see
    ``operations.catalog`` for adding a models file)."""
    where = _safe_ledger(ledger, simulated=bool(simulate))
    # SIGINT/SIGTERM are handled from here to the last notification (signals.py): a signal while
    # the manifest is read stops the run before it submits anything; one while the simulator or
    # the client shut down, or the report is written, does not tear them down mid-way.
    with signals.guard(quiet=display is None or display.quiet, enabled=handle_signals):
        try:
            result = _run(manifest, out_dir=out_dir, ledger=ledger, api_base=api_base, api_key=api_key,
                          simulate=simulate, options=options, display=display, handle_signals=handle_signals,
                          deliver=deliver, deliver_endpoint=deliver_endpoint, report=report, catalog=catalog,
                          notify_urls=notify_urls)
        except BatchgenError as e:  # the run could not start (or the ledger failed): say so too
            usable = [u for u in notify_urls if not notify.check([u])]  # the preflight named the others
            if usable:
                summary = {"exit_code": e.exit_code, "error": (str(e).splitlines() or [""])[0][:500],
                           "manifest": str(manifest), "started": e.run_started}
                notify.run_ended(usable, summary, ledger=where)
            raise
        # Never raises: a notification cannot change the run's exit code.
        notify.run_ended(notify_urls, result.as_dict(), ledger=where, report=str(report) if report else None,
                         max_credits=options.max_credits if options else None)
        return result

def _safe_ledger(ledger: str | Ledger | None, *, simulated: bool) -> str:
    """The ledger as a message may name it (a database URL without its password)."""
    if isinstance(ledger, Ledger):
        return str(ledger)
    return safe_ledger_url(ledger, simulated=simulated)


def _run(manifest: str | Path | Manifest, *, out_dir: str | Path, ledger: str | Ledger | None, api_base: str | None,
         api_key: Secret | str | None, simulate: SimConfig | bool | None, options: RunOptions | None,
         display: Display | None, handle_signals: bool, deliver: str | Store | bool | None, deliver_endpoint: str | None,
         report: str | Path | None, catalog: Catalog | None, notify_urls: Sequence[str] = ()) -> RunResult:
    sim_cfg = SimConfig() if simulate is True else (simulate or None)
    key = Secret(api_key) if isinstance(api_key, str) else api_key or api_key_from_env()
    opts = options or RunOptions(out_dir=Path(out_dir))
    api_base = api_base or DEFAULT_API_BASE
    m = manifest if isinstance(manifest, Manifest) else Manifest(manifest, catalog)
    # A misspelt --limit would cap nothing, silently: refused before anything is recorded or paid.
    unknown = [f"--limit {model}={n}: {why}" for model, n in opts.limits.items() if (why := m.unknown_model(model))]
    if unknown:
        raise UsageError("; ".join(unknown) + " (`batchgen models` lists the catalog)")
    opts.limits = {**m.limits, **opts.limits}  # run --limit overrides the manifest's `limits:`
    if opts.finish_by is None and m.finish_by is not None:  # run --finish-by overrides the manifest's
        from ..deadline import parse

        try:
            opts.finish_by = parse(m.finish_by)  # "07:00": the next one, from now
        except ValueError as e:  # an ISO moment that passed since the manifest was checked
            raise UsageError(f"{m.path}: finish_by: {e}") from None
        opts.finish_by_source = "the manifest's finish_by"
    if deliver is None or deliver is True:
        deliver = m.deliver
    # Everything that needs neither the network nor the ledger, all at once, before either.
    preflight.require(preflight.Plan(
        out_dir=opts.out_dir, api_base=None if sim_cfg is not None else api_base, simulated=sim_cfg is not None,
        ledger="" if isinstance(ledger, Ledger) else ledger, report=Path(report) if report is not None else None,
        metrics_file=opts.metrics_file, notify_urls=notify_urls,
        deliver_to=deliver if isinstance(deliver, str) else None, deliver_endpoint=deliver_endpoint,
        missing=["set BATCHGEN_API_KEY in the environment (it is never read from the command line)"]
        if key is None and sim_cfg is None else []))
    key = key or Secret("sk-simulated")
    opts.api = api_identity(api_base, sim_cfg is not None)
    if deliver is not None and deliver is not False:
        store = open_store(deliver, endpoint_url=deliver_endpoint) if isinstance(deliver, str) else deliver
        store.check()  # credentials and bucket, before anything is paid for
        opts.deliver = store
        opts.deliver_owed = str(store.destination)
    elif m.deliver:  # --no-deliver: not tonight, but the manifest's clips are still owed there
        opts.deliver_owed = str(Destination.parse(m.deliver))
    if opts.deliver_only is None:
        opts.deliver_only = m.deliver_only
    if opts.prune_local and opts.deliver is None:
        raise UsageError("--prune-local only with --deliver (or `deliver:` in the manifest): local files are "
                         "removed only once the store holds them")
    absent = [] if isinstance(ledger, Ledger) else _absent_ledger_files(ledger, simulated=sim_cfg is not None)
    led = ledger if isinstance(ledger, Ledger) else Ledger(ledger, simulated=sim_cfg is not None)
    try:
        try:
            prepared = prepare(led, m, opts)
        except BaseException:
            if absent and led.created:
                _discard_new_ledger(led, absent)  # refused before anything was recorded: leave nothing
            raise
        _announce(prepared, m, led)
        try:
            result = _sync(_execute(led, prepared, opts, api_base, key, sim_cfg, display, handle_signals))
        except BatchgenError as e:
            e.run_started = True
            raise
        if report is not None:
            from .. import operations

            try:
                operations.report(led, Path(report))
            except BatchgenError as e:  # the run paid and ended: its outcome stands, the report is a warning
                log.warning(f"warning: the report was not written: {e}")
        return result
    finally:
        if not isinstance(ledger, Ledger):
            led.close()


_SQLITE_SIDE_FILES = ("", "-journal", "-wal", "-shm", ".lock")


def _absent_ledger_files(ledger: str | None, *, simulated: bool) -> list[Path]:
    """The files of a SQLite ledger (and its lock) that do not exist yet: the ones a refused run
    must remove again. Empty when the ledger file exists (or is not a file)."""
    from ..ledger import ledger_url, sqlite_file

    path = sqlite_file(ledger_url(ledger, simulated=simulated))
    if path is None or os.path.lexists(path):
        return []
    db = str(path)
    absent = [Path(db + suffix) for suffix in _SQLITE_SIDE_FILES if not os.path.lexists(db + suffix)]
    folder = Path(db).parent
    while not folder.exists() and folder.parent != folder:  # folders the ledger's open creates
        absent.append(folder)
        folder = folder.parent
    return absent


def _discard_new_ledger(led: Ledger, files: list[Path]) -> None:
    """Remove the ledger this run created and refused to use (nothing recorded: ``prepare``
    rolled back), with its lock file. Only while holding its lock: a process that opened the
    new ledger meanwhile keeps it."""
    try:
        led.acquire_lock()
    except BatchgenError:
        return
    try:
        led.engine.dispose()
        for f in files:  # files first, then the folders they were in (innermost first)
            with contextlib.suppress(FileNotFoundError):
                if f.is_dir() and not f.is_symlink():
                    f.rmdir()
                else:
                    f.unlink()
    except OSError as e:
        log.warning(f"could not remove the new, empty ledger {led}: {e.strerror}")
    finally:
        led.release_lock()


def _announce(p: Prepared, m: Manifest, led: Ledger) -> None:
    """What a person (or cron's log) should know before the run starts spending."""
    if led.created:
        log.warning(f"new ledger {led}: nothing recorded yet, every job is new")
    worker = " (worker on a shared PostgreSQL ledger)" if p.cooperative else ""
    log.info(f"run {p.run_id}{worker}: {p.total} job(s) in {m.path}")
    for w in p.warnings:
        log.warning(f"warning: {w}")
    if p.reused_from is not None:
        log.info(f"  manifest unchanged since run {p.reused_from}: its validated jobs are reused")
    if p.requeued:
        log.info(f"  {p.requeued} failed job(s) requeued by --retry-failed")
    if p.retry_spent:  # asked for, and not done: said, or the night looks like it ignored the option
        log.warning(f"  --retry-failed: {p.retry_spent} failed job(s) not retried: each has had its --max-attempts "
                    "creates already (render retries count too); raise --max-attempts to render them again")
    for j in p.in_doubt_found:
        log.warning(f"  IN DOUBT: job {j['name']} ({short_key(j['key'])}) was mid-create when the last run stopped")


async def _execute(led: Ledger, prepared: Prepared, opts: RunOptions, api_base: str, key: Secret,
                   sim_cfg: SimConfig | None, display: Display | None, handle_signals: bool) -> RunResult:
    sim = None
    if sim_cfg is not None:
        # Its tasks persist next to a SQLite ledger, so an interrupted --simulate run resumes.
        state = led.path.with_name(led.path.name + ".sim.jsonl") if led.path is not None else None
        sim = Simulator(sim_cfg, state_file=state)
        try:
            api_base = await sim.start(port=sim.saved_port or 0)  # its result URLs name the port
        except OSError:
            api_base = await sim.start()
    stop = asyncio.Event()
    quiet = display is None or display.quiet
    try:
        with signals.stop_on_signals(stop, quiet=quiet, enabled=handle_signals):
            async with Client(api_base, key, limit=max(10, opts.concurrency * 2)) as client:
                return await execute(led, prepared, opts, client, stop, display=display)
    finally:
        if sim is not None:
            await sim.stop()


def serve_simulator(config: SimConfig, host: str = "127.0.0.1", port: int = 0,
                    on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator until SIGINT/SIGTERM; ``on_ready`` gets its base URL."""

    async def serve() -> None:
        sim = Simulator(config)
        url = await sim.start(host, port)
        if on_ready is not None:
            on_ready(url)
        stop = asyncio.Event()
        with signals.stop_on_signals(stop, quiet=True):
            await stop.wait()
        await sim.stop()

    _sync(serve())


def demo(manifest: str | Path, out_dir: str | Path) -> tuple[RunResult, dict[str, Any]]:
    """Run ``manifest`` against the embedded simulator into ``out_dir``: videos under
    ``videos/``, the ledger ``batchgen.db``, ``results.csv`` and ``report.html``."""
    from .. import operations

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = str(out / "batchgen.db")
    opts = RunOptions(out_dir=out / "videos", concurrency=8, rpm=600, poll_min=0.2)
    cfg = SimConfig(seed=7, render_min=2.0, render_max=6.0, p429=0.03, retry_after=0.5)
    result = run(manifest, ledger=ledger, simulate=cfg, api_key=Secret("sk-demo"), options=opts,
                 display=Display(every=5.0))
    rows = operations.export(ledger, out / "results.csv")
    operations.report(ledger, out / "report.html", title="batchgen demo")
    return result, {"videos": sum(1 for _ in (out / "videos").rglob("*.mp4")), "rows": rows,
                    "csv": out / "results.csv", "report": out / "report.html", "ledger": ledger}


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """The program's only ``asyncio.run``."""
    return asyncio.run(coro)

