"""Command line: click only, over the library (``runner`` runs manifests, ``operations`` does
everything around runs). Data goes to stdout, progress and messages to stderr. Every
``BatchgenError`` a command raises ends here, in one handler (``_Cli.invoke``), as one line
(or the list of a manifest's problems) and its documented exit code. Nothing imports this
module."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__, logs, operations
from .errors import EXIT_ENVIRONMENT, EXIT_INTERRUPTED, BatchgenError, ManifestError, UsageError
from .jobs import RunStatus, plain, short_key

# The client (aiohttp), the simulator, the scheduler, rich and the report are imported by the
# commands that use them: `export`, `status` or `plan` need not pay for them at start-up.
if TYPE_CHECKING:
    from .cost import PriceTable
    from .progress import Snapshot
    from .runner import RunResult

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CODES_HELP = """
\b
Exit codes:
  0  every job of the manifest is done
  1  some jobs failed or are in doubt, or a delivered clip is not what was asked
     (see `batchgen export`, `batchgen resolve`, `batchgen verify`)
  2  bad input or usage: nothing was submitted, no ledger created. Every problem the
     run can see before its first create is named at once (API key, --api-base,
     ledger URL/driver, --out, clip paths inside --out, --report, --metrics-file,
     --notify, the destination), or no ledger where one was expected, a database that is not a batchgen ledger, or
     one to `batchgen db upgrade` first, or a file to write names a device, FIFO,
     folder, missing folder or leaves --out
  3  stopped before every job finished (signal or `batchgen stop`, retries exhausted,
     task timeout, --max-credits reached, output disk full): re-run to resume
  4  the balance is too low (HTTP 402): submission stopped, paid tasks collected
  5  another `batchgen run` holds this SQLite ledger (PostgreSQL: several may run)
  6  the API refused the key (HTTP 401)
  7  the ledger or a file cannot be used (read-only, permission, locked, corrupt,
     disk full)
  8  --deliver: the destination refused (credentials, missing bucket) before anything
     was submitted, or clips are rendered and kept locally but not all delivered
     (the next run of a manifest containing them, or `batchgen deliver`, delivers
     them without rendering them again)
130  interrupted at once: a second Ctrl-C/SIGTERM (answered creates are recorded
     first; one still on the wire is in doubt for the next run; no summary), or one
     while the command was still starting: re-run to resume
"""


_RECOVER_HINT = ("missing or changed files: `batchgen recover` fetches them again while their result URL is valid "
                 "(free), or renders them again with --rerender (paid)")


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


_JSON = False  # the command was given --json: its errors are JSON on stdout too


def _json_mode(_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    global _JSON
    _JSON = _JSON or value
    return value


def _json_error(message: str, exit_code: int, problems: list[str]) -> None:
    """With --json every outcome is JSON on stdout: a failure is one object (the exit code is unchanged)."""
    click.echo(json.dumps({"error": message, "exit_code": exit_code, "problems": problems}, ensure_ascii=False))


def _report_error(e: BatchgenError) -> None:
    if _JSON:
        problems = [str(p) for p in e.problems] if isinstance(e, ManifestError) else []
        msg = (f"{e.subject} has {len(e.problems) + e.truncated} problem(s)" if isinstance(e, ManifestError)
               else str(e))
        _json_error(msg, e.exit_code, problems)
    if logs.FORMAT == "json":  # --log-format json: every stderr line is a JSON object
        if isinstance(e, ManifestError):
            _echo_err(logs.json_line("error", f"{e.subject} has {len(e.problems) + e.truncated} problem(s)",
                                     event="error", exit_code=e.exit_code, problems=[str(p) for p in e.problems]))
        else:
            _echo_err(logs.json_line("error", str(e), event="error", exit_code=e.exit_code))
        return
    if isinstance(e, ManifestError):
        _echo_err(f"error: {e.subject} has {len(e.problems) + e.truncated} problem(s):")
        for line in str(e).splitlines():
            _echo_err(f"  {line}")
    else:
        _echo_err(f"error: {e}")


class _Cli(click.Group):
    """The one place where errors become exit codes: a ``BatchgenError`` prints its message and
    exits with its ``exit_code``; an ``OSError`` that escaped a command (a folder that cannot be
    created, a full disk) is an environment failure, printed as one line, never a traceback."""

    group_class = type  # `db` and its commands get the same handling

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        global _JSON
        _JSON = False
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            if _JSON:  # a usage error of a --json command: JSON too, click's own exit code
                _json_error(e.format_message(), e.exit_code, [])
            raise
        except BatchgenError as e:
            _report_error(e)
            ctx.exit(e.exit_code)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            _echo_err(f"error: {e.strerror or e}{where}")
            ctx.exit(EXIT_ENVIRONMENT)
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, see __main__) outside a run's own handling
            _echo_err("interrupted")
            ctx.exit(EXIT_INTERRUPTED)


_KEY_OPTIONS = ("--api-key", "--key", "--token", "--api_key", "--apikey")


class _Command(click.Command):
    """A command whose unknown ``--api-key`` is answered with where the key comes from, instead
    of click's "Did you mean '--api-base'?"."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        global _JSON
        # --json seen before parsing: a usage error of the same command line is JSON too
        _JSON = _JSON or ("--json" in args and any(p.name == "as_json" for p in self.params))
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            if e.option_name.split("=")[0].lower() in _KEY_OPTIONS:
                raise click.UsageError(
                    f"{e.option_name}: batchgen takes no key on the command line (other users and the shell history "
                    "would see it); set the environment variable BATCHGEN_API_KEY", ctx) from None
            raise


