"""Executing a prepared run against an ``Api`` (``execute``): the ledger writer and the
scheduler driven to the end (or a stop), then the outcome summarised as a ``RunResult`` with
the exit code ``batchgen run`` returns, and the ``--metrics-file`` kept current while it runs.
Opens no client, no simulator, no ledger (``wiring`` does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import deadline, logs, metrics, signals
from ..client import Api, Client
from ..errors import EXIT_DELIVERY, EXIT_FAILED, EXIT_OK, EXIT_UNFINISHED, OutputFailed, OutputRefused
from ..failures import classify, fix
from ..files import remove_stale_temp_files
from ..jobs import JobRow, JobState, RunStatus
from ..ledger import Ledger, Writer
from ..progress import Display
from ..scheduler import RunOptions, Scheduler, with_skipped_done
from .preparation import Prepared

S = JobState
log = logs.log


@dataclass
class RunResult:
    """How a run ended: per-state counts of its manifest, the jobs that need a human, why it
    stopped early (if it did) and the exit code ``batchgen run`` returns for it."""

    run_id: int
    counts: dict[str, int]
    in_doubt: list[JobRow]
    failed: list[JobRow]
    reason: str | None  # why the run stopped early, if it did
    exit_code: int
    requests: int = 0
    polls: int = 0
    throttled: int = 0
    commits: int = 0
    elapsed: float = 0.0
    credits_estimated: float = 0.0
    credits_reserved: float = 0.0  # usage.credits_reserved of the tasks this run saw
    verified: dict[str, int] = field(default_factory=dict)  # the manifest's clips per verification outcome
    not_as_asked: list[JobRow] = field(default_factory=list)  # clips verification found wrong
    unverified: int = 0  # this run's clips whose verification could not run (the next run checks them)
    sheets_left: int = 0  # contact sheets the run's end did not wait for (`batchgen verify --sheets-only` draws them)
    delivery: dict[str, Any] = field(default_factory=dict)  # --deliver: destination, delivered, undelivered, error
    manifest: str = ""
    started_at: float = 0.0  # wall clock
    credits_at_risk: float = 0.0  # estimated credits of in-doubt jobs
    expiring: int = 0  # completed results not downloaded yet (their URL expires 24 h after completion)
    breakers: dict[str, str] = field(default_factory=dict)  # model → why its breaker is open at the end
    awaiting_review: int = 0  # this run's finished clips no reviewer decided on yet (`batchgen review`)
    deadline: dict[str, Any] = field(default_factory=dict)  # run --finish-by: deadline.summary, {} without one

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "counts": self.counts, "reason": self.reason, "exit_code": self.exit_code,
                "requests": self.requests, "polls": self.polls, "throttled": self.throttled,
                "ledger_commits": self.commits, "elapsed_s": round(self.elapsed, 3),
                "credits_estimated": round(self.credits_estimated, 4),
                "credits_reserved": round(self.credits_reserved, 4),
                "in_doubt": [{"id": j["id"], "key": j["key"], "name": j["name"], "error": j["error_code"]}
                             for j in self.in_doubt],
                "verified": self.verified, "unverified": self.unverified, "sheets_left": self.sheets_left,
                "not_as_asked": [{"id": j["id"], "key": j["key"], "name": j["name"], "verify": j["verify"],
                                  "detail": j["verify_detail"], "output_path": j["output_path"]}
                                 for j in self.not_as_asked],
                "failed": [{"id": j["id"], "key": j["key"], "name": j["name"], "error": j["error_code"],
                            "message": j["error_message"], "class": classify(j["error_code"]),
                            "fix": fix(j["error_code"], j["request"])} for j in self.failed],
                "manifest": self.manifest, "credits_at_risk": round(self.credits_at_risk, 4),
                "expiring": self.expiring, "delivery": self.delivery, "breakers": self.breakers,
                "awaiting_review": self.awaiting_review, "deadline": self.deadline}


async def execute(ledger: Ledger, prepared: Prepared, opts: RunOptions, api: Api, stop: asyncio.Event,
                  *, log: Callable[[str], None] | None = None, display: Display | None = None) -> RunResult:
    """Run a prepared run to completion (or until stopped) against ``api`` and summarise it."""
    started = time.monotonic()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    coop = prepared.cooperative
    async with Writer(ledger, owner=prepared.run_id if coop else None) as w:
        sched = Scheduler(w, api, opts, stop, log=log, display=display)
        if isinstance(api, Client):  # what answers say of the rate limit reaches the budget
            api.on_quota = sched.ctx.budget.observe
        watch = asyncio.create_task(_write_metrics_while(sched, prepared, opts)) if opts.metrics_file else None

        async def settle() -> None:  # a second signal: half-written downloads go, queued records commit
            await sched.quiesce()
            await w.flush()

        try:
            with signals.before_exit(settle):
                await sched.run(prepared.run_id, prepared.total, prepared.scope)
        finally:
            if watch is not None:
                watch.cancel()
        await w.flush()
        if coop:  # the outcome of the whole manifest, whichever worker did each job
            await w.call(ledger.release, prepared.run_id)
            await asyncio.to_thread(remove_stale_temp_files, opts.out_dir)  # of workers that died meanwhile
            counts = with_skipped_done(await w.call(ledger.scope_counts, prepared.scope), prepared.total)
            in_doubt = await w.call(ledger.jobs_in_state, S.IN_DOUBT, prepared.scope)
            failed = await w.call(ledger.jobs_in_state, S.FAILED, prepared.scope)
        else:
            counts = with_skipped_done(await w.call(ledger.counts, prepared.run_id), prepared.total)
            in_doubt = [j for j in await w.call(ledger.jobs_in_state, S.IN_DOUBT) if j["run_id"] == prepared.run_id]
            failed = [j for j in await w.call(ledger.jobs_in_state, S.FAILED) if j["run_id"] == prepared.run_id]
        active_left = sum(counts.get(s, 0) for s in (S.QUEUED, S.SUBMITTING, S.SUBMITTED, S.RENDERING, S.COMPLETED))
        verdict = sched.ctx  # the run-wide verdicts (halt code, unfinished, reason)
        night: dict[str, Any] = {}
        if (d := sched.gate.deadline) is not None:
            kept, first = await w.call(ledger.queued_of, prepared.scope, sorted(d.cut))
            # the models it cut that still have jobs queued (not those whose jobs were all done by then)
            night = deadline.summary(d.at, d.source, sorted(kept), sum(kept.values()), first, time.time())
        if verdict.halt_code is not None:
            code = verdict.halt_code
        elif (active_left and active_left == counts.get(S.QUEUED) and not verdict.unfinished
              and set(queued := await _queued_by_model(w, ledger, prepared, coop)) <= set(sched.breakers.open_models())):
            # Only jobs of models whose breaker is open are left: not a stop but a failure of
            # those models tonight (their jobs stay queued for the next run). On a fleet, the
            # manifest's (every worker says so: the breaker is the fleet's).
            code = EXIT_FAILED
            held = [f"breaker open for {m}: {why}; its {queued.get(m, 0)} queued job(s) wait for the next run"
                    for m, why in sched.breakers.open_models().items()]
            verdict.reason = "; ".join(held)
        elif active_left or verdict.unfinished:
            code = EXIT_UNFINISHED  # jobs the deadline left queued included: the next run starts them
            if night.get("left") and not verdict.reason:
                verdict.reason = (f"finish-by {night['deadline']}: {night['left']} job(s) could not be rendered, "
                                  "downloaded and verified by then — left queued for the next run")
            verdict.reason = verdict.reason or ("stopped by signal" if stop.is_set() else "some jobs are unfinished")
        elif in_doubt or failed:
            code = EXIT_FAILED
        else:
            code = EXIT_OK
        verified = await w.call(ledger.verify_counts, prepared.scope)
        wrong = await w.call(ledger.not_as_asked, prepared.scope, 200)
        if code == EXIT_OK and wrong:
            code = EXIT_FAILED  # every job ended, but not every clip is what was asked
        if code == EXIT_OK and sched.checker.unverified:
            code = EXIT_FAILED  # every job ended, but whether the clips are what was asked is not known
        delivery: dict[str, Any] = {}
        if opts.deliver is not None:
            left = await w.call(ledger.delivery_counts, prepared.scope)
            delivery = {"destination": str(opts.deliver.destination), "delivered": left["delivered"],
                        "undelivered": left["undelivered"], "delivered_now": sched.deliverer.delivered,
                        "error": sched.deliverer.broken}
            if code == EXIT_OK and (left["undelivered"] or sched.deliverer.broken):
                code = EXIT_DELIVERY  # every clip rendered and kept locally; not all of them delivered
        status = {EXIT_OK: RunStatus.FINISHED, EXIT_FAILED: RunStatus.FINISHED, EXIT_DELIVERY: RunStatus.FINISHED,
                  EXIT_UNFINISHED: RunStatus.INTERRUPTED}.get(code, RunStatus.STOPPED)
        await w.call(ledger.finish_run, prepared.run_id, status, code)
        result = RunResult(prepared.run_id, counts, in_doubt, failed, verdict.reason, code, requests=verdict.budget.used,
                         polls=sched.poller.polls, throttled=verdict.budget.throttled, commits=w.commits,
                         elapsed=time.monotonic() - started, credits_estimated=sched.submitter.committed_credits,
                         credits_reserved=verdict.credits_seen, verified=verified, not_as_asked=wrong,
                         unverified=sched.checker.unverified, sheets_left=sched.checker.sheets_left,
                         delivery=delivery, manifest=prepared.manifest, started_at=prepared.started_at,
                         credits_at_risk=sum(opts.prices.estimate(json.loads(j["request"])) or 0.0 for j in in_doubt),
                         expiring=counts.get(S.COMPLETED, 0), breakers=sched.breakers.open_models(),
                         awaiting_review=(await w.call(ledger.verdict_counts, prepared.run_id))["pending"],
                         deadline=night)
        if opts.metrics_file is not None:
            last_ok = await w.call(ledger.last_success, prepared.manifest)
            await asyncio.to_thread(_write_metrics, opts.metrics_file, _final_metrics(result, opts, last_ok))
        return result


async def _queued_by_model(w: Writer, ledger: Ledger, prepared: Prepared, coop: bool) -> dict[str, int]:
    """model → queued jobs left: of this run, or on a fleet of the whole manifest."""
    pending = await w.call(ledger.pending_by_model, prepared.scope, None if coop else prepared.run_id)
    return {m: p["queued"] for m, p in pending.items() if p["queued"]}


def _live_metrics(sched: Scheduler, prepared: Prepared, opts: RunOptions,
                  delivery: dict[str, int]) -> metrics.RunMetrics:
    snap = sched.snapshot()
    return metrics.RunMetrics(
        manifest=prepared.manifest, run_id=prepared.run_id, running=True, started_at=prepared.started_at,
        states=dict(snap.states), requests=sched.ctx.budget.used, polls=sched.poller.polls,
        throttled=sched.ctx.budget.throttled, credits_reserved=sched.ctx.credits_seen,
        credits_estimated=sched.submitter.committed_credits, max_credits=opts.max_credits,
        in_doubt=snap.states.get(S.IN_DOUBT, 0), verified=dict(sched.checker.verified),
        delivered=delivery["delivered"] if opts.deliver is not None else None,
        undelivered=delivery["undelivered"] if opts.deliver is not None else None, models=dict(snap.models),
        breakers=sched.breakers.open_models())


def _final_metrics(r: RunResult, opts: RunOptions, last_success: float | None) -> metrics.RunMetrics:
    return metrics.RunMetrics(
        manifest=r.manifest, run_id=r.run_id, running=False, started_at=r.started_at, states=dict(r.counts),
        requests=r.requests, polls=r.polls, throttled=r.throttled, credits_reserved=r.credits_reserved,
        credits_estimated=r.credits_estimated, max_credits=opts.max_credits, in_doubt=len(r.in_doubt),
        exit_code=r.exit_code, finished_at=time.time(), last_success=last_success, verified=dict(r.verified),
        delivered=r.delivery.get("delivered"), undelivered=r.delivery.get("undelivered"), breakers=dict(r.breakers))


_metrics_failing: set[Path] = set()


def _write_metrics(path: Path, m: metrics.RunMetrics) -> None:
    try:
        metrics.write(path, m)
        _metrics_failing.discard(path)
    except (OSError, OutputRefused, OutputFailed) as e:  # monitoring never fails the run; said once
        if path not in _metrics_failing:
            _metrics_failing.add(path)
            log.warning(str(e) if not isinstance(e, OSError) else f"cannot write --metrics-file {path}: {e.strerror or e}")


async def _write_metrics_while(sched: Scheduler, prepared: Prepared, opts: RunOptions) -> None:
    assert opts.metrics_file is not None
    while True:
        # The ledger's count (the one the summary shows), not this run's tally: clips earlier
        # runs delivered or left behind are in the bucket, or owed to it, too.
        delivery = (await sched.w.read(sched.w.ledger.delivery_counts, prepared.scope) if opts.deliver is not None
                    else {"delivered": 0, "undelivered": 0})
        await asyncio.to_thread(_write_metrics, opts.metrics_file, _live_metrics(sched, prepared, opts, delivery))
        await asyncio.sleep(opts.metrics_every)

