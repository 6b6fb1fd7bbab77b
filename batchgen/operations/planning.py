"""``plan`` and ``diff``: a manifest expanded and compared with the ledger, nothing sent,
nothing recorded. ``why`` is the dry-run reason of each job (``plan --explain``). Expansion is
streamed: a million-row plan never holds its jobs (``diff`` does: it matches them by output)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .. import forecast
from ..cost import Costs, PriceTable
from ..failures import retry_verdict
from ..jobs import ACTIVE, DEFAULT_MAX_ATTEMPTS, JobRow, JobState, short_key
from ..ledger import Ledger, RetakeCandidates
from ..manifest import Manifest
from ..specs import Catalog
from .ledgers import ledger_to_compare

S = JobState


def plan(manifest: str | Path, *, ledger: str | Ledger | None = None, prices: PriceTable | None = None,
         explain: bool = False, catalog: Catalog | None = None, concurrency: int = 8,
         rpm: float | str | None = "auto", start: float | None = None, retry_failed: bool = False,
         max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict[str, Any]:
    """Validate and expand ``manifest`` without sending anything and compare it with the ledger
    (if there is one): jobs per state bucket, seconds of video and estimated credits per model
    and resolution, warnings, and with ``explain`` one entry per job saying what a run would do
    with it and why. ``retry``: the failed jobs ``run --retry-failed --max-attempts N`` would
    resubmit (by ``retry_verdict``, the rule that run requeues by) and those it would leave; with
    ``retry_failed`` they are in "to submit", its credits and the forecast. Raises
    ``ManifestError`` with every problem of an invalid manifest."""
    # The ledger first: a missing, foreign or outdated one is said before the manifest is read
    # (a million-row expansion takes a minute), as `run` opens its ledger before expanding.
    with ledger_to_compare(ledger) as led:
        table = prices or PriceTable.load()
        m = Manifest(manifest, catalog)
        table.catalog = m.catalog
        costs = Costs(table)
        rows: list[tuple[str, str, str, str, dict[str, Any] | None]] = []  # explain: key, name, source, output, state
        seconds: dict[tuple[str, str], float] = defaultdict(float)
        jobs_by: dict[tuple[str, str], int] = defaultdict(int)
        credits: dict[tuple[str, str], float | None] = {}
        buckets = {"new": 0, "done": 0, "lost": 0, "in_flight": 0, "failed": 0, "in_doubt": 0, "cancelled": 0,
                   "queued": 0}
        # Streamed: each batch of keys is looked up in the ledger as the expansion goes (a
        # 1,000,000-row manifest is never held).
        batch: list[str] = []
        batch_models: list[str] = []
        batch_credits: list[float | None] = []
        retry: dict[str, Any] = {"included": retry_failed, "max_attempts": max_attempts, "resubmitted": 0,
                                 "credits": 0.0, "unpriced": 0, "spent": 0, "permanent": 0}
        spend = {"credits": 0.0, "unpriced": 0}  # of the jobs a run would create: new, queued, retried
        to_submit: dict[str, int] = defaultdict(int)  # model → jobs a run would create (the forecast)
        pending: list[tuple[str, str, str, str]] = []
        # Retakes are counted by the expansion as it is now, as the run carries them: only the
        # keys on their chains are remembered while it streams.
        candidates = None if led is None else led.retake_candidates()
        wanted = frozenset() if candidates is None else candidates.wanted
        seen: set[str] = set()

        def classify() -> None:
            known = led.states_by_key(batch) if led is not None else {}
            seen.update(k for k in batch if k in wanted)
            for k, model, est in zip(batch, batch_models, batch_credits):
                j = known.get(k)
                bucket = _bucket(j)
                buckets[bucket] += 1
                verdict = None if j is None else retry_verdict(j, max_attempts)
                if verdict == "retry":
                    retry["resubmitted"] += 1
                    retry["credits"] += est or 0.0
                    retry["unpriced"] += est is None
                elif verdict is not None:
                    retry[verdict] += 1
                if bucket in ("new", "queued") or (retry_failed and verdict == "retry"):
                    to_submit[model] += 1
                    spend["credits"] += est or 0.0
                    spend["unpriced"] += est is None
            batch_models.clear()
            batch_credits.clear()
            rows.extend((k, n, src, out, known.get(k)) for k, n, src, out in pending)
            batch.clear()
            pending.clear()

        for job in m.expand():
            batch.append(job.key)
            batch_models.append(job.model)
            if explain:
                pending.append((job.key, job.name, job.source, job.output))
            group = (job.model, str(job.request.get("resolution", "-")))
            jobs_by[group] += 1
            secs, est = costs.of(job.request)
            batch_credits.append(est)
            seconds[group] += secs
            prev = credits.get(group, 0.0)
            credits[group] = None if est is None or prev is None else prev + est
            if len(batch) >= 2000:
                classify()
        m.check()
        classify()
        retakes = None if candidates is None else retakes_of_expansion(candidates, seen, table)
        for model, n in (retakes or {}).get("models", {}).items():
            to_submit[model] += n  # counted in "to submit": the forecast says how long they take
        history = {} if led is None else led.render_history(to_submit)
    per: list[dict[str, Any]] = [
        {"model": mo, "resolution": r, "jobs": jobs_by[(mo, r)], "seconds": seconds[(mo, r)],
         "credits_estimated": None if credits[(mo, r)] is None else round(credits[(mo, r)] or 0.0, 4)}
        for (mo, r) in sorted(jobs_by)]
    total = sum(p["credits_estimated"] or 0.0 for p in per)
    doc: dict[str, Any] = {
        "manifest": str(manifest), "jobs": sum(buckets.values()), "states": buckets, "video": per,
        "to_submit": buckets["new"] + buckets["queued"] + (retry["resubmitted"] if retry_failed else 0),
        "credits_estimated_total": round(total, 4),
        "credits_unit": table.unit, "prices": table.source, "warnings": list(m.warnings)}
    retry["credits"] = round(retry["credits"], 4)
    doc["retry"] = retry
    if retakes is not None:
        doc["retakes"] = retakes
        doc["to_submit"] += retakes["queued"]
        spend["credits"] += retakes["credits"]
    doc["credits_to_submit"] = round(spend["credits"], 4)
    doc["unpriced_to_submit"] = spend["unpriced"]
    doc["forecast"] = _forecast(dict(to_submit), history, m.catalog, concurrency, rpm, start)
    if explain:
        doc["explain"] = [{"key": short_key(k), "name": n, "row": src, "output": out, "action": a, "reason": r}
                          for k, n, src, out, j in rows
                          for a, r in [why(j, max_attempts if retry_failed else None)]]
    return doc


def _bucket(j: dict[str, Any] | None) -> str:
    """The plan's state bucket of a job the ledger knows as ``j`` (None: not recorded)."""
    if j is None:
        return "new"
    s = j["state"]
    if s == S.DONE and j["verify"] in _LOST and not j["pruned_at"]:
        return "lost"  # done, but its file is gone or changed: `batchgen recover`
    if s == S.SUBMITTING or s in ACTIVE:
        return "in_flight"
    return str(s)