# ---------------------------------------------------------------------------------- shared options
def ledger_option(f: F) -> F:
    return click.option("--ledger", default=None, metavar="PATH|URL",
                        help="Ledger: a SQLite file path or a SQLAlchemy URL (env BATCHGEN_LEDGER; "
                             "default ./batchgen.db).")(f)


def read_ledger_options(f: F) -> F:
    """``--ledger`` and ``--simulate`` for every command but ``run`` (whose --simulate also starts the
    simulator): ``--simulate`` means the ledger ``run --simulate`` writes (./batchgen-sim.db) by
    default. The command receives one resolved ``ledger``; the URL is checked (postgres:// hint)
    and a missing ./batchgen.db beside an existing ./batchgen-sim.db is named, not taken as empty."""
    @functools.wraps(f)
    def wrapper(*args: Any, ledger: str | None = None, simulate: bool = False, **kwargs: Any) -> Any:
        return f(*args, ledger=_pick_ledger(ledger, simulate), **kwargs)

    opt = click.option("--simulate", is_flag=True,
                       help="Default to the ledger `run --simulate` writes (./batchgen-sim.db) instead of ./batchgen.db.")
    return ledger_option(opt(wrapper))  # type: ignore[return-value]


def _pick_ledger(ledger: str | None, simulate: bool) -> str | None:
    from .errors import LedgerMissing
    from .ledger import DEFAULT_LEDGER, DEFAULT_SIM_LEDGER, check_url, ledger_url

    if simulate and ledger is not None:
        raise UsageError("--simulate and --ledger both name a ledger: give one of them")
    if simulate:
        ledger = ledger_url(None, simulated=True)
    problem = check_url(ledger_url(ledger))
    if problem:
        raise UsageError(problem)
    if (ledger is None and not os.environ.get("BATCHGEN_LEDGER") and not Path(DEFAULT_LEDGER).exists()
            and Path(DEFAULT_SIM_LEDGER).is_file()):
        raise LedgerMissing(f"no ledger at ./{DEFAULT_LEDGER}, but ./{DEFAULT_SIM_LEDGER} (written by `run --simulate`) "
                            f"is here: add --simulate, or --ledger {DEFAULT_SIM_LEDGER}")
    return ledger


def prices_option(f: F) -> F:
    # Not click's exists/dir checks: batchgen's reader says what is wrong (FIFO, device, loop…).
    return click.option("--prices", type=click.Path(path_type=Path), default=None,
                        help="Price table overriding the shipped placeholder (YAML, see batchgen/prices.yaml).")(f)


def format_options(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_json_mode,
                        help="Machine-readable JSON on stdout (errors too).")(f)


def models_option(f: F) -> F:
    return click.option("--models", "models_file", type=click.Path(path_type=Path), default=None,
                        help="A models file (YAML, the shape of the shipped models.yaml; docs/models.md: Adding a model) adding or "
                             "replacing catalog entries; a manifest's `models:` key adds more.")(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="No confirmation line on stderr (errors still appear).")(f)


def _done(quiet: bool, msg: str) -> None:
    if not quiet:
        _echo_err(msg)


def _prices(path: Path | None) -> PriceTable:
    from .cost import PriceTable

    return PriceTable.load(path)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchgen")
@click.option("-v", "--verbose", is_flag=True,
              help="Debug logs on stderr, every per-job event included (what --log-file records).")
def cli(verbose: bool) -> None:
    """batchgen: run manifests of paid video generations (foxapi grok-imagine) crash-safely.

    Every state change is recorded in a ledger before and after each paid request, so an
    interrupted run resumes without paying twice. The API key is read from the environment
    variable BATCHGEN_API_KEY only. NO_COLOR (any value) turns every colour and style off."""
    logs.VERBOSE = verbose
    logs.setup()  # plain text on stderr unless a command asks for more (run --log-format json)


# ---------------------------------------------------------------------------------- plan
@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@read_ledger_options
@prices_option
@click.option("--explain", is_flag=True, help="One line per job: what a run would do with it, and why.")
@click.option("--diff", "show_diff", is_flag=True,
              help="Instead: what changed since the ledger last ran MANIFEST, with the credit delta (batchgen diff).")
@models_option
@format_options
def plan(manifest: Path, ledger: str | None, prices: Path | None, explain: bool, show_diff: bool,
         models_file: Path | None, as_json: bool) -> None:
    """Validate and expand MANIFEST without sending anything; compare with the ledger.

    Prints how many jobs are new, already done, in flight, failed or in doubt, the total
    seconds of video and the estimated credits per model and resolution (from the price
    table: placeholders unless you pass --prices). Exit code 2 when the manifest is invalid."""
    cat = operations.catalog(models_file)
    if show_diff:
        _print_diff(operations.diff(manifest, ledger=ledger, prices=_prices(prices), catalog=cat), manifest, as_json)
        return
    doc = operations.plan(manifest, ledger=ledger, prices=_prices(prices), explain=explain, catalog=cat)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for e in doc.get("explain", []):
        click.echo(f"{e['action']:<9} {e['output']} ({e['name']}, {e['key']}, {e['row']}): {e['reason']}")
    for w in doc["warnings"]:
        _echo_err(f"warning: {w}")
    unit = doc["credits_unit"]
    click.echo(f"{manifest}: {doc['jobs']} job(s)")
    click.echo("  " + "  ".join(f"{k.replace('_', ' ')}={v}" for k, v in doc["states"].items()))
    click.echo(f"  to submit: {doc['to_submit']}")
    for p in doc["video"]:
        est = "no price" if p["credits_estimated"] is None else f"~{plain(p['credits_estimated'])} {unit}"
        click.echo(f"  {p['model']:<34} {p['resolution']:>5}  {p['jobs']:>7} job(s)  {plain(p['seconds']):>9} s of video  {est}")
    click.echo(f"  estimated total: ~{plain(doc['credits_estimated_total'])} {unit} for all jobs ({doc['prices']})")


