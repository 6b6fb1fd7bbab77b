"""``batchgen run``: the one command that pays. Its options become ``RunOptions`` and the
runner does the rest (``runner.run``: every check that can run before the first create, then the
scheduler); the command only sets up logging, holds the signals until the summary is out and
prints it. Its epilog is the table of exit codes (docs/cli.md shows it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import logs
from .handler import Command, json_mode
from .options import RpmType, ledger_option, load_prices, models_option, prices_option, retry_options
from .printers import print_result
from .sim import parse_sets

if TYPE_CHECKING:
    from ..progress import Snapshot

EXIT_CODES_HELP = """
\b
Exit codes:
  0  every job of the manifest is done
  1  some jobs failed or are in doubt, or a delivered clip is not what was asked
     or could not be verified
     (see `batchgen export`, `batchgen resolve`, `batchgen verify`)
  2  bad input or usage: nothing was submitted, no ledger created. Every problem the
     run can see before its first create is named at once (API key, --api-base,
     ledger URL/driver, --out, clip paths inside --out, --report, --metrics-file,
     --notify, the destination), or no ledger where one was expected, a database that is not a batchgen ledger, or
     one to `batchgen db upgrade` first, or a file to write names a device, FIFO,
     folder, missing folder or leaves --out
  3  stopped before every job finished (signal or `batchgen stop`, retries exhausted,
     task timeout, --max-credits reached, output disk full), or --finish-by left
     jobs queued that could not finish in time: re-run to resume
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
141  the reader of stdout went away (`batchgen export | head`): the rest of
     the output was not written, as any Unix filter whose pipe closes (128 + SIGPIPE)
