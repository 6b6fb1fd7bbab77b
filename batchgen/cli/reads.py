"""The commands that read a ledger (and a manifest) and change nothing: ``plan``, ``diff``,
``status``, ``export``, ``report``, ``verify``. Each calls one ``operations`` function and
hands its result to a printer; ``verify`` records what it found (its exit code 1 says a clip is
not as asked). The library loads inside each command, so ``batchgen --help`` does not pay for it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from .handler import Command, echo_err, json_mode
from .options import (
    RpmType, done, format_options, load_prices, models_option, prices_option, quiet_option, read_ledger_options,
    retry_options,
)
from .printers import print_diff, print_json, print_plan, print_status, print_verify


def _start_time(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--start HH:MM`` → the next such time (today, or tomorrow if it has passed), epoch seconds."""
    import datetime as dt

    if value is None:
        return None
    try:
        at = dt.datetime.strptime(value.strip(), "%H:%M").time()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HH:MM (for example 01:30)", ctx=ctx, param=param) from None
    now = dt.datetime.now()
    when = dt.datetime.combine(now.date(), at)
    return (when if when >= now else when + dt.timedelta(days=1)).timestamp()


@click.command(cls=Command)
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@read_ledger_options
@prices_option
@click.option("--explain", is_flag=True, help="One line per job: what a run would do with it, and why (not with --diff).")
@click.option("--diff", "show_diff", is_flag=True,
              help="Instead: what changed since the ledger last ran MANIFEST, with the credit delta (batchgen diff).")
@click.option("--concurrency", type=click.IntRange(1, 10000), default=8, show_default=True,
              help="The forecast's render slots (as `run --concurrency`).")
@click.option("--rpm", type=RpmType(), default="auto", show_default=True,
              help="The forecast's request budget, as `run --rpm` (0 = unlimited). 'auto', run's default: the "
                   "budget run learns from the API's answers is not counted (it starts at 60 a minute and grows "
                   "while nothing is refused), and the forecast says so; give N to count one.")
@click.option("--start", metavar="HH:MM", default=None, callback=_start_time,
              help="When the night starts, for the forecast's end time (default: now).")
@retry_options
@models_option
@format_options
def plan(manifest: Path, ledger: str | None, prices: Path | None, explain: bool, show_diff: bool,
         concurrency: int, rpm: float | str, start: float | None, retry_failed: bool, max_attempts: int,
         models_file: Path | None, as_json: bool) -> None:
    """Validate and expand MANIFEST without sending anything; compare with the ledger.

    Prints how many jobs are new, already done, in flight, failed or in doubt, the total
    seconds of video and the estimated credits per model and resolution (from the price
    table: placeholders unless you pass --prices). With --retry-failed (and --max-attempts) the
    failed jobs `run --retry-failed` would resubmit are in "to submit", its credits and the
    forecast, by the rule that run follows; those it would leave failed are counted, with why.
    Exit code 2 when the manifest is invalid."""
    from .. import operations

    if show_diff and explain:  # said before anything is read, not silently ignored
        raise UsageError("--explain lists what a run would do with each job; it does not go with --diff")
    if show_diff and retry_failed:
        raise UsageError("--retry-failed counts the retry night in plan's forecast; it does not go with --diff")
    cat = operations.catalog(models_file)
    if show_diff:
        print_diff(operations.diff(manifest, ledger=ledger, prices=load_prices(prices), catalog=cat), manifest, as_json)
        return
    doc = operations.plan(manifest, ledger=ledger, prices=load_prices(prices), explain=explain, catalog=cat,
                          concurrency=concurrency, rpm="auto" if rpm == "auto" else float(rpm) or None, start=start,
                          retry_failed=retry_failed, max_attempts=max_attempts)
    if as_json:
        print_json(doc)
        return
    print_plan(doc, manifest)


@click.command(cls=Command)
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
    from .. import operations

    print_diff(operations.diff(manifest, ledger=ledger, prices=load_prices(prices),
                               catalog=operations.catalog(models_file)), manifest, as_json)


