"""Command line: a thin click layer over the library. Data goes to stdout, progress and messages
to stderr. Nothing imports this module; it holds the program's only ``asyncio.run``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__, logs
from .errors import EXIT_USAGE, BatchgenError, LedgerError, ManifestError
from .export import write_csv, write_json
from .ledger import Ledger, Transition, ledger_url
from .manifest import Manifest

# The client (aiohttp), the simulator, the scheduler, rich and the report are imported by the
# commands that use them: `export`, `status` or `plan` need not pay for them at start-up.
if TYPE_CHECKING:
    from .client import Secret
    from .progress import Display
    from .scheduler import RunOptions, RunResult
    from .simulator import SimConfig

DEFAULT_API_BASE = "https://api.foxapi.cc"

T = TypeVar("T")
EXIT_CODES_HELP = """
\b
Exit codes:
  0  every job of the manifest is done
  1  some jobs failed or are in doubt (see `batchgen export`, `batchgen resolve`)
  2  bad input or usage (nothing was submitted)
  3  stopped before every job finished (signal or `batchgen stop`, retries exhausted,
     task timeout, --max-credits reached, output disk full): re-run to resume
  4  the balance is too low (HTTP 402): submission stopped, paid tasks collected
  5  another `batchgen run` holds this SQLite ledger (PostgreSQL: several may run)
  6  the API refused the key (HTTP 401)