# ---------------------------------------------------------------------------------- diff
@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@read_ledger_options
@prices_option
@models_option
@format_options
def diff(manifest: Path, ledger: str | None, prices: Path | None, models_file: Path | None, as_json: bool) -> None:
    """What changed in MANIFEST since the ledger last ran it, and what tonight will cost.

    Jobs added, removed, changed (matched by output path, then name; naming the request
    fields that changed, e.g. `duration 6→8`) and unchanged (how many are done), with the
    estimated credits of the last expansion, of this one, the delta, and tonight's spend (the
    jobs a run would submit). Sends nothing. Same as `batchgen plan MANIFEST --diff`."""
    _print_diff(operations.diff(manifest, ledger=ledger, prices=_prices(prices),
                                catalog=operations.catalog(models_file)), manifest, as_json)


def _print_diff(doc: dict[str, Any], manifest: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for w in doc["warnings"]:
        _echo_err(f"warning: {w}")
    last = doc["last_run"]
    against = (f"run {last['id']} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(last['started_at']))}, "
               f"{last['status']})" if last else "an empty ledger (never run)")
    done = f" ({doc['unchanged_done']} done)" if doc["unchanged"] else ""
    click.echo(f"{manifest} against {against}: {len(doc['added'])} added, {len(doc['removed'])} removed, "
               f"{len(doc['changed'])} changed, {doc['unchanged']} unchanged{done}")
    c = doc["credits"]

    def cr(v: float | None) -> str:
        return "no price" if v is None else f"{plain(v)} {c['unit']}"

    for j in doc["added"]:
        click.echo(f"  + {j['output']}  ({j['name']}, {j['model']})  {cr(j['credits'])}")
    for j in doc["removed"]:
        click.echo(f"  - {j['output']}  ({j['name']}, was {j['state']})  {cr(j['credits'])}")
    for j in doc["changed"]:
        click.echo(f"  ~ {j['output']}  ({j['name']}): {', '.join(j['fields'])}  "
                   f"{cr(j['credits_before'])} → {cr(j['credits'])}")
    click.echo(f"credits (estimated): last {plain(c['last'])} → now {plain(c['now'])} ({plain(c['delta'], sign=True)} "
               f"{c['unit']}); tonight's spend ~{plain(c['tonight'])} {c['unit']} for the jobs a run would submit"
               + (f" ({c['unpriced_jobs']} without a price)" if c["unpriced_jobs"] else ""))


# ---------------------------------------------------------------------------------- models
@cli.command()
@click.argument("names", nargs=-1)
@models_option
@format_options
def models(names: tuple[str, ...], models_file: Path | None, as_json: bool) -> None:
    """The model catalog batchgen validates against: each model's fields (type, default,
    allowed values), rules, output length and audio. NAMES: only these models (a prefix such
    as `veo-3.1` matches the family).

    Entries come from the shipped models.yaml; --models FILE (or a manifest's `models:`) adds
    or replaces entries, so a model the provider changes is usable without a new release."""
    docs = operations.models(operations.catalog(models_file))
    if names:
        docs = [d for d in docs if any(d["model"] == n or d["model"].startswith(n) for n in names)]
        if not docs:
            raise UsageError(f"no model in the catalog matches {', '.join(names)} (`batchgen models` lists them)")
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    for d in docs:
        audio = {True: "audio", False: "no audio", None: "audio not documented"}.get(d["audio"], f"audio if {d['audio']}")
        out = {"duration": "output = duration", "input": "output follows the input"}.get(
            str(d["output_seconds"]), f"output {d['output_seconds']} s")
        click.echo(f"{d['model']}  ({out}; {audio}{'; open: unlisted fields pass with a warning' if d['open'] else ''})")
        for f in d["fields"]:
            bits = [f["type"] + (" required" if f["required"] else "")]
            if f["default"] is not None:
                bits.append(f"default {f['default']}")
            if f["allowed"] is not None:
                bits.append("one of " + ", ".join(map(str, f["allowed"])) if isinstance(f["allowed"], list)
                            else str(f["allowed"]))
            if f["auto"] is not None:
                bits.append(f"{f['auto']} = the model decides")
            if f["max_len"]:
                bits.append(f"≤ {f['max_len']} chars")
            click.echo(f"    {f['name']:<22} {'; '.join(bits)}")
        for r in d["rules"]:
            click.echo(f"    rule: {r}")
        for url in d["sources"] or ([d["doc"]] if d["doc"] else []):
            click.echo(f"    source: {url}")
        if d["read_on"]:
            click.echo(f"    read on: {d['read_on']}")


# ---------------------------------------------------------------------------------- run
def _parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """``--sim-set KEY=VALUE`` items as the simulator's typed knobs: every wrong one is named
    (knob, value, the type it takes) before anything starts."""
    import typing

    from .simulator import SimConfig

    types = typing.get_type_hints(SimConfig)
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or k not in types:
            problems.append(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(types))}")
            continue
        want = types[k]
        allowed = typing.get_args(want) or (want,)  # float | None → (float, NoneType)
        if v.lower() in ("none", "null") and type(None) in allowed:
            out[k] = None
            continue
        try:
            value = json.loads(v)
        except ValueError:
            value = v
        if str in allowed and not isinstance(value, str):
            value = v
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tuple(t for t in allowed if t is not type(None))) or \
                (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("none" if t is type(None) else t.__name__ for t in allowed)
            problems.append(f"{k}={v!r}: {k} takes {names}")
            continue
        out[k] = value
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="'--sim-set'")
    return out


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Directory for the videos (created if missing).")
@ledger_option
@click.option("--api-base", envvar="BATCHGEN_API_BASE", default=None,
              help="API base URL, http(s) with a host (env BATCHGEN_API_BASE; default https://api.foxapi.cc).")