"""


def _limits(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    """``--limit MODEL=N`` options → model → N (limits.parse_option names what is wrong)."""
    from ..limits import parse_option

    out: dict[str, int] = {}
    for v in values:
        try:
            model, n = parse_option(v)
        except ValueError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
        out[model] = n
    return out


class FinishByType(click.ParamType["float"]):
    """``--finish-by``: a time of day (the next one, local time) or an ISO date-time → epoch seconds."""

    name = "HH:MM|DATETIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from ..deadline import parse

        if isinstance(value, float):
            return value
        try:
            return parse(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command(cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Directory for the videos (created if missing).")
@ledger_option
@click.option("--api-base", envvar="BATCHGEN_API_BASE", default=None,
              help="API base URL, http(s) with a host (env BATCHGEN_API_BASE; default https://api.foxapi.cc).")
@click.option("--concurrency", type=click.IntRange(1, 10000), default=8, show_default=True,
              help="Tasks rendering at the provider at once: a slot is held from the create until the result is "
                   "ready. Downloads, verification and delivery run in their own bounded pools and hold no slot.")
@click.option("--rpm", type=RpmType(), default="auto", show_default=True,
              help="API requests per minute for the API key, creates, polls and uploads together (0 = unlimited), "
                   "or 'auto': learn the API's limit from its answers (start at 60, grow while requests wait and "
                   "nothing is refused, cut on 429; RateLimit headers are believed when sent). Give N when you "
                   "know the limit.")
@click.option("--poll-min", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
              help="Shortest pause between two polls of one task (seconds).")
@click.option("--task-timeout", type=click.FloatRange(min=1), default=7200.0, show_default=True,
              help="Stop polling a task after this many seconds (its id stays recorded).")
@retry_options
@click.option("--render-retries", type=click.IntRange(0, 10), default=0, show_default=True,
              help="Render a job again tonight when the provider failed its task for a retryable reason "
                   "(generation_failed, service_error, generation_timeout, resource_exhausted…), up to N times. "
                   "Each is a new paid task, within --max-credits. Permanent failures (content policy, invalid "
                   "parameters, input images) and creates in doubt are never retried.")
@click.option("--breaker/--no-breaker", default=True, show_default=True,
              help="A breaker per model: when 5 of its tasks fail in a row, or half of its last 20, no new task "
                   "of that model for --breaker-cooloff, then one probe (the other models go on).")
@click.option("--breaker-cooloff", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Seconds an open breaker waits before its probe task; after 3 failed probes the model's jobs "
                   "stay queued for the next run (exit 1).")
@click.option("--max-credits", type=click.FloatRange(min=0), default=None,
              help="Stop submitting before this run's estimated credits (price table) would pass N; on PostgreSQL "
                   "the fleet's (every worker of the manifest together).")
@click.option("--finish-by", type=FinishByType(), default=None,
              help="Start no job that cannot be rendered, downloaded and verified by then, by the forecast from "
                   "the ledger's history of its model (9 clips in 10 within; a guess for a model never rendered). "
                   "07:00 is the next 07:00 of this machine's local time (after a 23:00 start: tomorrow morning); "
                   "or an ISO date-time (2026-12-07T07:00, local unless it names its offset). Jobs it holds back "
                   "stay queued for the next run and are named in the summary (exit 3); tasks in flight are "
                   "always collected. On PostgreSQL the earliest deadline of the fleet holds for every worker. "
                   "Overrides the manifest's `finish_by:`.")
@click.option("--limit", "limit_opts", multiple=True, metavar="MODEL=N", callback=_limits,
              help="At most N tasks of MODEL in flight at once (repeatable; overrides the manifest's `limits:`). "
                   "Free slots go to the models under their limit; on PostgreSQL the limit holds for the fleet.")
@prices_option
@click.option("--simulate", is_flag=True, help="Start the embedded simulator and run against it (no key needed).")
@click.option("--sim-set", multiple=True, metavar="KEY=VALUE", help="Simulator knob for --simulate (repeatable).")
@click.option("--json", "as_json", is_flag=True, is_eager=True, callback=json_mode,
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
              help="A poster frame and a 3×3 contact sheet per clip, under OUT/.batchgen/ (used by the report). "
                   "Sheets are drawn after the clips' checks; the run's end waits for them only when they "
                   "would all be drawn within 10 s, and `batchgen verify --sheets-only` (or the next run) draws any left.")
@click.option("--deliver", "deliver_to", metavar="s3://BUCKET/PREFIX/", default=None,
              help="Upload each finished (and verified) clip and its pictures there; overrides the manifest's "
                   "`deliver:`. Credentials and region the standard AWS way (environment, AWS_PROFILE).")
@click.option("--no-deliver", is_flag=True, help="Do not deliver this run, even if the manifest says `deliver:`.")
@click.option("--deliver-endpoint", metavar="URL", default=None,
              help="Endpoint of an S3-compatible store (MinIO, R2, B2, Ceph…); default AWS_ENDPOINT_URL_S3 or AWS.")
@click.option("--prune-local", is_flag=True,
              help="With --deliver: remove the local clip and its pictures once the store holds them.")
@click.option("--deliver-only", "deliver_only", type=click.Choice(["approved"]), default=None,
              help="Deliver only the clips a reviewer approved (`batchgen review`), and a shot's pick where it "
                   "has one: none the night they render; `batchgen deliver` delivers them once approved.")
@click.option("--notify", "notify_urls", multiple=True, metavar="URL",
              help="apprise URL (slack://…, mailto://…, ntfy://…, json://host/path …) that gets one message "
                   "when the run ends (repeatable). A failed notification never fails the run.")
@click.option("--metrics-file", type=click.Path(path_type=Path), default=None,
              help="Prometheus text file (node_exporter textfile collector), rewritten atomically every "
                   "--progress-every seconds and at the end.")
@click.option("--report", "report_to", type=click.Path(path_type=Path), default=None,
              help="Write the HTML report there when the run ends (named in the notification).")
@models_option
def run(manifest: Path, out_dir: Path, ledger: str | None, api_base: str | None, concurrency: int, rpm: float | str,
        poll_min: float, task_timeout: float, retry_failed: bool, max_attempts: int, max_credits: float | None,
        render_retries: int, breaker: bool, breaker_cooloff: float, finish_by: float | None,
        limit_opts: dict[str, int], prices: Path | None,
        simulate: bool, sim_set: tuple[str, ...],
        as_json: bool, quiet: bool,
        progress_every: float, log_format: str, log_file: Path | None, heartbeat: float,
        lease_timeout: float, outage_window: float, verify: bool, on_mismatch: str, pictures: bool,
        deliver_to: str | None, no_deliver: bool, deliver_endpoint: str | None, prune_local: bool,
        deliver_only: str | None, notify_urls: tuple[str, ...],
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
    from .. import operations, signals
    from ..client import api_key_from_env
    from ..progress import Display
    from ..runner import run as run_manifest
    from ..scheduler import RunOptions
    from ..simulator import SimConfig

    key = api_key_from_env()
    logs.setup(fmt=log_format, file=log_file, quiet=quiet, secrets=[key.reveal() if key else ""])
    if lease_timeout < 2 * heartbeat:
        raise click.BadParameter(f"must be at least twice --heartbeat ({heartbeat:g} s), or live workers "
                                 "would be taken for dead", param_hint="--lease-timeout")
    opts = RunOptions(out_dir=out_dir, concurrency=concurrency, rpm=None if rpm == "auto" else (float(rpm) or None),
                      rpm_auto=rpm == "auto", poll_min=poll_min,
                      task_timeout=task_timeout, retry_failed=retry_failed, max_attempts=max_attempts,
                      max_credits=max_credits, render_retries=render_retries, limits=limit_opts,
                      breaker=breaker, breaker_cooloff=breaker_cooloff, prices=load_prices(prices), heartbeat=heartbeat,
                      lease=lease_timeout,
                      outage_window=outage_window, verify=verify, on_mismatch=on_mismatch, pictures=pictures,
                      prune_local=prune_local, metrics_file=metrics_file, metrics_every=progress_every,
                      deliver_only=deliver_only, finish_by=finish_by)
    if no_deliver and (deliver_to or prune_local):
        raise click.BadParameter("--no-deliver contradicts --deliver/--prune-local", param_hint="--no-deliver")
    sim_cfg = SimConfig(**parse_sets(sim_set)) if simulate else None
    display = Display(quiet=quiet, every=progress_every, emit=_json_progress if log_format == "json" else None)
    # Signals are the run's to handle until its summary is out (signals.py; __main__ for the
    # process's teardown); runner.run's own guard nests in this one.
    with signals.guard(quiet=quiet):
        result = run_manifest(manifest, ledger=ledger, api_base=api_base, api_key=key, simulate=sim_cfg,
                              options=opts, display=display, deliver=False if no_deliver else deliver_to,
                              deliver_endpoint=deliver_endpoint, notify_urls=notify_urls, report=report_to,
                              catalog=operations.catalog(models_file))
        print_result(result, as_json)
        sys.exit(result.exit_code)


def _json_progress(snap: Snapshot) -> None:
    logs.log.info("progress", extra={"event": {"event": "progress", **snap.as_dict()}})
