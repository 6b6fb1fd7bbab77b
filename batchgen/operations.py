"""What an operator does around runs — plan, status, resolve, cancel, stop, export, report — as
functions over a ledger that return plain data (dicts and lists of JSON-able values). The
command line formats them; a script can use them as they are.

No command but ``run`` creates a ledger: a mistyped ``--ledger`` is an error (``LedgerMissing``),
never a new empty ledger. Commands that only read (plan, diff, status, export, report) open it
read-only: SQLite ``mode=ro``, no migration, no journal-mode switch, so another application's
database is refused unchanged (``NotALedger``) and an older ledger is left to `batchgen db upgrade`
(``LedgerOutdated``). ``verify`` records its findings but never migrates either.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal, cast

from . import files
from .cost import Costs, PriceTable
from .errors import BatchgenError, UsageError
from .export import to_record, write_csv, write_json
from .files import pid_alive
from .jobs import ACTIVE, RESULT_TTL, JobRow, JobState, RunStatus, short_key
from .ledger import Ledger, Scope, Transition, ledger_url
from .manifest import Manifest
from .specs import Catalog, ModelSpec

S = JobState
Resolution = Literal["adopt", "resubmit", "abandon"]


@contextmanager
def open_ledger(ledger: str | Ledger | None, *, create: bool = False, readonly: bool = False,
                migrate: bool = True) -> Iterator[Ledger]:
    """An open ledger for the block (closed after it unless the caller passed one in)."""
    if isinstance(ledger, Ledger):
        yield ledger
        return
    led = Ledger(ledger, create=create, readonly=readonly, migrate=migrate)
    try:
        yield led
    finally:
        led.close()


# ---------------------------------------------------------------------------------- plan
def plan(manifest: str | Path, *, ledger: str | Ledger | None = None, prices: PriceTable | None = None,
         explain: bool = False, catalog: Catalog | None = None) -> dict[str, Any]:
    """Validate and expand ``manifest`` without sending anything and compare it with the ledger
    (if there is one): jobs per state bucket, seconds of video and estimated credits per model
    and resolution, warnings, and with ``explain`` one entry per job saying what a run would do
    with it and why. Raises ``ManifestError`` with every problem of an invalid manifest."""
    table = prices or PriceTable.load()
    m = Manifest(manifest, catalog)
    table.catalog = m.catalog
    costs = Costs(table)
    rows: list[tuple[str, str, str, str, dict[str, Any] | None]] = []  # explain: key, name, source, output, state
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    jobs_by: dict[tuple[str, str], int] = defaultdict(int)
    credits: dict[tuple[str, str], float | None] = {}
    buckets = {"new": 0, "done": 0, "lost": 0, "in_flight": 0, "failed": 0, "in_doubt": 0, "cancelled": 0, "queued": 0}
    # Streamed: each batch of keys is looked up in the ledger as the expansion goes (a
    # 1,000,000-row manifest is never held). The ledger is opened at the first batch; a ledger
    # that cannot be opened is reported only after the manifest's own problems.
    with contextlib.ExitStack() as stack:
        led: Ledger | None = None
        ledger_error: BatchgenError | None = None
        compare = isinstance(ledger, Ledger) or _ledger_exists(ledger)
        batch: list[str] = []
        pending: list[tuple[str, str, str, str]] = []

        def classify() -> None:
            nonlocal led, ledger_error, compare
            if compare and led is None:
                try:
                    led = stack.enter_context(open_ledger(ledger, readonly=True))
                except BatchgenError as e:
                    ledger_error, compare = e, False
            known = led.states_by_key(batch) if led is not None else {}
            for k in batch:
                buckets[_bucket(known.get(k))] += 1
            rows.extend((k, n, src, out, known.get(k)) for k, n, src, out in pending)
            batch.clear()
            pending.clear()

        for job in m.expand():
            batch.append(job.key)
            if explain:
                pending.append((job.key, job.name, job.source, job.output))
            group = (job.model, str(job.request.get("resolution", "-")))
            jobs_by[group] += 1
            secs, est = costs.of(job.request)
            seconds[group] += secs
            prev = credits.get(group, 0.0)
            credits[group] = None if est is None or prev is None else prev + est
            if len(batch) >= 2000:
                classify()
        m.check()
        classify()
        if ledger_error is not None:
            raise ledger_error
    per: list[dict[str, Any]] = [
        {"model": mo, "resolution": r, "jobs": jobs_by[(mo, r)], "seconds": seconds[(mo, r)],
         "credits_estimated": None if credits[(mo, r)] is None else round(credits[(mo, r)] or 0.0, 4)}
        for (mo, r) in sorted(jobs_by)]
    total = sum(p["credits_estimated"] or 0.0 for p in per)
    doc: dict[str, Any] = {
        "manifest": str(manifest), "jobs": sum(buckets.values()), "states": buckets, "video": per,
        "to_submit": buckets["new"] + buckets["queued"], "credits_estimated_total": round(total, 4),
        "credits_unit": table.unit, "prices": table.source, "warnings": list(m.warnings)}
    if explain:
        doc["explain"] = [{"key": short_key(k), "name": n, "row": src, "output": out, "action": a, "reason": r}
                          for k, n, src, out, j in rows for a, r in [why(j)]]
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
         prices: PriceTable | None = None, catalog: Catalog | None = None) -> dict[str, Any]:
    """Compare ``manifest`` with what the ledger last ran for it (the jobs its path expanded to
    when last recorded): jobs added, removed, changed (matched by output path, then name; the
    request fields that changed) and unchanged (how many of them are done), with estimated
    credits: the last expansion's total, this one's, the delta, and tonight's spend (the jobs a
    plain run would submit: new or queued). Sends nothing, records nothing."""
    table = prices or PriceTable.load()
    m = Manifest(manifest, catalog)
    table.catalog = m.catalog
    new = list(m.expand())
    m.check()
    path = str(m.path.resolve())
    old: list[JobRow] | None = None
    known: dict[str, dict[str, Any]] = {}
    last_run: dict[str, Any] | None = None
    if isinstance(ledger, Ledger) or _ledger_exists(ledger):
        with open_ledger(ledger, readonly=True) as led:
            old = led.manifest_members(path)
            known = led.states_by_key([j.key for j in new])
            last_run = led.last_run_of(path)
    old = old or []
    new_keys = {j.key for j in new}
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
    for j in new:
        credits = est(j.request)
        state = known.get(j.key, {})
        if state.get("state") in (None, S.QUEUED):  # a run would pay for it (not failed, in doubt, cancelled)
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
    return {
        "manifest": str(manifest), "last_run": last_run, "known": bool(old),
        "added": added, "removed": removed, "changed": changed, "unchanged": unchanged,
        "unchanged_done": unchanged_done,
        "credits": {"last": round(last_total, 4), "now": round(new_total, 4), "delta": round(new_total - last_total, 4),
                    "tonight": round(tonight, 4), "unpriced_jobs": unpriced, "unit": table.unit},
        "warnings": list(m.warnings)}


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


def catalog(models_file: str | Path | None = None) -> Catalog:
    """The shipped model catalog, with a user's models file (``--models``) added on top.
    Raises ``DataFileError`` with every problem of the file."""
    from .datafiles import read_models
    from .specs import SHIPPED

    if models_file is None:
        return SHIPPED
    return SHIPPED.extended(read_models(models_file), str(models_file))


def models(cat: Catalog | None = None) -> list[dict[str, Any]]:
    """The catalog as data: each model with its fields (type, default, allowed values), rules,
    how long its output is, whether it promises audio, and where it came from."""
    cat = cat or catalog()
    return [_model_doc(spec) for spec in sorted(cat.models.values(), key=lambda s: s.name)]


def _model_doc(spec: ModelSpec) -> dict[str, Any]:
    fields = []
    for name, f in spec.fields.items():
        allowed = (list(f.choices) if f.choices else f"{f.min}-{f.max}" if f.min is not None or f.max is not None
                   else None)
        if f.kind == "urls" or f.kind == "list":
            allowed = f"{f.min or 0}-{f.max} items" if f.max is not None else None
        fields.append({"name": name, "type": f.kind, "required": f.required, "default": f.default,
                       "allowed": allowed, "auto": f.auto, "max_len": f.max_len})
    rules = []
    for r in spec.rules:
        if r.count:
            rules.append(", ".join(f"{k}: {lo}-{hi} items" for k, lo, hi in r.count)
                         + " when " + ", ".join(f"{k}={v}" for k, v in r.when))
        for k, values in r.allowed:
            cond = (" when " + ", ".join(f"{w}={_show(v)}" for w, v in r.when) if r.when
                    else f" when {r.when_set} is set" if r.when_set else "")
            rules.append(f"{k}: one of {', '.join(_show(v) for v in values)}{cond}" + (" (warning)" if r.warn else ""))
        if r.required:
            rules.append(f"{', '.join(r.required)} required when " + ", ".join(f"{w}={_show(v)}" for w, v in r.when))
        if r.one_of:
            rules.append("exactly one of " + ", ".join(r.one_of))
        if r.at_most_one:
            rules.append("at most one of " + ", ".join(r.at_most_one))
        if r.total:
            rules.append(f"{' + '.join(r.total)} ≤ {r.max} items" + (" (warning)" if r.warn else ""))
        if r.if_set:
            rules.append(f"{r.if_set} needs {' or '.join(r.requires_any)}")
    rules += [f"{marker}N names an item of {field}" for marker, field in spec.refs]
    return {"model": spec.name, "fields": fields, "rules": rules,
            "output_seconds": spec.output_seconds, "audio": spec.audio, "open": spec.open, "doc": spec.doc,
            "sources": list(spec.sources), "read_on": spec.read_on}


def _show(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


def _ledger_exists(ledger: str | None) -> bool:
    """Whether plan/diff compare with a ledger: always when one is named (``--ledger``: a
    missing one is then an error, not an empty ledger); the default or BATCHGEN_LEDGER's only
    when it exists (planning before the first run)."""
    if ledger is not None:
        return True
    url = ledger_url(ledger)
    return not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists()


_LOST = ("missing", "changed")  # what `verify` recorded of a done clip's local file (media.MISSING/CHANGED)


def why(j: dict[str, Any] | None) -> tuple[str, str]:
    """What ``run`` would do with a job in this ledger state, and why (the plan's dry-run reasons)."""
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
        if j["error_code"] == "result_expired":
            return "hold", ("failed (result_expired): its paid result expired undownloaded; `run --retry-failed` "
                            "renders it again (a new paid task)")
        if j["retryable"]:
            return "hold", f"failed ({j['error_code']}), retryable: resubmitted (a new paid task) only with --retry-failed"
        return "hold", f"failed ({j['error_code']}): change the request to try again"
    return "skip", f"{s} by an operator"


# ---------------------------------------------------------------------------------- status
def _brief(j: JobRow) -> dict[str, Any]:
    return {"id": j["id"], "key": short_key(j["key"]), "name": j["name"], "state": j["state"],
            "task_id": j["task_id"], "error": j["error_code"]}


def status(ledger: str | Ledger | None = None, *, prices: PriceTable | None = None, expiring_within_h: float = 6.0,
           runs: int = 10) -> dict[str, Any]:
    """Runs with per-state counts (and, on PostgreSQL, each worker's heartbeat and held jobs),
    the oldest unfinished jobs, in-doubt jobs with the credits at risk, results whose 24 h URL
    expires within ``expiring_within_h`` hours undownloaded, clips not as asked, and (with
    --deliver) how many clips are in object storage and which ones a run could not deliver."""
    table = prices or PriceTable.load()
    with open_ledger(ledger, readonly=True) as led:
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
    now = time.time()
    at_risk = [dict(_brief(j), credits_at_risk=table.estimate(json.loads(j["request"]))) for j in doubt]
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
                  "heartbeat_age_s": r["heartbeat_age_s"], "held": r["held"]}
                 for r in runs_],
        "oldest_unfinished": [dict(_brief(j), age_s=round(now - (j["submitted_at"] or j["created_at"])))
                              for j in oldest],
        "in_doubt": at_risk,
        "credits_at_risk": round(sum(x["credits_at_risk"] or 0 for x in at_risk), 4),
        "expiring": [dict(_brief(j), expires_in_s=round((j["result_at"] or now) + RESULT_TTL - now))
                     for j in expiring],
        "verified": verified,
        # finished clips by their latest review verdict (batchgen review); pending: none yet
        "review": review,
        "not_as_asked": [dict(_brief(j), verify=j["verify"], detail=j["verify_detail"], output_path=j["output_path"])
                         for j in wrong],
        # --deliver: clips in the store, and those a run could not deliver (the next run will)
        "delivered": delivery["delivered"],
        "undelivered": delivery["undelivered"],
        "not_delivered": [dict(_brief(j), error=j["delivery_error"] or "not attempted yet", destination=j["deliver_to"],
                               output_path=j["output_path"]) for j in undelivered],
    }


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