@click.option("--concurrency", type=click.IntRange(1, 10000), default=8, show_default=True,
              help="Tasks rendering at the provider at once: a slot is held from the create until the result is "
                   "ready. Downloads, verification and delivery run in their own bounded pools and hold no slot.")
@click.option("--rpm", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="API requests per minute, creates, polls and uploads together (0 = unlimited).")
@click.option("--poll-min", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="Shortest pause between two polls of one task (seconds).")
@click.option("--task-timeout", type=click.FloatRange(min=1), default=7200.0, show_default=True,
              help="Stop polling a task after this many seconds (its id stays recorded).")
@click.option("--retry-failed", is_flag=True,
              help="Resubmit jobs whose task failed for a retryable reason (timeout, generation_failed, "
                   "model_unavailable…), up to --max-attempts creates per job. Each is a new paid task.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Creates per job at most, counting the first (with --retry-failed).")
@click.option("--max-credits", type=click.FloatRange(min=0), default=None,
              help="Stop submitting before this run's estimated credits (price table) would pass N.")
@prices_option
@click.option("--simulate", is_flag=True, help="Start the embedded simulator and run against it (no key needed).")
@click.option("--sim-set", multiple=True, metavar="KEY=VALUE", help="Simulator knob for --simulate (repeatable).")
@click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_json_mode,
              help="Print the run summary as JSON on stdout (a run that cannot start: the error as JSON).")
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
@click.option("--outage-window", type=click.FloatRange(min=1), default=180.0, show_default=True,
              help="Stop (exit 3, task ids kept) when requests keep getting no answer at all (connection refused, "
                   "DNS, TLS, timeouts) from the first to the latest for this many seconds; time the process "
                   "itself was paused or starved of CPU does not count.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Inspect every delivered clip (duration, size, aspect ratio, audio, decodable) against its request.")
@click.option("--on-mismatch", type=click.Choice(["keep", "fail"]), default="keep", show_default=True,
              help="A clip that is not what was asked: keep it and flag it, or fail the job (retryable: "
                   "--retry-failed renders it again, a new paid task).")
@click.option("--pictures/--no-pictures", default=True, show_default=True,
              help="A poster frame and a 3×3 contact sheet per clip, under OUT/.batchgen/ (used by the report).")
@click.option("--deliver", "deliver_to", metavar="s3://BUCKET/PREFIX/", default=None,
              help="Upload each finished (and verified) clip and its pictures there; overrides the manifest's "
                   "`deliver:`. Credentials and region the standard AWS way (environment, AWS_PROFILE).")
@click.option("--no-deliver", is_flag=True, help="Do not deliver this run, even if the manifest says `deliver:`.")
@click.option("--deliver-endpoint", metavar="URL", default=None,
              help="Endpoint of an S3-compatible store (MinIO, R2, B2, Ceph…); default AWS_ENDPOINT_URL_S3 or AWS.")
@click.option("--prune-local", is_flag=True,
              help="With --deliver: remove the local clip and its pictures once the store holds them.")
@click.option("--notify", "notify_urls", multiple=True, metavar="URL",
              help="apprise URL (slack://…, mailto://…, ntfy://…, json://host/path …) that gets one message "
                   "when the run ends (repeatable). A failed notification never fails the run.")
@click.option("--metrics-file", type=click.Path(path_type=Path), default=None,
              help="Prometheus text file (node_exporter textfile collector), rewritten atomically every "
                   "--progress-every seconds and at the end.")
@click.option("--report", "report_to", type=click.Path(path_type=Path), default=None,
              help="Write the HTML report there when the run ends (named in the notification).")