@click.command(cls=Command)
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
    from .. import operations

    # --prices is read (and refused if wrong) even with nothing at risk; the shipped table only when needed
    doc = operations.status(ledger, prices=None if prices is None else load_prices(prices), expiring_within_h=hours,
                            runs=n_runs)
    if as_json:
        print_json(doc)
        return
    print_status(doc, hours)


@click.command(cls=Command)
@read_ledger_options
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of stdout (atomically; a device, FIFO or folder is refused).")
@click.option("--run", "run_id", type=int, default=None, help="Only the jobs of this run.")
@click.option("--manifest", "manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only the jobs of this manifest (the ones it expanded to when last run; the file need not exist).")
@click.option("--json", "as_json", is_flag=True, is_eager=True, callback=json_mode,
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
    them exact. The column manifest is the manifest of the run that recorded the job last; after
    it, review, review_note, reviewer and pick are the latest review decision (batchgen review)."""
    from .. import operations

    n = operations.export(ledger, output, run_id=run_id, fmt="json" if as_json else "csv", raw=raw, manifest=manifest)
    done(quiet, f"exported {n} job(s)" + (f" to {output}" if output and str(output) != "-" else ""))


@click.command(cls=Command)
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
    from .. import operations

    summary = operations.report(ledger, output, run_id=run_id, title=title, compare=compare, manifest=manifest)
    done(quiet, f"report: {summary['jobs']} job(s) → {output}")


@click.command(cls=Command)
@read_ledger_options
@click.option("--run", "run_id", type=int, default=None, help="Only the clips of this run.")
@click.option("--pictures/--no-pictures", default=True, show_default=True,
              help="Redraw each clip's poster frame and contact sheet.")
@click.option("--sheets-only", is_flag=True,
              help="Check nothing: only draw the contact sheets a run left (its end does not wait for them), "
                   "with progress on stderr; Ctrl-C keeps those drawn and leaves no partial file.")
@models_option
@format_options
def verify(ledger: str | None, run_id: int | None, pictures: bool, sheets_only: bool, models_file: Path | None,
           as_json: bool) -> None:
    """Re-check every delivered clip against the ledger and its request.

    A file that is gone is `missing`; one whose size or sha256 differs from what was delivered
    is `changed`; the others are read again (duration, size, aspect ratio, resolution, audio,
    first and last frame) and recorded `ok`, `mismatch` (naming what differs) or
    `undecodable`. Clips removed by `run --prune-local` after delivery are counted apart.
    Exit code 1 when any clip is not ok. With --sheets-only, no clip is checked: the contact
    sheets a run left are drawn (~0.25 s of CPU each for 6 s of 720p) and recorded, so that the
    report and the review page show them."""
    from .. import operations

    if sheets_only:
        if not pictures:
            raise UsageError("--sheets-only draws pictures: it cannot go with --no-pictures")
        live = sys.stderr.isatty()

        def progress(n: int, of: int) -> None:  # one line redrawn on a terminal, a tenth at a time in a log
            if live:
                click.echo(f"\rcontact sheets: {n} of {of}", err=True, nl=n == of)
            elif n == of or n % max(1, of // 10) == 0:
                echo_err(f"contact sheets: {n} of {of}")

        doc = operations.draw_sheets(ledger, run_id=run_id, progress=progress)
        if as_json:
            print_json(doc)
        else:
            click.echo(f"contact sheets: {doc['drawn']} drawn of {doc['left']} left"
                       + (f"; {doc['failed']} could not be (the clip's file gone or changed: `batchgen verify`)"
                          if doc["failed"] else ""))
        return
    doc = operations.verify(ledger, run_id=run_id, pictures=pictures, catalog=operations.catalog(models_file))
    if as_json:
        print_json(doc)
    else:
        print_verify(doc)
    if doc["not_as_asked"]:
        sys.exit(1)