# ---------------------------------------------------------------------------------- export / report
def _rows(led: Ledger, run_id: int | None, manifest: str | Path | None) -> Iterator[JobRow]:
    """``iter_export`` limited to one run and/or one manifest (its recorded membership, see
    ``Scope``), each row carrying ``manifest``: the manifest of the run that recorded it last."""
    path = None if manifest is None else str(Path(manifest).resolve())
    if path is not None and not led.knows_manifest(path):
        raise UsageError(f"{manifest}: no run of this manifest is recorded in {led}")
    manifests: dict[int, str | None] = {}
    for j in led.iter_export(run_id, manifest=path, review=True):
        rid = j["run_id"]
        if rid not in manifests:
            r = led.run(rid)
            manifests[rid] = r["manifest"] if r else None
        # iter_export yields a fresh dict per row: the extra key rides along to to_record/render.
        cast(dict[str, Any], j)["manifest"] = manifests[rid]
        yield j


def export(ledger: str | Ledger | None = None, output: Path | IO[str] | None = None, *, run_id: int | None = None,
           fmt: Literal["csv", "json"] = "csv", raw: bool = False, manifest: str | Path | None = None) -> int:
    """Write one row per job (or run ``run_id``'s, or ``manifest``'s), by run and in manifest order within a run, to
    ``output`` (a path, written atomically, or an open text stream); returns the number of rows.
    CSV cells a spreadsheet would run as formulas get a leading apostrophe unless ``raw``."""
    writer: Callable[[Any, IO[str]], int] = (
        write_json if fmt == "json" else functools.partial(write_csv, raw=raw))
    if isinstance(output, Path):
        # Refused before the ledger is read: a device, FIFO or folder is never replaced.
        files.ensure_output_target(output, what="the export")
    with open_ledger(ledger, readonly=True) as led:
        rows = _rows(led, run_id, manifest)
        if output is None or not isinstance(output, Path):
            return writer(rows, output or sys.stdout)
        with files.atomic_output(output, what="the export", allow_stdout=True) as f:
            return writer(rows, f)