@models_option
def run(manifest: Path, out_dir: Path, ledger: str | None, api_base: str | None, concurrency: int, rpm: float,
        poll_min: float, task_timeout: float, retry_failed: bool, max_attempts: int, max_credits: float | None,
        prices: Path | None, simulate: bool, sim_set: tuple[str, ...], as_json: bool, quiet: bool,
        progress_every: float, log_format: str, log_file: Path | None, heartbeat: float,
        lease_timeout: float, outage_window: float, verify: bool, on_mismatch: str, pictures: bool,
        deliver_to: str | None, no_deliver: bool, deliver_endpoint: str | None, prune_local: bool, notify_urls: tuple[str, ...],
        metrics_file: Path | None, report_to: Path | None, models_file: Path | None) -> None:
    """Submit, poll and download every job of MANIFEST; resume whatever an earlier run left.

    Jobs that already have a task id are polled, never resubmitted; finished files are not
    downloaded again; a job whose create may or may not have reached the API (timeout, 5xx,
    crash mid-request) becomes `in_doubt` and waits for `batchgen resolve`. The first
    SIGINT/SIGTERM (or `batchgen stop`) stops submitting and records what is in flight (exit
    3); a second signal exits at once (exit 130). The API has no cancel: tasks already created
    run to the end and are collected by the next run.

    On a PostgreSQL ledger any number of `batchgen run` processes (one or many machines) may
    work on one manifest: each is a worker that leases jobs, they split --rpm between them, and
    a worker that dies has its tasks taken over by the others after --lease-timeout. A SQLite
    ledger allows one run at a time (exit 5 otherwise).

    With --deliver (or `deliver:` in the manifest) every finished clip also goes to an S3 or
    S3-compatible bucket, checked before the first create; re-runs deliver what is missing
    from the local files, never from the API again."""
    from . import signals
    from .client import api_key_from_env
    from .progress import Display
    from .runner import run as run_manifest
    from .scheduler import RunOptions
    from .simulator import SimConfig

    key = api_key_from_env()
    logs.setup(fmt=log_format, file=log_file, quiet=quiet, secrets=[key.reveal() if key else ""])
    if lease_timeout < 2 * heartbeat:
        raise click.BadParameter(f"must be at least twice --heartbeat ({heartbeat:g} s), or live workers "
                                 "would be taken for dead", param_hint="--lease-timeout")
    opts = RunOptions(out_dir=out_dir, concurrency=concurrency, rpm=rpm or None, poll_min=poll_min,
                      task_timeout=task_timeout, retry_failed=retry_failed, max_attempts=max_attempts,
                      max_credits=max_credits, prices=_prices(prices), heartbeat=heartbeat, lease=lease_timeout,
                      outage_window=outage_window, verify=verify, on_mismatch=on_mismatch, pictures=pictures,
                      prune_local=prune_local, metrics_file=metrics_file, metrics_every=progress_every)
    if no_deliver and (deliver_to or prune_local):
        raise click.BadParameter("--no-deliver contradicts --deliver/--prune-local", param_hint="--no-deliver")
    sim_cfg = SimConfig(**_parse_sets(sim_set)) if simulate else None
    display = Display(quiet=quiet, every=progress_every, emit=_json_progress if log_format == "json" else None)
    # Signals are the run's to handle until its summary is out (signals.py; __main__ for the
    # process's teardown); runner.run's own guard nests in this one.
    with signals.guard(quiet=quiet):
        result = run_manifest(manifest, ledger=ledger, api_base=api_base, api_key=key, simulate=sim_cfg,
                              options=opts, display=display, deliver=False if no_deliver else deliver_to,
                              deliver_endpoint=deliver_endpoint, notify_urls=notify_urls, report=report_to,
                              catalog=operations.catalog(models_file))
        _print_result(result, as_json)
        sys.exit(result.exit_code)


def _json_progress(snap: Snapshot) -> None:
    logs.log.info("progress", extra={"event": {"event": "progress", **snap.as_dict()}})


def _print_result(r: RunResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(r.as_dict(), indent=2))
        return
    if logs.FORMAT == "json":
        _echo_err(logs.json_line("info", f"run {r.run_id} finished", event="summary", **r.as_dict()))
        return
    counts = "  ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))
    _echo_err(f"run {r.run_id} finished in {r.elapsed:.1f}s: {counts}")
    _echo_err(f"  requests={r.requests} polls={r.polls} throttled(429)={r.throttled} ledger commits={r.commits} "
              f"credits reserved={plain(r.credits_reserved)} (estimated {plain(r.credits_estimated)})")
    for j in r.failed[:20]:
        _echo_err(f"  FAILED   {j['name']} ({short_key(j['key'])}): {j['error_code']}: {j['error_message']}")
    if len(r.failed) > 20:
        _echo_err(f"  … {len(r.failed) - 20} more failed (batchgen export)")
    if r.verified:
        _echo_err("  verified clips: " + "  ".join(f"{k}={v}" for k, v in sorted(r.verified.items())))
    for j in r.not_as_asked[:20]:
        _echo_err(f"  NOT AS ASKED {j['name']} ({short_key(j['key'])}): {j['verify']}: {j['verify_detail']} "
                  f"— {j['output_path']}")
    if any(j["verify"] in ("missing", "changed") for j in r.not_as_asked):
        _echo_err(f"  {_RECOVER_HINT}")
    for j in r.in_doubt:
        k = short_key(j["key"])
        _echo_err(f"  IN DOUBT {j['name']} ({k}): {j['error_code']} — "
                  f"batchgen resolve {k} --adopt TASK_ID | --resubmit | --abandon")
    if r.delivery:
        d = r.delivery
        _echo_err(f"  delivered to {d['destination']}: {d['delivered']} clip(s) ({d['delivered_now']} by this run), "
                  f"{d['undelivered']} not yet" + (f" — {d['error']}" if d.get("error") else ""))
    if r.reason:  # said once: "stopped by signal", not "stopped: stopped by signal"
        _echo_err(f"  {r.reason}" if r.reason.startswith("stopped") else f"  stopped: {r.reason}")


# ---------------------------------------------------------------------------------- export
@cli.command()
@read_ledger_options
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of stdout (atomically; a device, FIFO or folder is refused).")
@click.option("--run", "run_id", type=int, default=None, help="Only the jobs of this run.")
@click.option("--manifest", "manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only the jobs of this manifest (the ones it expanded to when last run; the file need not exist).")
@click.option("--json", "as_json", is_flag=True, is_eager=True, callback=_json_mode,
              help="JSON array instead of CSV (exact; params as an object; errors as JSON too).")