def diff(manifest: str | Path, *, ledger: str | Ledger | None = None,
         prices: PriceTable | None = None, catalog: Catalog | None = None, concurrency: int = 8,
         rpm: float | str | None = "auto", start: float | None = None) -> dict[str, Any]:
    """Compare ``manifest`` with what the ledger last ran for it (the jobs its path expanded to
    when last recorded): jobs added, removed, changed (matched by output path, then name; the
    request fields that changed) and unchanged (how many of them are done), with estimated
    credits: the last expansion's total, this one's, the delta, and tonight's spend (the jobs a
    plain run would submit: new or queued) and how long they take (the forecast, as `plan`'s).
    Sends nothing, records nothing."""
    old: list[JobRow] | None = None
    history: dict[str, dict[str, Any]] = {}
    retakes: dict[str, Any] = {"queued": 0, "marked": 0, "credits": 0.0}
    known: dict[str, dict[str, Any]] = {}
    last_run: dict[str, Any] | None = None
    with ledger_to_compare(ledger) as led:  # before the expansion, as in `plan`
        table = prices or PriceTable.load()
        m = Manifest(manifest, catalog)
        table.catalog = m.catalog
        new = list(m.expand())
        m.check()
        path = str(m.path.resolve())
        new_keys = {j.key for j in new}
        if led is not None:
            old = led.manifest_members(path)
            known = led.states_by_key([j.key for j in new])
            last_run = led.last_run_of(path)
            retakes = retakes_of_expansion(led.retake_candidates(), new_keys, table)
            history = led.render_history(sorted({j.model for j in new} | set(retakes["models"])))
    old = old or []
    old_by_key = {j["key"]: j for j in old}
    gone = {j["key"]: j for j in old if j["key"] not in new_keys}
    by_output = {j["output"]: j for j in gone.values()}
    by_name = {j["name"]: j for j in gone.values()}

    def est(request: dict[str, Any]) -> float | None:
        e = table.estimate(request)
        return None if e is None else round(e, 4)

    added: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    unchanged = unchanged_done = 0
    tonight = 0.0
    unpriced = 0
    to_submit: dict[str, int] = defaultdict(int)
    for j in new:
        credits = est(j.request)
        state = known.get(j.key, {})
        if state.get("state") in (None, S.QUEUED):  # a run would pay for it (not failed, in doubt, cancelled)
            to_submit[j.model] += 1
            tonight += credits or 0.0
            unpriced += credits is None
        if j.key in old_by_key:
            unchanged += 1
            unchanged_done += state.get("state") == S.DONE
            continue
        before = by_output.get(j.output) or by_name.get(j.name)
        if before is None or before["key"] not in gone:
            added.append({"name": j.name, "output": j.output, "model": j.model, "key": short_key(j.key),
                          "credits": credits})
            continue
        del gone[before["key"]]
        was = json.loads(before["request"])
        changed.append({"name": j.name, "output": j.output, "key": short_key(j.key),
                        "was_key": short_key(before["key"]), "fields": _changes(was, j.request, before["take"], j.take),
                        "credits_before": est(was), "credits": credits})
    removed = [{"name": j["name"], "output": j["output"], "model": j["model"], "key": short_key(j["key"]),
                "state": j["state"], "credits": est(json.loads(j["request"]))} for j in gone.values()]
    last_total = sum(e or 0.0 for e in (est(json.loads(j["request"])) for j in old))
    new_total = sum(e or 0.0 for e in (est(j.request) for j in new))
    tonight += retakes["credits"]
    for model, n in retakes.get("models", {}).items():
        to_submit[model] += n
    return {
        "forecast": _forecast(dict(to_submit), history, m.catalog, concurrency, rpm, start),
        "manifest": str(manifest), "last_run": last_run, "known": bool(old), "retakes": retakes,
        "added": added, "removed": removed, "changed": changed, "unchanged": unchanged,
        "unchanged_done": unchanged_done,
        "credits": {"last": round(last_total, 4), "now": round(new_total, 4), "delta": round(new_total - last_total, 4),
                    "tonight": round(tonight, 4), "unpriced_jobs": unpriced, "unit": table.unit},
        "warnings": list(m.warnings)}