def results(ledger: str | Ledger | None = None, *, run_id: int | None = None,
            manifest: str | Path | None = None) -> Iterator[dict[str, Any]]:
    """One record per job (or run ``run_id``'s, or ``manifest``'s), by run and in manifest order within a run: the rows
    ``export --json`` writes (name, state, task id, output path, sha256, credits, error, …), streamed."""
    with open_ledger(ledger, readonly=True) as led:
        for j in _rows(led, run_id, manifest):
            yield to_record(j)


def report(ledger: str | Ledger | None = None, output: Path = Path("report.html"), *, run_id: int | None = None,
           title: str = "batchgen report", compare: str | None = None,
           manifest: str | Path | None = None) -> dict[str, Any]:
    """Write the self-contained HTML report (``compare``: open it in the comparison view by that
    field — a matrix field, ``model`` or ``take``; ``run_id``/``manifest``: only those jobs);
    returns the summary figures it shows."""
    from .report import render

    with open_ledger(ledger, readonly=True) as led:
        whole = run_id is None and manifest is None
        return render(_rows(led, run_id, manifest), output, title=title, run=led.run(run_id), compare=compare,
                      delivery=led.delivery_counts() if whole else None,
                      scope=None if manifest is None else str(Path(manifest).resolve()))


def verify(ledger: str | Ledger | None = None, *, run_id: int | None = None, workers: int | None = None,
           pictures: bool = True, catalog: Catalog | None = None) -> dict[str, Any]:
    """Re-check every delivered clip (or run ``run_id``'s): missing, changed since it was
    delivered (size or sha256), or read again and compared with its request; the outcome,
    measurements and pictures are recorded. Returns counts per outcome and the clips that are
    not what was asked."""
    from . import media

    from .backlog import verify_rows

    with open_ledger(ledger, migrate=False) as led:
        done = [j for j in led.iter_export(run_id) if j["state"] == S.DONE and j["output_path"]]
        # Removed on purpose once delivered (run --prune-local): the store holds them, not this disk.
        rows = [j for j in done if not j["pruned_at"]]
        counts, wrong = verify_rows(led, rows, workers=workers, pictures=pictures, catalog=catalog)
    return {"checked": len(rows), "counts": dict(counts), "not_as_asked": wrong, "pruned": len(done) - len(rows)}