@click.option("--raw", is_flag=True,
              help="CSV cells exactly as recorded (no apostrophe before = + - @): for programs, and to feed "
                   "the file back as `rows:` with the same job keys. Not for opening in a spreadsheet.")
@quiet_option
def export(ledger: str | None, output: Path | None, run_id: int | None, manifest: Path | None, as_json: bool, raw: bool,
           quiet: bool) -> None:
    """Export one row per job as CSV (default) or JSON, in the order runs recorded them: by run,
    and in manifest order within a run (jobs a later run retried or added come after).

    By default, text cells that a spreadsheet would treat as a formula (= + - @ tab CR LF)
    are prefixed with an apostrophe (safe to open in Excel/LibreOffice/Sheets); --raw keeps
    them exact. The last column, manifest, is the manifest of the run that recorded the job last."""
    n = operations.export(ledger, output, run_id=run_id, fmt="json" if as_json else "csv", raw=raw, manifest=manifest)
    _done(quiet, f"exported {n} job(s)" + (f" to {output}" if output and str(output) != "-" else ""))


# ---------------------------------------------------------------------------------- resolve
@cli.command()
@click.argument("job")
@read_ledger_options
@click.option("--resubmit", "action", flag_value="resubmit", help="Queue it again: the next run creates a new (paid) task.")
@click.option("--abandon", "action", flag_value="abandon", help="Give it up: marked cancelled, never submitted again.")
@click.option("--adopt", "task_id", default=None, metavar="TASK_ID",
              help="The create did happen and this is its task id: poll and download it.")
@quiet_option
def resolve(job: str, ledger: str | None, action: str | None, task_id: str | None, quiet: bool) -> None:
    """Settle an in-doubt JOB (id, key or key prefix) — recorded in the event log.

    A job is in doubt when its create may have reached the API but no task id came back
    (timeout, reset, 5xx, crash mid-request). The API has no way to look the task up, so a
    human decides: adopt the task id (from the provider's console), resubmit (risking a
    second charge) or abandon."""
    chosen = [a for a in (action, "adopt" if task_id else None) if a]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --resubmit, --abandon, --adopt TASK_ID")
    done = operations.resolve(ledger, job, "adopt" if task_id else "resubmit" if action == "resubmit" else "abandon",
                              task_id=task_id)
    _done(quiet, f"job {done['name']} ({short_key(done['key'])}): {done['action']} recorded"
              + ("; run the manifest again to continue" if done["action"] != "abandon" else ""))


# ---------------------------------------------------------------------------------- status
@cli.command()
@read_ledger_options
@prices_option
@click.option("--expiring-within", "hours", type=click.FloatRange(min=0), default=6.0, show_default=True,
              help="List undownloaded results whose 24 h URL expires within this many hours.")
