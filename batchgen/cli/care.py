"""Ledger care: the commands that settle or repair what a ledger records, without a run —
``resolve`` (an in-doubt job), ``recover`` (lost clips), ``deliver`` (what a store is owed),
``stop`` and ``cancel`` (runs), and ``db upgrade``. Each is one ``operations`` call and a
printer; the library loads inside the command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from ..jobs import short_key
from .handler import Command, Group, echo_err
from .options import done, format_options, load_prices, models_option, prices_option, quiet_option, read_ledger_options
from .printers import print_deliver, print_json, print_recover


@click.command(cls=Command)
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
    from .. import operations

    chosen = [a for a in (action, "adopt" if task_id else None) if a]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --resubmit, --abandon, --adopt TASK_ID")
    result = operations.resolve(ledger, job, "adopt" if task_id else "resubmit" if action == "resubmit" else "abandon",
                                task_id=task_id)
    done(quiet, f"job {result['name']} ({short_key(result['key'])}): {result['action']} recorded"
         + ("; run the manifest again to continue" if result["action"] != "abandon" else ""))


@click.command(cls=Command)
@read_ledger_options
@click.option("--to", "to", metavar="s3://BUCKET/PREFIX/", default=None,
              help="Deliver there the done clips not delivered yet (of --manifest, or of the whole ledger), "
                   "instead of only those a manifest asked to deliver.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Only the clips of this manifest (its jobs when it was last run).")
@click.option("--deliver-endpoint", metavar="URL", default=None,
              help="S3-compatible endpoint (env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).")
@click.option("--prune-local", is_flag=True, help="Remove each local clip (and its pictures) once the store holds it.")
@click.option("--deliver-only", "deliver_only", type=click.Choice(["approved"]), default=None,
              help="With --to: owe there only the clips a reviewer approved (and a shot's pick where it has one).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Verify clips that were never verified before delivering them.")
@models_option
@format_options
@quiet_option
def deliver(ledger: str | None, to: str | None, manifest: Path | None, deliver_endpoint: str | None,
            prune_local: bool, deliver_only: str | None, verify: bool, models_file: Path | None, as_json: bool,
            quiet: bool) -> None:
    """Deliver what the ledger owes, no manifest needed.

    Every done clip that a manifest asked to deliver (`deliver:` or `run --deliver`) and that
    its store does not hold yet — a store outage, a `--no-deliver` night, a manifest edited
    since, a kill between upload and record — is uploaded from its local file to where it is
    owed (an object already there with the same sha256 is recorded, not uploaded again).
    Nothing is rendered or fetched again. Clips whose local file is missing or changed are
    listed: `batchgen recover` gets them back. Clips owed under `--deliver-only approved` are
    delivered once a reviewer approved them; a delivered clip marked retake or reject since is
    kept in the store and listed. Exit code 8 when not every clip owed is delivered."""
    from .. import operations
    from ..errors import EXIT_DELIVERY

    if deliver_only and to is None:
        raise UsageError("--deliver-only goes with --to (a run's --deliver-only is recorded with each clip owed)")
    doc = operations.deliver(ledger, to=to, manifest=manifest, endpoint=deliver_endpoint, prune_local=prune_local,
                             verify=verify, catalog=operations.catalog(models_file), only=deliver_only,
                             log=(lambda m: None) if quiet or as_json else echo_err)
    if as_json:
        print_json(doc)
    else:
        print_deliver(doc)
    if doc["undelivered"]:
        sys.exit(EXIT_DELIVERY)


@click.command(cls=Command)
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
    from .. import operations

    table = load_prices(prices)
    found = operations.lost(ledger, prices=table)
    if rerender and found["rerender"] and not yes:
        n, cr = len(found["rerender"]), found["credits"]
        raise UsageError(f"{n} lost clip(s) can only be rendered again: {n} new paid task(s), ≈ {cr:,.2f} credits "
                         "(--prices). Re-run with --rerender --yes to queue them for the next run")
    doc = operations.recover(ledger, rerender=rerender, prices=table)
    if as_json:
        print_json(doc)
        return
    print_recover(doc, quiet)


@click.command(cls=Command)
@read_ledger_options
@click.option("--run", "run_id", type=int, default=None, help="Default: the latest running run.")
@click.option("--all", "all_runs", is_flag=True, help="Every running run (all workers of a PostgreSQL ledger).")
@quiet_option
def stop(ledger: str | None, run_id: int | None, all_runs: bool, quiet: bool) -> None:
    """Ask a running `batchgen run` to drain, from any terminal or machine sharing the ledger.

    It stops submitting, records what is in flight and exits (code 3); re-run to resume.
    Same effect as SIGTERM to its process."""
    from .. import operations

    targets = operations.stop(ledger, run_id=run_id, all_runs=all_runs)
    done(quiet, f"stop requested for run(s) {', '.join(map(str, targets))}; they drain within a few seconds")


@click.command(cls=Command)
@read_ledger_options
@click.option("--run", "run_id", type=int, required=True, help="The run whose unsubmitted jobs to cancel.")
@quiet_option
def cancel(ledger: str | None, run_id: int, quiet: bool) -> None:
    """Mark the run's jobs that were never submitted as cancelled: no run will submit them.

    The API has no cancel endpoint, so tasks already created cannot be stopped: they finish,
    are billed, and are still polled and downloaded by the next run. Use `batchgen stop` to
    halt a running process."""
    from .. import operations

    n = operations.cancel(ledger, run_id)
    done(quiet, f"run {run_id}: {n} unsubmitted job(s) cancelled")


@click.group(cls=Group)
def db() -> None:
    """Ledger maintenance."""


@db.command("upgrade")
@read_ledger_options
@quiet_option
def db_upgrade(ledger: str | None, quiet: bool) -> None:
    """Migrate an existing ledger written by an older batchgen (run, resolve, stop and cancel
    also do; the commands that only read never do, and say to run this). Never creates a
    SQLite ledger; on PostgreSQL it sets up batchgen's tables in an empty database."""
    from .. import operations

    done(quiet, operations.upgrade(ledger))