# ---------------------------------------------------------------------------------- deliver / recover
def deliver(ledger: str | Ledger | None = None, *, to: str | None = None, manifest: str | Path | None = None,
            endpoint: str | None = None, prune_local: bool = False, verify: bool = True,
            catalog: Catalog | None = None, log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Deliver every done clip that a manifest asked to deliver and that its store does not hold
    yet, from the local files (nothing is rendered or fetched again). ``to``: deliver there the
    clips of ``manifest`` (its jobs when it was last run), or of the whole ledger, that are not
    delivered. Raises ``DeliveryError`` (exit 8) when a destination refuses before any upload."""
    from . import backlog
    from .deliver import open_store

    with open_ledger(ledger) as led:
        scope = None
        if manifest is not None:
            path = str(Path(manifest).resolve())
            if led.manifest_members(path) is None:
                raise UsageError(f"{manifest}: no run of this manifest is recorded in {led}")
            scope = Scope(path, "")
        out = backlog.deliver(led, to=to, scope=scope, prune_local=prune_local, verify=verify, catalog=catalog,
                              open_store=lambda url: open_store(url, endpoint_url=endpoint), log=log)
    return out.as_dict()


def lost(ledger: str | Ledger | None = None, *, prices: PriceTable | None = None) -> dict[str, Any]:
    """Done clips whose local file is gone or changed, by what getting each back costs:
    ``refetch`` (result URL still valid: free), ``rerender`` (expired: a new paid task, with
    the estimated ``credits``), ``in_store`` (delivered: the store holds it)."""
    from . import backlog

    with open_ledger(ledger) as led:
        found = backlog.lost_clips(led, prices)
    return _lost_doc(found)


def recover(ledger: str | Ledger | None = None, *, rerender: bool = False,
            prices: PriceTable | None = None) -> dict[str, Any]:
    """Get lost clips back: the next run fetches again those whose result URL is still valid
    (free) and, with ``rerender``, renders again those whose URL expired (paid). Returns what
    was found (as ``lost``) and how many jobs were sent back."""
    from . import backlog

    with open_ledger(ledger) as led:
        found = backlog.lost_clips(led, prices)
        done = backlog.recover(led, found, rerender=rerender)
    return {**_lost_doc(found), "sent_back": done}


def _lost_doc(found: Any) -> dict[str, Any]:
    def rows(js: list[JobRow]) -> list[dict[str, Any]]:
        return [dict(_brief(j), output_path=j["output_path"], verify=j["verify"], delivered_url=j["delivered_url"])
                for j in js]
    return {"refetch": rows(found.refetch), "rerender": rows(found.rerender), "in_store": rows(found.in_store),
            "credits": round(found.credits, 4)}


def upgrade(ledger: str | None = None) -> str:
    """Apply the ledger's migrations; returns its printable name. A SQLite ledger must exist
    (``LedgerMissing``: never an empty one made here); a PostgreSQL database gets batchgen's
    tables if it has none yet (setting up a cooperative ledger before its workers start)."""
    with open_ledger(ledger, create=not ledger_url(ledger).startswith("sqlite")) as led:
        return str(led)


__all__ = ["cancel", "catalog", "deliver", "diff", "export", "lost", "models", "recover", "open_ledger", "plan", "report", "resolve", "results", "status", "stop", "upgrade",
           "verify", "why"]