@click.option("--runs", "n_runs", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many of the newest runs to list.")
@format_options
def status(ledger: str | None, prices: Path | None, hours: float, n_runs: int, as_json: bool) -> None:
    """Runs in the ledger with per-state counts, the oldest unfinished jobs, in-doubt jobs with
    the credits at risk, results about to expire undownloaded, clips not as asked, and clips
    not yet delivered to object storage (run --deliver)."""
    doc = operations.status(ledger, prices=_prices(prices), expiring_within_h=hours, runs=n_runs)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from rich.table import Table

    from .progress import console

    con = console()  # without a terminal (cron), never cut to 80 columns
    t = Table(title="runs", title_justify="left")
    for col in ("run", "status", "started", "worker", "jobs", "counts", "manifest"):
        t.add_column(col)
    for r in doc["runs"]:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"]))
        st = r["status"] + (" (stop requested)" if r["stop_requested"] and r["status"] == RunStatus.RUNNING else "")
        worker = f"{r['host']}:{r['pid']}"
        if r["status"] == RunStatus.RUNNING and r["heartbeat_age_s"] is not None:
            worker += f" ♥ {r['heartbeat_age_s']:g}s ago, holds {r['held']}"
        t.add_row(str(r["id"]), st, started, worker, str(r["jobs"]),
                  " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items())), r["manifest"])
    con.print(t)
    if doc["verified"]:
        con.print("verified clips: " + "  ".join(f"{k}={v}" for k, v in sorted(doc["verified"].items())))
    for j in doc["not_as_asked"]:
        con.print(f"  not as asked: {j['name']} ({j['key']}): {j['verify']}: {j['detail']}")
    if doc["delivered"] or doc["undelivered"]:
        con.print(f"delivered to object storage: {doc['delivered']} clip(s), {doc['undelivered']} not yet"
                  + (" (`batchgen deliver`, or the next run of a manifest containing them, delivers them)"
                     if doc["undelivered"] else ""), markup=False)
    for j in doc["not_delivered"]:
        con.print(f"  not delivered: {j['name']} ({j['key']}) to {j['destination']}: {j['error']} — kept at "
                  f"{j['output_path']}", markup=False)
    for title, rows, extra in (("oldest unfinished jobs", doc["oldest_unfinished"], "age_s"),
                               (f"in doubt (credits at risk ≈ {plain(doc['credits_at_risk'])})", doc["in_doubt"], "credits_at_risk"),
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


# ---------------------------------------------------------------------------------- verify
@cli.command()
@read_ledger_options
@click.option("--run", "run_id", type=int, default=None, help="Only the clips of this run.")
@click.option("--pictures/--no-pictures", default=True, show_default=True,
              help="Redraw each clip's poster frame and contact sheet.")
@models_option
@format_options
def verify(ledger: str | None, run_id: int | None, pictures: bool, models_file: Path | None, as_json: bool) -> None:
    """Re-check every delivered clip against the ledger and its request.

    A file that is gone is `missing`; one whose size or sha256 differs from what was delivered
    is `changed`; the others are read again (duration, size, aspect ratio, resolution, audio,
    first and last frame) and recorded `ok`, `mismatch` (naming what differs) or
    `undecodable`. Clips removed by `run --prune-local` after delivery are counted apart.
    Exit code 1 when any clip is not ok."""
    doc = operations.verify(ledger, run_id=run_id, pictures=pictures, catalog=operations.catalog(models_file))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"{doc['checked']} clip(s): " + ("  ".join(f"{k}={v}" for k, v in sorted(doc["counts"].items()))
                                                    or "nothing delivered yet"))
        if doc["pruned"]:
            click.echo(f"  {doc['pruned']} clip(s) not checked: removed locally after delivery (--prune-local)")
        for j in doc["not_as_asked"]:
            click.echo(f"  {j['verify'].upper():<12} {j['name']} ({j['key']}): {j['detail']} — {j['output_path']}")
        if any(j["verify"] in ("missing", "changed") for j in doc["not_as_asked"]):
            click.echo(f"  {_RECOVER_HINT}")
    if doc["not_as_asked"]:
        sys.exit(1)


# ---------------------------------------------------------------------------------- deliver / recover
@cli.command()
@read_ledger_options
@click.option("--to", "to", metavar="s3://BUCKET/PREFIX/", default=None,
              help="Deliver there the done clips not delivered yet (of --manifest, or of the whole ledger), "
                   "instead of only those a manifest asked to deliver.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only the clips of this manifest (its jobs when it was last run).")
@click.option("--deliver-endpoint", metavar="URL", default=None,
              help="S3-compatible endpoint (env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).")
@click.option("--prune-local", is_flag=True, help="Remove each local clip (and its pictures) once the store holds it.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Verify clips that were never verified before delivering them.")
@models_option
@format_options
@quiet_option
def deliver(ledger: str | None, to: str | None, manifest: Path | None, deliver_endpoint: str | None,
            prune_local: bool, verify: bool, models_file: Path | None, as_json: bool, quiet: bool) -> None:
    """Deliver what the ledger owes, no manifest needed.

    Every done clip that a manifest asked to deliver (`deliver:` or `run --deliver`) and that
    its store does not hold yet — a store outage, a `--no-deliver` night, a manifest edited
    since, a kill between upload and record — is uploaded from its local file to where it is
    owed (an object already there with the same sha256 is recorded, not uploaded again).
    Nothing is rendered or fetched again. Clips whose local file is missing or changed are
    listed: `batchgen recover` gets them back. Exit code 8 when not every clip is delivered."""
    from .errors import EXIT_DELIVERY

    doc = operations.deliver(ledger, to=to, manifest=manifest, endpoint=deliver_endpoint, prune_local=prune_local,
                             verify=verify, catalog=operations.catalog(models_file),
                             log=(lambda m: None) if quiet or as_json else _echo_err)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        for dest, n in sorted(doc["delivered_now"].items()):
            click.echo(f"delivered {n} clip(s) to {dest}")
        for dest, n in sorted(doc["already_there"].items()):
            click.echo(f"{n} clip(s) already in {dest}: recorded, not uploaded again")
        for j in doc["failed"] + doc["skipped"]:
            click.echo(f"  not delivered: {j['name']} ({j['key']}): {j['error']}")
        click.echo(f"the ledger: {doc['delivered']} clip(s) delivered, {doc['undelivered']} not yet")
    if doc["undelivered"]:
        sys.exit(EXIT_DELIVERY)


@cli.command()
@read_ledger_options
@prices_option
@click.option("--rerender", is_flag=True,
              help="Also render again (new paid tasks, by the next run) the lost clips whose result URL expired.")
@click.option("--yes", is_flag=True, help="With --rerender: confirm the spending the command announced.")
@format_options
@quiet_option
def recover(ledger: str | None, prices: Path | None, rerender: bool, yes: bool, as_json: bool, quiet: bool) -> None:
    """Get back done clips whose local file was deleted or changed.

    A clip whose result URL is still valid (24 h after it was ready) is fetched again by the
    next `batchgen run` — free. One whose URL expired can only be rendered again, as a new
    paid task: `--rerender` says how many and the estimated credits, and queues them only
    with `--yes`. A clip delivered to object storage is still there (named, not re-rendered).
    Without options, sends back the free ones and lists the rest."""
    table = _prices(prices)
    found = operations.lost(ledger, prices=table)
    if rerender and found["rerender"] and not yes:
        n, cr = len(found["rerender"]), found["credits"]
        raise UsageError(f"{n} lost clip(s) can only be rendered again: {n} new paid task(s), ≈ {cr:,.2f} credits "
                         "(--prices). Re-run with --rerender --yes to queue them for the next run")
    doc = operations.recover(ledger, rerender=rerender, prices=table)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    sent = doc["sent_back"]
    if not (doc["refetch"] or doc["rerender"] or doc["in_store"]):
        _done(quiet, "no lost clip: every done clip is on disk as downloaded (or delivered and pruned)")
        return
    if sent["refetch"]:
        click.echo(f"{sent['refetch']} clip(s) will be fetched again by the next `batchgen run` (free: URL still valid)")
    for j in doc["in_store"]:
        click.echo(f"  {j['name']} ({j['key']}): lost locally, delivered at {j['delivered_url']}")
    if doc["rerender"]:
        verb = "queued to render again by the next run (paid)" if sent["rerender"] else \
            "can only be rendered again (paid): `batchgen recover --rerender`"
        click.echo(f"{len(doc['rerender'])} clip(s) whose result URL expired {verb}, ≈ {doc['credits']:,.2f} credits")
        for j in doc["rerender"][:20]:
            click.echo(f"  {j['name']} ({j['key']}): {j['verify'] or 'missing'} — {j['output_path']}")


# ---------------------------------------------------------------------------------- report
@cli.command()
@read_ledger_options
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"),
              show_default=True, help="The HTML file to write (keep it beside the videos' folder: links are relative; "
                                      "'-': stdout).")
@click.option("--run", "run_id", type=int, default=None, help="Only the jobs of this run.")
@click.option("--manifest", "manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only the jobs of this manifest (the ones it expanded to when last run; the file need not exist).")
@click.option("--title", default="batchgen report", show_default=True, help="Page title and heading.")
@click.option("--compare", metavar="FIELD", default=None,
              help="Open in the comparison view: one row per base job, one column per value of FIELD "
                   "(a matrix field such as aspect_ratio, or model, or take).")
@quiet_option
def report(ledger: str | None, output: Path, run_id: int | None, manifest: Path | None, title: str, compare: str | None,
           quiet: bool) -> None:
    """Write one self-contained HTML report: tiles, failures by code, timing and poll histograms,
    credits by model, and every job — filterable, a page at a time, each delivered clip with its
    poster frame, contact sheet, measurements and verification (paths relative to the report,
    so keep it next to the videos' folder when moving it). 100,000 jobs make a few MB. The
    header says what the page covers: its jobs, manifests and runs."""
    summary = operations.report(ledger, output, run_id=run_id, title=title, compare=compare, manifest=manifest)
    _done(quiet, f"report: {summary['jobs']} job(s) → {output}")


# ---------------------------------------------------------------------------------- stop / cancel
@cli.command()
@read_ledger_options
@click.option("--run", "run_id", type=int, default=None, help="Default: the latest running run.")
@click.option("--all", "all_runs", is_flag=True, help="Every running run (all workers of a PostgreSQL ledger).")
@quiet_option
def stop(ledger: str | None, run_id: int | None, all_runs: bool, quiet: bool) -> None:
    """Ask a running `batchgen run` to drain, from any terminal or machine sharing the ledger.

    It stops submitting, records what is in flight and exits (code 3); re-run to resume.
    Same effect as SIGTERM to its process."""
    targets = operations.stop(ledger, run_id=run_id, all_runs=all_runs)
    _done(quiet, f"stop requested for run(s) {', '.join(map(str, targets))}; they drain within a few seconds")


@cli.command()
@read_ledger_options
@click.option("--run", "run_id", type=int, required=True, help="The run whose unsubmitted jobs to cancel.")
@quiet_option
def cancel(ledger: str | None, run_id: int, quiet: bool) -> None:
    """Mark the run's jobs that were never submitted as cancelled: no run will submit them.

    The API has no cancel endpoint, so tasks already created cannot be stopped: they finish,
    are billed, and are still polled and downloaded by the next run. Use `batchgen stop` to
    halt a running process."""
    n = operations.cancel(ledger, run_id)
    _done(quiet, f"run {run_id}: {n} unsubmitted job(s) cancelled")


# ---------------------------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """Ledger maintenance."""


@db.command("upgrade")
@read_ledger_options
@quiet_option
def db_upgrade(ledger: str | None, quiet: bool) -> None:
    """Migrate an existing ledger written by an older batchgen (run, resolve, stop and cancel
    also do; the commands that only read never do, and say to run this). Never creates a
    SQLite ledger; on PostgreSQL it sets up batchgen's tables in an empty database."""
    name = operations.upgrade(ledger)
    _done(quiet, f"ledger {name} is up to date")


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
    from .runner import serve_simulator
    from .simulator import SimConfig

    def ready(url: str) -> None:
        click.echo(url)
        sys.stdout.flush()

    serve_simulator(SimConfig(**_parse_sets(sets)), host, port, on_ready=ready)


# ---------------------------------------------------------------------------------- demo
@cli.command()
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Directory for the demo's videos, ledger, results.csv and report.html.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: manifests/example.yaml.")
def demo(out_dir: Path, manifest: Path | None) -> None:
    """Run the example manifest against the embedded simulator: real files, ledger, results CSV."""
    from .runner import demo as run_demo

    logs.setup()
    manifest = manifest or _example_manifest()
    _echo_err(f"demo: {manifest} → {out_dir}/ (simulated API, nothing is billed)")
    result, paths = run_demo(manifest, out_dir)
    _print_result(result, False)
    _echo_err(f"demo: {paths['videos']} video(s) in {out_dir / 'videos'}, {paths['rows']} row(s) in "
              f"{paths['csv']}, report {paths['report']}, ledger {paths['ledger']}")
    sys.exit(result.exit_code)


def _example_manifest() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        p = base / "manifests" / "example.yaml"
        if p.is_file():
            return p
    raise UsageError("manifests/example.yaml not found; pass --manifest")


def main() -> None:
    cli(standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main()