"""


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(e: BatchgenError) -> None:
    if isinstance(e, ManifestError):
        _echo_err(f"error: the manifest has {len(e.problems) + e.truncated} problem(s):")
        for line in str(e).splitlines():
            _echo_err(f"  {line}")
    else:
        _echo_err(f"error: {e}")
    sys.exit(e.exit_code)


def ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--ledger", envvar="BATCHGEN_LEDGER", default=None, metavar="PATH|URL",
                        help="Ledger: a SQLite file path or a SQLAlchemy URL (env BATCHGEN_LEDGER; default ./batchgen.db).")(f)


def _prices(path: Path | None) -> Any:
    from .cost import PriceTable

    return PriceTable.load(path)


def prices_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--prices", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                        help="Price table overriding the shipped placeholder (YAML, see batchgen/prices.yaml).")(f)


def format_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(f)
    return f


def _open_ledger(url: str | None) -> Ledger:
    try:
        return Ledger(url)
    except LedgerError as e:
        _fail(e)
        raise  # unreachable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchgen")
def cli() -> None:
    """batchgen: run manifests of paid video generations (foxapi grok-imagine) crash-safely.

    Every state change is recorded in a ledger before and after each paid request, so an
    interrupted run resumes without paying twice. The API key is read from the environment
    variable BATCHGEN_API_KEY only."""


# ---------------------------------------------------------------------------------- plan
@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@ledger_option
@prices_option
@click.option("--explain", is_flag=True, help="One line per job: what a run would do with it, and why.")
@format_options
def plan(manifest: Path, ledger: str | None, prices: Path | None, explain: bool, as_json: bool) -> None:
    """Validate and expand MANIFEST without sending anything; compare with the ledger.

    Prints how many jobs are new, already done, in flight, failed or in doubt, the total
    seconds of video and the estimated credits per model and resolution (from the price
    table: placeholders unless you pass --prices). Exit code 2 when the manifest is invalid."""
    try:
        table = _prices(prices)
        m = Manifest(manifest)
        keys: list[str] = []
        rows: list[tuple[str, str, str]] = []  # (key, name, source) for --explain
        seconds: dict[tuple[str, str], float] = defaultdict(float)
        jobs_by: dict[tuple[str, str], int] = defaultdict(int)
        credits: dict[tuple[str, str], float | None] = {}
        for job in m.expand():
            keys.append(job.key)
            if explain:
                rows.append((job.key, job.name, job.source))
            group = (job.model, str(job.request.get("resolution", "-")))
            jobs_by[group] += 1
            seconds[group] += table.seconds(job.request)
            est = table.estimate(job.request)
            prev = credits.get(group, 0.0)
            credits[group] = None if est is None or prev is None else prev + est
        m.check()
    except BatchgenError as e:
        _fail(e)
    known: dict[str, dict[str, Any]] = {}
    url = ledger_url(ledger)
    if not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists():
        led = _open_ledger(ledger)
        known = led.states_by_key(keys)
        led.close()
    buckets = {"new": 0, "done": 0, "in_flight": 0, "failed": 0, "in_doubt": 0, "cancelled": 0, "queued": 0}
    for k in keys:
        s = known[k]["state"] if k in known else None
        if s is None:
            buckets["new"] += 1
        elif s in ("submitting", "submitted", "rendering", "completed"):
            buckets["in_flight"] += 1
        else:
            buckets[s] += 1
    per = [{"model": mo, "resolution": r, "jobs": jobs_by[(mo, r)], "seconds": seconds[(mo, r)],
            "credits_estimated": None if credits[(mo, r)] is None else round(credits[(mo, r)] or 0.0, 4)}
           for (mo, r) in sorted(jobs_by)]
    total = sum(p["credits_estimated"] or 0.0 for p in per)
    doc = {"manifest": str(manifest), "jobs": len(keys), "states": buckets, "video": per,
           "credits_estimated_total": round(total, 4), "credits_unit": table.unit,
           "prices": str(prices) if prices else "shipped placeholder table", "warnings": m.warnings}
    if explain:
        doc["explain"] = [{"key": k[:12], "name": n, "row": src, "action": a, "reason": r}
                          for k, n, src in rows for a, r in [_why(known.get(k))]]
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for e in doc.get("explain", []):
        click.echo(f"{e['action']:<9} {e['name']} ({e['key']}, {e['row']}): {e['reason']}")
    for w in m.warnings:
        _echo_err(f"warning: {w}")
    click.echo(f"{manifest}: {len(keys)} job(s)")
    click.echo("  " + "  ".join(f"{k.replace('_', ' ')}={v}" for k, v in buckets.items()))
    click.echo(f"  to submit: {buckets['new'] + buckets['queued']}")
    for p in per:
        est = "no price" if p["credits_estimated"] is None else f"~{p['credits_estimated']:g} {table.unit}"
        click.echo(f"  {p['model']:<34} {p['resolution']:>5}  {p['jobs']:>7} job(s)  {p['seconds']:>9g} s of video  {est}")
    click.echo(f"  estimated total: ~{total:g} {table.unit} for all jobs ({doc['prices']})")


def _why(j: dict[str, Any] | None) -> tuple[str, str]:
    """What `run` would do with a job, and why (the plan's dry-run reasons)."""
    if j is None:
        return "submit", "new: no job with this exact request in the ledger"
    s = j["state"]
    if s == "queued":
        return "submit", f"queued, never created ({j['attempts']} earlier attempt(s) refused cleanly)"
    if s == "done":
        return "skip", f"done: {j['output_path']}"
    if s in ("submitted", "rendering"):
        return "poll", f"task {j['task_id']} is rendering: polled, never resubmitted"
    if s == "completed":
        return "download", f"task {j['task_id']} finished: its result is downloaded"
    if s in ("submitting", "in_doubt"):
        return "hold", "in doubt: the create may exist; settle with `batchgen resolve`"
    if s == "failed":
        if j["retryable"]:
            return "hold", f"failed ({j['error_code']}), retryable: resubmitted only with --retry-failed"
        return "hold", f"failed ({j['error_code']}): change the request to try again"
    return "skip", f"{s} by an operator"


# ---------------------------------------------------------------------------------- run
def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    from .simulator import SimConfig

    types = {f.name: f.type for f in fields(SimConfig)}
    out: dict[str, Any] = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or k not in types:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(types))}")
        if v.lower() in ("none", "null"):
            out[k] = None
            continue
        try:
            out[k] = json.loads(v) if v else v  # numbers; anything else stays a string
        except ValueError:
            out[k] = v
    return out


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Directory for the videos.")
@ledger_option
@click.option("--api-base", envvar="BATCHGEN_API_BASE", default=DEFAULT_API_BASE, show_default=True,
              help="API base URL (env BATCHGEN_API_BASE).")
