"""What an operator asks of runs and in-doubt jobs: ``status`` (runs, what is unfinished, at
risk or expiring, verified and delivered), ``resolve`` (settle an in-doubt job), ``stop`` (ask
running runs to drain) and ``cancel`` (a run's never-submitted jobs). ``status`` only reads;
the others write through ``Ledger`` (``Transition``s, run flags), never SQL of their own.

``status`` on a SQLite file reads through ``SqliteReader`` (the standard library's SQLite driver), so
that `batchgen status` never loads SQLAlchemy; a ``Ledger`` passed in, or a ledger named by a
URL (PostgreSQL), is read through ``Ledger``. Both answer the same questions the same way."""

from __future__ import annotations

import json
import socket
import time
from contextlib import AbstractContextManager, closing
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BatchgenError, UsageError
from ..files import pid_alive
from ..jobs import RESULT_TTL, JobRow, JobState, RunStatus, short_key
from ..ledger import SqliteReader, ledger_file
from .ledgers import brief, open_ledger

if TYPE_CHECKING:
    from ..cost import PriceTable
    from ..ledger import Ledger

S = JobState
Resolution = Literal["adopt", "resubmit", "abandon"]


def status(ledger: str | Ledger | None = None, *, prices: PriceTable | None = None, expiring_within_h: float = 6.0,
           runs: int = 10) -> dict[str, Any]:
    """Runs with per-state counts (and, on PostgreSQL, each worker's heartbeat and held jobs),
    the oldest unfinished jobs, in-doubt jobs with the credits at risk, results whose 24 h URL
    expires within ``expiring_within_h`` hours undownloaded, clips not as asked, and (with
    --deliver) how many clips are in object storage and which ones a run could not deliver."""
    with _reader(ledger) as led:
        local_runs = led.is_sqlite
        runs_ = led.runs(runs)
        oldest = led.unfinished(10)
        doubt = led.jobs_in_state(S.IN_DOUBT)
        expiring = led.expiring(expiring_within_h * 3600, RESULT_TTL)
        verified = led.verify_counts()
        review = led.verdict_counts()
        wrong = led.not_as_asked(limit=20)
        delivery = led.delivery_counts()
        undelivered = led.delivery_problems(20)
        breakers = led.open_breakers()
        nights = _nights(led, runs_)
    now = time.time()
    at_risk = _at_risk(doubt, prices)
    host = socket.gethostname()
    for r in runs_:
        # A crashed run must not look alive; status only reads, so it says so without recording it
        # (the next run or `batchgen stop` does). SQLite runs are on this machine; PostgreSQL
        # workers are judged by their heartbeat.
        if (local_runs and r["status"] == RunStatus.RUNNING and r["host"] == host
                and r["pid"] and not pid_alive(r["pid"])):
            r["status"] = RunStatus.DIED
    return {
        "runs": [{"id": r["id"], "manifest": r["manifest"], "status": r["status"], "started_at": r["started_at"],
                  "finished_at": r["finished_at"], "host": r["host"], "pid": r["pid"],
                  "stop_requested": bool(r["stop_requested"]), "jobs": r["jobs_total"], "counts": r["counts"],
                  # A SQLite run stamps its heartbeat once, at its start (it leases nothing): its age
                  # there read "♥ 21600s ago, holds 0" of a live night, as if it were a dead worker.
                  "heartbeat_age_s": None if local_runs else r["heartbeat_age_s"], "held": r["held"],
                  # run --finish-by: the deadline and, while it runs, whether the night is on track
                  "finish_by": r.get("finish_by"), **({"deadline": nights[r["id"]]} if r["id"] in nights else {})}
                 for r in runs_],
        "oldest_unfinished": [dict(brief(j), age_s=round(now - (j["submitted_at"] or j["created_at"])))
                              for j in oldest],
        "in_doubt": at_risk,
        "credits_at_risk": round(sum(x["credits_at_risk"] or 0 for x in at_risk), 4),
        "expiring": [dict(brief(j), expires_in_s=round((j["result_at"] or now) + RESULT_TTL - now))
                     for j in expiring],
        "verified": verified,
        # finished clips by their latest review verdict (batchgen review); pending: none yet
        "review": review,
        "not_as_asked": [dict(brief(j), verify=j["verify"], detail=j["verify_detail"], output_path=j["output_path"])
                         for j in wrong],
        # --deliver: clips in the store, and those a run could not deliver (the next run will)
        "delivered": delivery["delivered"],
        "undelivered": delivery["undelivered"],
        "not_delivered": [dict(brief(j), error=j["delivery_error"] or "not attempted yet", destination=j["deliver_to"],
                               output_path=j["output_path"]) for j in undelivered],
        # models whose breaker is open (issue 30): no new task but a probe after the cool-off
        "breakers": {m: {"why": b["why"], "opened_at": b["opened_at"], "probe_in_s": max(0, round(b["probe_in"]))}
                     for m, b in breakers.items()},
    }