def _forecast(jobs: dict[str, int], history: dict[str, dict[str, Any]], catalog: Catalog, concurrency: int,
              rpm: float | str | None, start: float | None) -> dict[str, Any]:
    """How long tonight takes (``forecast``): from the ledger's history of each model, else the
    catalog's typical render time of it (the manifest's catalog: a `models:` entry may give its
    own), said as a guess. ``rpm="auto"`` is what `run` does by default: the budget it learns
    from the API's answers is not known beforehand, so it is not counted, and the forecast says
    so (``--rpm N`` counts one)."""
    auto = rpm == "auto"
    budget = None if auto or not rpm else float(rpm)
    fetches = [h["fetch"] for h in history.values() if h.get("fetch") is not None]
    typical = catalog.typical_render_times(jobs)
    night = forecast.estimate(jobs, history, concurrency, budget, max(fetches) if fetches else None, typical)
    lines = forecast.lines(night, jobs, history, start, typical)
    if auto and night.models:
        lines[0] = lines[0].replace("--rpm 0", "--rpm auto", 1)
        lines.insert(1, "  --rpm auto (run's default): the request budget is learned from the API's answers while the "
                        "night runs, so it is not counted here; plan --rpm N counts one")
    return {**night.as_dict(), "rpm": "auto" if auto else budget, "lines": lines}