@click.option("--concurrency", type=click.IntRange(1, 10000), default=8, show_default=True,
              help="Jobs in flight at once (from create until the file is downloaded).")
@click.option("--rpm", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="API requests per minute, creates and polls together (0 = unlimited).")
@click.option("--poll-min", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="Shortest pause between two polls of one task (seconds).")
@click.option("--task-timeout", type=click.FloatRange(min=1), default=7200.0, show_default=True,
              help="Stop polling a task after this many seconds (its id stays recorded).")
@click.option("--retry-failed", is_flag=True,
              help="Resubmit jobs whose task failed for a retryable reason (timeout, generation_failed, "
                   "model_unavailable…), up to --max-attempts creates per job. Each is a new paid task.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--max-credits", type=click.FloatRange(min=0), default=None,
              help="Stop submitting before this run's estimated credits (price table) would pass N.")
@prices_option
@click.option("--simulate", is_flag=True, help="Start the embedded simulator and run against it (no key needed).")
@click.option("--sim-set", multiple=True, metavar="KEY=VALUE", help="Simulator knob for --simulate (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr (warnings and the summary still appear).")
@click.option("--progress-every", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds between plain progress lines when stderr is not a terminal (cron).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object per line (stderr messages and --log-file).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append every event (each job state change, warnings) to this file.")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="PostgreSQL ledger: seconds between this worker's lease renewals.")
@click.option("--lease-timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="PostgreSQL ledger: a worker silent this long is dead; live workers take over its jobs.")
def run(manifest: Path, out_dir: Path, ledger: str | None, api_base: str, concurrency: int, rpm: float,
        poll_min: float, task_timeout: float, retry_failed: bool, max_attempts: int, max_credits: float | None,
        prices: Path | None, simulate: bool, sim_set: tuple[str, ...], as_json: bool, quiet: bool,
        progress_every: float, log_format: str, log_file: Path | None, heartbeat: float,
        lease_timeout: float) -> None:
    """Submit, poll and download every job of MANIFEST; resume whatever an earlier run left.

    Jobs that already have a task id are polled, never resubmitted; finished files are not
    downloaded again; a job whose create may or may not have reached the API (timeout, 5xx,
    crash mid-request) becomes `in_doubt` and waits for `batchgen resolve`. The first
    SIGINT/SIGTERM (or `batchgen stop`) stops submitting and records what is in flight; a
    second signal exits at once. The API has no cancel: tasks already created run to the end
    and are collected by the next run.

    On a PostgreSQL ledger any number of `batchgen run` processes (one or many machines) may
    work on one manifest: each is a worker that leases jobs, they split --rpm between them, and
    a worker that dies has its tasks taken over by the others after --lease-timeout. A SQLite
    ledger allows one run at a time (exit 5 otherwise)."""
    from .client import Secret
    from .progress import Display
    from .scheduler import RunOptions
    from .simulator import SimConfig

    key = os.environ.get("BATCHGEN_API_KEY")
    logs.setup(fmt=log_format, file=log_file, quiet=quiet, secrets=[key or ""])
    if not key and not simulate:
        _echo_err("error: set BATCHGEN_API_KEY in the environment (it is never read from the command line)")
        sys.exit(EXIT_USAGE)
    if lease_timeout < 2 * heartbeat:
        raise click.BadParameter(f"must be at least twice --heartbeat ({heartbeat:g} s), or live workers "
                                 "would be taken for dead", param_hint="--lease-timeout")
    try:
        table = _prices(prices)
    except BatchgenError as e:
        _fail(e)
    opts = RunOptions(out_dir=out_dir, concurrency=concurrency, rpm=rpm or None, poll_min=poll_min,
                      task_timeout=task_timeout, retry_failed=retry_failed, max_attempts=max_attempts,
                      max_credits=max_credits, prices=table, heartbeat=heartbeat, lease=lease_timeout)
    sim_cfg = SimConfig(**_parse_sets(sim_set)) if simulate else None
    display = Display(quiet=quiet, every=progress_every, emit=_json_progress if log_format == "json" else None)
    code = run_to_exit(manifest, ledger, opts, api_base, Secret(key or "sk-simulated"), sim_cfg, as_json, quiet, display)
    sys.exit(code)


def _json_progress(snap: Any) -> None:
    logs.log.info("progress", extra={"event": {"event": "progress", **snap.as_dict()}})


def run_to_exit(manifest: Path, ledger: str | None, opts: RunOptions, api_base: str, key: Secret,
                sim_cfg: SimConfig | None, as_json: bool, quiet: bool, display: Display) -> int:
    from .scheduler import prepare

    led = _open_ledger(ledger)
    try:
        try:
            prepared = prepare(led, Manifest(manifest), opts)
        except BatchgenError as e:
            _fail(e)
        if not quiet:
            worker = " (worker on a shared PostgreSQL ledger)" if prepared.cooperative else ""
            _echo_err(f"run {prepared.run_id}{worker}: {prepared.total} job(s) in {manifest}")
            if prepared.reused_from is not None:
                _echo_err(f"  manifest unchanged since run {prepared.reused_from}: its validated jobs are reused")
            if prepared.requeued:
                _echo_err(f"  {prepared.requeued} failed job(s) requeued by --retry-failed")
            for j in prepared.in_doubt_found:
                _echo_err(f"  IN DOUBT: job {j['name']} ({j['key'][:12]}) was mid-create when the last run stopped")
        result = _run(_execute(led, prepared, opts, api_base, key, sim_cfg, quiet, display))
    finally:
        led.close()
    _print_result(result, as_json)
    return result.exit_code


async def _execute(led: Ledger, prepared: Any, opts: RunOptions, api_base: str, key: Secret,
                   sim_cfg: SimConfig | None, quiet: bool, display: Display) -> RunResult:
    from .client import Client
    from .scheduler import execute
    from .signals import stop_on_signals
    from .simulator import Simulator

    sim = None
    if sim_cfg is not None:
        sim = Simulator(sim_cfg)
        api_base = await sim.start()
    stop = asyncio.Event()
    try:
        with stop_on_signals(stop, quiet=quiet):
            async with Client(api_base, key, limit=max(10, opts.concurrency * 2)) as client:
                return await execute(led, prepared, opts, client, stop, display=display)
    finally:
        if sim is not None:
            await sim.stop()


def _print_result(r: RunResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
        return
    counts = "  ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))
    _echo_err(f"run {r.run_id} finished in {r.elapsed:.1f}s: {counts}")
    _echo_err(f"  requests={r.requests} polls={r.polls} throttled(429)={r.throttled} ledger commits={r.commits} "
              f"credits reserved={r.credits_reserved:g} (estimated {r.credits_estimated:g})")
    for j in r.failed[:20]:
        _echo_err(f"  FAILED   {j['name']} ({j['key'][:12]}): {j['error_code']}: {j['error_message']}")
    if len(r.failed) > 20:
        _echo_err(f"  … {len(r.failed) - 20} more failed (batchgen export)")
    for j in r.in_doubt:
        _echo_err(f"  IN DOUBT {j['name']} ({j['key'][:12]}): {j['error_code']} — "
                  f"batchgen resolve {j['key'][:12]} --adopt TASK_ID | --resubmit | --abandon")
    if r.reason:
        _echo_err(f"  stopped: {r.reason}")


# ---------------------------------------------------------------------------------- export
@cli.command()
@ledger_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@click.option("--run", "run_id", type=int, default=None, help="Only the jobs of this run.")
@click.option("--json", "as_json", is_flag=True, help="JSON array instead of CSV.")
def export(ledger: str | None, output: Path | None, run_id: int | None, as_json: bool) -> None:
    """Export one row per job, in manifest order, as CSV (default) or JSON.

    Text cells that a spreadsheet would treat as a formula (= + - @ tab CR LF) are prefixed
    with an apostrophe."""
    led = _open_ledger(ledger)
    try:
        rows = led.iter_export(run_id)
        if output is None:
            n = (write_json if as_json else write_csv)(rows, sys.stdout)
        else:
            tmp = output.with_name(output.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                n = (write_json if as_json else write_csv)(rows, f)
            os.replace(tmp, output)
        _echo_err(f"exported {n} job(s)" + (f" to {output}" if output else ""))
    finally:
        led.close()


# ---------------------------------------------------------------------------------- resolve
@cli.command()
@click.argument("job")
@ledger_option
@click.option("--resubmit", "action", flag_value="resubmit", help="Queue it again: the next run creates a new (paid) task.")
@click.option("--abandon", "action", flag_value="abandon", help="Give it up: marked cancelled, never submitted again.")
@click.option("--adopt", "task_id", default=None, metavar="TASK_ID",
              help="The create did happen and this is its task id: poll and download it.")
def resolve(job: str, ledger: str | None, action: str | None, task_id: str | None) -> None:
    """Settle an in-doubt JOB (id, key or key prefix) — recorded in the event log.

    A job is in doubt when its create may have reached the API but no task id came back
    (timeout, reset, 5xx, crash mid-request). The API has no way to look the task up, so a
    human decides: adopt the task id (from the provider's console), resubmit (risking a
    second charge) or abandon."""
    chosen = [a for a in (action, "adopt" if task_id else None) if a]
    if len(chosen) != 1:
        _echo_err("error: give exactly one of --resubmit, --abandon, --adopt TASK_ID")
        sys.exit(EXIT_USAGE)
    led = _open_ledger(ledger)
    try:
        j = led.job(job)
        if j is None:
            _echo_err(f"error: no job {job!r} in the ledger")
            sys.exit(EXIT_USAGE)
        if j["state"] != "in_doubt":
            _echo_err(f"error: job {j['name']} ({j['key'][:12]}) is {j['state']}, not in_doubt")
            sys.exit(EXIT_USAGE)
        if chosen[0] == "adopt":
            assert task_id is not None
            other = led.job(task_id)
            if other is not None:
                _echo_err(f"error: task {task_id} already belongs to job {other['name']} ({other['key'][:12]})")
                sys.exit(EXIT_USAGE)
            t = Transition(j["id"], "submitted", ("in_doubt",), {"submitted_at": time.time(), "error_code": None,
                           "error_message": None, "estimated_time": None}, task_id=task_id,
                           detail="resolved by operator: adopted task")
        elif chosen[0] == "resubmit":
            t = Transition(j["id"], "queued", ("in_doubt",), {"error_code": None, "error_message": None},
                           detail="resolved by operator: resubmit")
        else:
            t = Transition(j["id"], "cancelled", ("in_doubt",), {"error_code": "abandoned",
                           "error_message": "abandoned by operator while in doubt"}, detail="resolved by operator: abandon")
        if not led.apply([t])[0]:
            _echo_err("error: the job changed state meanwhile; nothing done")
            sys.exit(1)
        _echo_err(f"job {j['name']} ({j['key'][:12]}): {chosen[0]} recorded"
                  + ("; run the manifest again to continue" if chosen[0] != "abandon" else ""))
    except LedgerError as e:
        _fail(e)
    finally:
        led.close()


# ---------------------------------------------------------------------------------- status
@cli.command()
@ledger_option
@prices_option
@click.option("--expiring-within", "hours", type=click.FloatRange(min=0), default=6.0, show_default=True,
              help="List undownloaded results whose 24 h URL expires within this many hours.")
@click.option("--runs", "n_runs", type=click.IntRange(1, 1000), default=10, show_default=True)
@format_options
def status(ledger: str | None, prices: Path | None, hours: float, n_runs: int, as_json: bool) -> None:
    """Runs in the ledger with per-state counts, the oldest unfinished jobs, in-doubt jobs with
    the credits at risk, and results about to expire undownloaded."""
    from .scheduler import RESULT_TTL

    table = _prices(prices)
    led = _open_ledger(ledger)
    try:
        runs_ = led.runs(n_runs)
        oldest = led.unfinished(10)
        doubt = led.jobs_in_state("in_doubt")
        expiring = led.expiring(hours * 3600, RESULT_TTL)
    finally:
        led.close()
    now = time.time()

    def brief(j: dict[str, Any]) -> dict[str, Any]:
        return {"id": j["id"], "key": j["key"][:12], "name": j["name"], "state": j["state"], "task_id": j["task_id"],
                "error": j["error_code"]}

    at_risk = [dict(brief(j), credits_at_risk=table.estimate(json.loads(j["request"]))) for j in doubt]
    doc = {
        "runs": [{"id": r["id"], "manifest": r["manifest"], "status": r["status"], "started_at": r["started_at"],
                  "finished_at": r["finished_at"], "host": r["host"], "pid": r["pid"],
                  "stop_requested": bool(r["stop_requested"]), "jobs": r["jobs_total"], "counts": r["counts"],
                  "heartbeat_age_s": r["heartbeat_age_s"], "held": r["held"]}
                 for r in runs_],
        "oldest_unfinished": [dict(brief(j), age_s=round(now - (j["submitted_at"] or j["created_at"]))) for j in oldest],
        "in_doubt": at_risk,
        "credits_at_risk": round(sum(x["credits_at_risk"] or 0 for x in at_risk), 4),
        "expiring": [dict(brief(j), expires_in_s=round(j["result_at"] + RESULT_TTL - now)) for j in expiring],
    }
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="runs", title_justify="left")
    for col in ("run", "status", "started", "worker", "jobs", "counts", "manifest"):
        t.add_column(col)
    for r in doc["runs"]:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"]))
        st = r["status"] + (" (stop requested)" if r["stop_requested"] and r["status"] == "running" else "")
        worker = f"{r['host']}:{r['pid']}"
        if r["status"] == "running" and r["heartbeat_age_s"] is not None:
            worker += f" ♥ {r['heartbeat_age_s']:g}s ago, holds {r['held']}"
        t.add_row(str(r["id"]), st, started, worker, str(r["jobs"]),
                  " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items())), r["manifest"])
    con.print(t)
    for title, rows, extra in (("oldest unfinished jobs", doc["oldest_unfinished"], "age_s"),
                               (f"in doubt (credits at risk ≈ {doc['credits_at_risk']:g})", doc["in_doubt"], "credits_at_risk"),
                               (f"results expiring within {hours:g} h, not downloaded", doc["expiring"], "expires_in_s")):
        if not rows:
            con.print(f"{title}: none")
            continue
        t = Table(title=title, title_justify="left")
        for col in ("id", "key", "name", "state", "task id", "error", extra):
            t.add_column(col)
        for j in rows:
            t.add_row(*(str(j[k] if j[k] is not None else "") for k in ("id", "key", "name", "state", "task_id", "error", extra)))
        con.print(t)


# ---------------------------------------------------------------------------------- report
@cli.command()
@ledger_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True)
@click.option("--run", "run_id", type=int, default=None, help="Only the jobs of this run.")
@click.option("--title", default="batchgen report", show_default=True)
def report(ledger: str | None, output: Path, run_id: int | None, title: str) -> None:
    """Write one self-contained HTML report: tiles, failures by code, timing and poll histograms,
    and a filterable job table with an inline player per downloaded clip (paths relative to the
    report, so keep it next to the videos' folder when moving it)."""
    from .report import render as render_report

    led = _open_ledger(ledger)
    try:
        run_row = led.run(run_id)
        summary = render_report(led.iter_export(run_id), output, title=title, run=run_row)
    finally:
        led.close()
    _echo_err(f"report: {summary['jobs']} job(s) → {output}")


# ---------------------------------------------------------------------------------- stop / cancel
@cli.command()
@ledger_option
@click.option("--run", "run_id", type=int, default=None, help="Default: the latest running run.")
@click.option("--all", "all_runs", is_flag=True, help="Every running run (all workers of a PostgreSQL ledger).")
def stop(ledger: str | None, run_id: int | None, all_runs: bool) -> None:
    """Ask a running `batchgen run` to drain, from any terminal or machine sharing the ledger.

    It stops submitting, records what is in flight and exits (code 3); re-run to resume.
    Same effect as SIGTERM to its process."""
    if run_id is not None and all_runs:
        raise click.UsageError("--run and --all exclude each other")
    led = _open_ledger(ledger)
    try:
        running = [r["id"] for r in led.runs(1000) if r["status"] == "running"]
        targets = [run_id] if run_id is not None else running if all_runs else running[:1]
        targets = [t for t in targets if led.request_stop(t)]
        if not targets:
            _echo_err("error: no running run" + (f" {run_id}" if run_id else "") + " in this ledger")
            sys.exit(EXIT_USAGE)
    finally:
        led.close()
    _echo_err(f"stop requested for run(s) {', '.join(map(str, targets))}; they drain within a few seconds")


@cli.command()
@ledger_option
@click.option("--run", "run_id", type=int, required=True, help="The run whose unsubmitted jobs to cancel.")
def cancel(ledger: str | None, run_id: int) -> None:
    """Mark the run's jobs that were never submitted as cancelled: no run will submit them.

    The API has no cancel endpoint, so tasks already created cannot be stopped: they finish,
    are billed, and are still polled and downloaded by the next run. Use `batchgen stop` to
    halt a running process."""
    led = _open_ledger(ledger)
    try:
        n = led.cancel_queued(run_id)
    finally:
        led.close()
    _echo_err(f"run {run_id}: {n} unsubmitted job(s) cancelled")


# ---------------------------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """Ledger maintenance."""


@db.command("upgrade")
@ledger_option
def db_upgrade(ledger: str | None) -> None:
    """Apply the ledger's migrations (also done automatically on open)."""
    led = _open_ledger(ledger)
    led.close()
    _echo_err(f"ledger {led!r} is up to date")


# ---------------------------------------------------------------------------------- simulator
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8787, show_default=True, help="0 picks a free port.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Simulator knob, e.g. --set p429=0.1 --set render_min=0.5 (repeatable).")
def simulator(host: str, port: int, sets: tuple[str, ...]) -> None:
    """Run the foxapi simulator until interrupted. Prints its base URL on stdout.

    Ground truth (every create accepted, file hashes) is at GET /_sim/ground-truth; knobs
    can be changed at run time with POST /_sim/config."""
    from .signals import stop_on_signals
    from .simulator import SimConfig, Simulator

    cfg = SimConfig(**_parse_sets(sets))

    async def serve() -> None:
        sim = Simulator(cfg)
        url = await sim.start(host, port)
        click.echo(url)
        sys.stdout.flush()
        stop = asyncio.Event()
        with stop_on_signals(stop, quiet=True):
            await stop.wait()
        await sim.stop()

    _run(serve())


# ---------------------------------------------------------------------------------- demo
@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True)
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: manifests/example.yaml.")
def demo(out_dir: Path, manifest: Path | None) -> None:
    """Run the example manifest against the embedded simulator: real files, ledger, results CSV."""
    from .client import Secret
    from .progress import Display
    from .report import render as render_report
    from .scheduler import RunOptions
    from .simulator import SimConfig

    manifest = manifest or _example_manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = str(out_dir / "batchgen.db")
    logs.setup()
    opts = RunOptions(out_dir=out_dir / "videos", concurrency=8, rpm=600, poll_min=0.2)
    cfg = SimConfig(seed=7, render_min=2.0, render_max=6.0, p429=0.03, retry_after=0.5)
    _echo_err(f"demo: {manifest} → {out_dir}/ (simulated API, nothing is billed)")
    code = run_to_exit(manifest, ledger, opts, "", Secret("sk-demo"), cfg, False, False, Display(every=5.0))
    led = _open_ledger(ledger)
    try:
        with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
            n = write_csv(led.iter_export(), f)
        render_report(led.iter_export(), out_dir / "report.html", title="batchgen demo", run=led.run())
    finally:
        led.close()
    videos = sorted((out_dir / "videos").rglob("*.mp4"))
    _echo_err(f"demo: {len(videos)} video(s) in {out_dir / 'videos'}, {n} row(s) in {out_dir / 'results.csv'}, "
              f"report {out_dir / 'report.html'}, ledger {ledger}")
    sys.exit(code)


def _example_manifest() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        p = base / "manifests" / "example.yaml"
        if p.is_file():
            return p
    raise click.UsageError("manifests/example.yaml not found; pass --manifest")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except BatchgenError as e:  # pragma: no cover - commands handle their own
        _fail(e)


if __name__ == "__main__":  # pragma: no cover
    main()