def _nights(led: Ledger | SqliteReader, runs_: list[dict[str, Any]]) -> dict[int, str]:
    """Each running run's deadline outlook (run --finish-by), by its id. The forecast's reads
    are ``Ledger``'s: read through it (loading SQLAlchemy) only while such a run is running."""
    due = [r for r in runs_ if r["status"] == RunStatus.RUNNING and r.get("finish_by")]
    if not due:
        return {}
    if isinstance(led, SqliteReader):
        with open_ledger(str(led.path), readonly=True) as full:
            return {r["id"]: _night(full, r) for r in due}
    return {r["id"]: _night(led, r) for r in due}


def _night(led: Ledger, r: dict[str, Any]) -> str:
    """Whether a running run is on track for its deadline (``deadline.outlook``), by the
    forecast from the ledger's history for what its manifest still has to do."""
    from .. import forecast
    from ..deadline import for_night, outlook
    from ..ledger import Scope
    from ..specs import Catalog

    pending = led.pending_by_model(Scope(r["manifest"], r["manifest_sha256"]))
    history = led.render_history(sorted(pending))
    options = json.loads(r["options"] or "{}")
    work = {m: p["queued"] + p["in_flight"] for m, p in pending.items()}
    shipped = Catalog.shipped()  # status has no manifest: the shipped catalog's typical render times
    typical = shipped.typical_render_times(work)
    night = forecast.estimate(work, history, int(options.get("concurrency") or 8), options.get("rpm"), None, typical)
    now, at = time.time(), float(r["finish_by"])
    queued = {m: p["queued"] for m, p in pending.items() if p["queued"]}
    # What is queued and cannot start in time any more (every such model past its cut-off) waits for the next night.
    cut = bool(queued) and for_night(at, queued, history, typical).past(sorted(queued))
    return outlook(at, now, remaining=sum(work.values()), queued=sum(queued.values()),
                   eta_s=night.seconds if work else None, cut_off=cut)


def _reader(ledger: str | Ledger | None) -> AbstractContextManager[Ledger | SqliteReader]:
    """What ``status`` reads through: a SQLite file named by its path, with the standard
    library (``SqliteReader``); anything else (a ``Ledger``, a URL) through ``Ledger``."""
    path = ledger_file(ledger) if ledger is None or isinstance(ledger, str) else None
    if path is not None:
        return closing(SqliteReader(path))
    return open_ledger(ledger, readonly=True)


def _at_risk(doubt: list[JobRow], prices: PriceTable | None) -> list[dict[str, Any]]:
    """The in-doubt jobs with their estimated credits. The shipped price table is read only when
    there is one: a plain `batchgen status` does not pay for the YAML reader at start-up."""
    if not doubt:
        return []
    if prices is None:
        from ..cost import PriceTable

        prices = PriceTable.load()
    return [dict(brief(j), credits_at_risk=prices.estimate(json.loads(j["request"]))) for j in doubt]