def retakes_of_expansion(candidates: RetakeCandidates, keys: Collection[str], table: PriceTable) -> dict[str, Any]:
    """Retakes of the clips of a manifest as it expands now (``keys``: its jobs' keys), as its
    run carries them (``RetakeCandidates.of_expansion``): ``queued`` (recorded by `batchgen
    retake`: the next run renders and pays for them, ≈ ``credits``) and ``marked`` (clips marked
    retake, not queued yet). A clip the manifest no longer lists takes its retakes with it."""
    queued, marked = candidates.of_expansion(keys)
    credits = sum(table.estimate(json.loads(j["request"])) or 0.0 for j in queued)
    models = Counter(j["model"] for j in queued)  # model → queued retakes: tonight's forecast renders them too
    return {"queued": len(queued), "marked": len(marked), "credits": round(credits, 4), "models": dict(models)}


def _changes(was: dict[str, Any], now: dict[str, Any], take_was: str | None, take_now: str | None) -> list[str]:
    """The request fields that differ, as ``duration 6→8`` (short values) or just ``prompt``."""
    out = []
    for k in sorted(set(was) | set(now)):
        a, b = was.get(k), now.get(k)
        if a == b:
            continue
        if isinstance(a, str | int | float | None) and isinstance(b, str | int | float | None) and \
                len(str(a)) <= 24 and len(str(b)) <= 24:
            out.append(f"{k} {'(unset)' if a is None else a}→{'(unset)' if b is None else b}")
        else:
            out.append(k)
    if take_was != take_now:
        out.append(f"take {take_was or '(none)'}→{take_now or '(none)'}")
    return out


_LOST = ("missing", "changed")  # what `verify` recorded of a done clip's local file (media.MISSING/CHANGED)


def why(j: dict[str, Any] | None, retry_max: int | None = None) -> tuple[str, str]:
    """What ``run`` would do with a job in this ledger state, and why (the plan's dry-run reasons);
    ``retry_max``: what ``run --retry-failed --max-attempts retry_max`` would."""
    if j is None:
        return "submit", "new: no job with this exact request in the ledger"
    s = j["state"]
    if s == S.QUEUED:
        return "submit", f"queued, never created ({j['attempts']} earlier attempt(s) refused cleanly)"
    if s == S.DONE and j.get("verify") in _LOST and not j.get("pruned_at"):
        return "hold", (f"done, but its file is {j['verify']} ({j['output_path']}): `batchgen recover` fetches it "
                        "again while its URL is valid (free), or renders it again with --rerender (paid)")
    if s == S.DONE:
        return "skip", f"done: {j['output_path']}"
    if s in (S.SUBMITTED, S.RENDERING):
        return "poll", f"task {j['task_id']} is rendering: polled, never resubmitted"
    if s == S.COMPLETED:
        return "download", f"task {j['task_id']} finished: its result is downloaded"
    if s in (S.SUBMITTING, S.IN_DOUBT):
        return "hold", "in doubt: the create may exist; settle with `batchgen resolve`"
    if s == S.FAILED:
        return _why_failed(j, retry_max)
    return "skip", f"{s} by an operator"


def _why_failed(j: dict[str, Any], retry_max: int | None) -> tuple[str, str]:
    """``why`` of a failed job, by ``retry_verdict`` (the rule `run --retry-failed` follows)."""
    code, att = j["error_code"], j["attempts"]
    verdict = retry_verdict(j, retry_max or DEFAULT_MAX_ATTEMPTS)
    if verdict == "permanent":
        return "hold", f"failed ({code}): change the request to try again"
    if retry_max is not None:
        if verdict == "retry":
            return "submit", f"would be resubmitted (retry: {code}, attempt {att + 1} of {retry_max})"
        return "hold", (f"failed ({code}), retryable, left failed: it has had {att} create(s), --max-attempts "
                        f"{retry_max}; a higher --max-attempts renders it again (a new paid task)")
    if code == "result_expired":
        return "hold", ("failed (result_expired): its paid result expired undownloaded; `run --retry-failed` "
                        "renders it again (a new paid task)")
    return "hold", (f"failed ({code}), retryable: resubmitted (a new paid task) only with --retry-failed"
                    + (f" and --max-attempts above {att} (the creates it has had)" if verdict == "spent" else ""))
