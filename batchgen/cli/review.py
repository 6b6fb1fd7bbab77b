"""``batchgen review``: the morning's decisions — in the browser (the dailies page), or from a
script (``--set VERDICT JOB…``, ``--from decisions.csv``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import RetakeError, UsageError
from .handler import Command, echo_err
from .options import done, format_options, load_prices, models_option, prices_option, quiet_option, read_ledger_options
from .printers import print_json

_VERDICTS = ("approve", "retake", "reject", "pending", "pick")


@click.command(cls=Command)
@read_ledger_options
@click.argument("jobs", nargs=-1)
@click.option("--set", "set_to", type=click.Choice(_VERDICTS), default=None,
              help="Decide without a browser: give JOB… (ids, keys, key prefixes or task ids) this verdict "
                   "(pending: no decision; pick: this take is its shot's pick, approved).")
@click.option("--note", default=None, help="With --set: the note recorded with the decision.")
@click.option("--from", "from_csv", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Decide from a CSV with the columns `batchgen export` writes (job_key, review, review_note, "
                   "pick, reviewer); a blank cell changes nothing.")
@click.option("--reviewer", default=None, help="Who decides (default: the OS user).")
@click.option("--run", "run_id", type=int, default=None, help="Review this run's clips (default: the latest run).")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Review the clips of this manifest (the jobs it expanded to when last run).")
@click.option("--by", "by", default=None, metavar="FIELD",
              help="Group takes into shots without this matrix field too (e.g. model: one shot on every model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The output folder clips are served from (default: the run's --out). Nothing outside it is served.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but 127.0.0.1 shares the page on the network: the URL "
                   "printed (once) carries the token every request needs.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option("--deliver-endpoint", default=None, metavar="URL",
              help="S3-compatible endpoint for clips played from the store (default: AWS_ENDPOINT_URL_S3).")
@quiet_option
def review(ledger: str | None, jobs: tuple[str, ...], set_to: str | None, note: str | None, from_csv: Path | None,
           reviewer: str | None, run_id: int | None, manifest: Path | None, by: str | None, out_dir: Path | None,
           host: str, port: int, deliver_endpoint: str | None, quiet: bool) -> None:
    """Review last night's clips: approve, retake or reject them, note them, pick a shot's take.

    Without --set or --from, serves the dailies page on 127.0.0.1 and prints its URL: shots with
    their takes side by side, "waiting for review from the last run" first, keyboard first (press
    ? on the page). Decisions go to the ledger at once, while a run may still be writing to it;
    `batchgen retake` renders the retakes, `--deliver-only approved` delivers the approved.
    Ctrl-C stops the server."""
    from .. import review as decide

    if set_to is not None or from_csv is not None:
        if set_to is not None and from_csv is not None:
            raise UsageError("--set and --from both decide: give one of them")
        if from_csv is not None:
            if jobs:
                raise UsageError("--from reads the jobs from the file: give no JOB arguments with it")
            s = decide.from_csv(ledger, from_csv, reviewer=reviewer)
        else:
            if not jobs:
                raise UsageError("--set needs the JOB… to decide (ids, keys, key prefixes or task ids)")
            if set_to == "pick":
                if len(jobs) != 1 or note is not None:
                    raise UsageError("--set pick takes one JOB (a shot has one pick) and no --note")
                s = decide.pick(ledger, jobs[0], reviewer=reviewer)
            else:
                from ..ledger import KEEP

                s = decide.set_verdict(ledger, list(jobs), decide.parse_verdict(str(set_to)), reviewer=reviewer,
                                       note=KEEP if note is None else note)
        done(quiet, f"recorded {s.decided} decision(s)" + (f"; {s.unchanged} already so" if s.unchanged else ""))
        return
    if jobs or note is not None:
        raise UsageError("JOB… and --note go with --set")
    from ..review.serve import serve_review

    serve_review(ledger, run_id=run_id, manifest=manifest, by=by, out_dir=out_dir, host=host, port=port,
                 reviewer=reviewer, endpoint_url=deliver_endpoint, announce=echo_err)


@click.command(cls=Command)
@read_ledger_options
@click.option("--run", "run_id", type=int, default=None, help="Only the clips of this run.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only the clips of this manifest (the jobs it expanded to when last run).")
@prices_option
@models_option
@click.option("--yes", is_flag=True, help="Confirm the spending the command announced: queue the retakes.")
@format_options
@quiet_option
def retake(ledger: str | None, run_id: int | None, manifest: Path | None, prices: Path | None,
           models_file: Path | None, yes: bool, as_json: bool, quiet: bool) -> None:
    """Queue a new take of every clip a reviewer marked retake (paid: asks first).

    Each gets the next free take of its request — or of the request with the fields the reviewer
    changed in `batchgen review`, checked like a manifest row — a new job key and output name,
    recorded as a retake of the clip it replaces. Without --yes, says how many and the estimated
    credits and queues nothing; with --yes, queues them: the next `batchgen run` of their
    manifest renders exactly them."""
    from .. import operations
    from ..ledger import Ledger
    from ..review import retake as retakes

    led = Ledger(ledger, create=False)
    try:
        path = None if manifest is None else str(manifest.resolve())
        found = retakes.plan(led, run_id=run_id, manifest=path, prices=load_prices(prices),
                             catalog=operations.catalog(models_file))
        doc = found.as_dict()
        if found.problems:
            raise RetakeError(found.problems)  # every changed field the catalog refuses, named
        if not found.retakes:
            if as_json:
                print_json({**doc, "queued": 0})
            else:
                done(quiet, "no clip is waiting for a retake (mark them with `batchgen review`)")
            return
        if not as_json:
            for r in found.retakes:
                click.echo(f"{r.original['name']}: take {r.original['take'] or 1} → take {r.job.take} "
                           f"({r.job.output}), ≈ {r.credits if r.credits is not None else '?'} credits")
                for f, was, now in r.diff:
                    click.echo(f"    {f}: {json.dumps(was, ensure_ascii=False)} → {json.dumps(now, ensure_ascii=False)}")
        if not yes:
            if as_json:
                print_json({**doc, "queued": 0})
            raise UsageError(f"{len(found.retakes)} retake(s): {len(found.retakes)} new paid task(s), "
                             f"≈ {found.credits:,.2f} credits (--prices). Re-run with --yes to queue them for the next run")
        n = retakes.queue(led, found)
    finally:
        led.close()
    if as_json:
        print_json({**doc, "queued": n})
    done(quiet, f"queued {n} retake(s), ≈ {found.credits:,.2f} credits: the next `batchgen run` of their manifest "
                "renders them")