# ---------------------------------------------------------------------------------- resolve
def resolve(ledger: str | Ledger | None, job: str, action: Resolution, *, task_id: str | None = None) -> dict[str, Any]:
    """Settle an in-doubt job (id, key, key prefix of ≥ 6 characters, or task id): ``adopt`` the
    task id an operator found in the provider's console (it is then polled and downloaded),
    ``resubmit`` it (the next run creates a new, paid task) or ``abandon`` it. Recorded in the
    event log. Raises ``UsageError`` for an unknown job, one that is not in doubt, or a task id
    that another job already has."""
    ref = job.strip()
    if not ref.isdigit() and len(ref) < 6 and not ref.startswith("task-"):
        raise UsageError(f"{job!r} is too short to name a job: give its id, its task id or at least 6 characters "
                         "of its key (as `batchgen status` and the run summary print them)")
    from ..ledger import Transition  # here: the module loads for `status` without SQLAlchemy

    with open_ledger(ledger) as led:
        j = led.job(ref)
        if j is None:
            raise UsageError(f"no job {job!r} in the ledger")
        label = f"{j['name']} ({short_key(j['key'])})"
        if j["state"] != S.IN_DOUBT:
            raise UsageError(f"job {label} is {j['state']}, not in_doubt")
        if action == "adopt":
            if not task_id:
                raise UsageError("--adopt needs the task id")
            other = led.job(task_id)
            if other is not None:
                raise UsageError(f"task {task_id} already belongs to job {other['name']} ({short_key(other['key'])})")
            t = Transition(j["id"], S.SUBMITTED, (S.IN_DOUBT,), {"submitted_at": time.time(), "error_code": None,
                           "error_message": None, "estimated_time": None}, task_id=task_id,
                           detail="resolved by operator: adopted task")
        elif action == "resubmit":
            t = Transition(j["id"], S.QUEUED, (S.IN_DOUBT,), {"error_code": None, "error_message": None},
                           detail="resolved by operator: resubmit")
        else:
            t = Transition(j["id"], S.CANCELLED, (S.IN_DOUBT,), {"error_code": "abandoned",
                           "error_message": "abandoned by operator while in doubt"}, detail="resolved by operator: abandon")
        if not led.apply([t])[0]:
            raise BatchgenError("the job changed state meanwhile; nothing done")
    return {"id": j["id"], "key": j["key"], "name": j["name"], "action": action, "task_id": task_id}


# ---------------------------------------------------------------------------------- stop / cancel
def stop(ledger: str | Ledger | None = None, *, run_id: int | None = None, all_runs: bool = False) -> list[int]:
    """Ask running runs to drain (the latest, ``run_id``, or every one with ``all_runs``),
    through a flag in the ledger that works from any terminal or machine. Returns the runs
    asked; raises ``UsageError`` when there is none to ask."""
    if run_id is not None and all_runs:
        raise UsageError("--run and --all exclude each other")
    with open_ledger(ledger) as led:
        led.reap_dead_runs()  # asking a crashed run to stop would answer "stop requested" to nobody
        running = [r["id"] for r in led.runs(1000) if r["status"] == RunStatus.RUNNING]
        targets = [run_id] if run_id is not None else running if all_runs else running[:1]
        targets = [t for t in targets if led.request_stop(t)]
    if not targets:
        raise UsageError("no running run" + (f" {run_id}" if run_id else "") + " in this ledger")
    return targets


def cancel(ledger: str | Ledger | None, run_id: int) -> int:
    """Mark run ``run_id``'s never-submitted jobs cancelled; returns how many."""
    with open_ledger(ledger) as led:
        if led.run(run_id) is None:
            raise UsageError(f"no run {run_id} in this ledger (`batchgen status` lists the runs)")
        return led.cancel_queued(run_id)

