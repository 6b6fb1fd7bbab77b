"""What earlier runs left behind, finished without a manifest: ``batchgen deliver`` and
``batchgen recover``.

* ``deliver`` uploads every done clip that a manifest asked to deliver (``jobs.deliver_to``)
  and that the store does not hold yet — left by a store outage, a ``--no-deliver`` night, a
  kill between upload and record (found already there, recorded, not uploaded again) or a
  manifest edited since. Clips never verified are verified first, as a run would.
* ``recover`` gives back a done clip whose local file was deleted or changed: fetched again
  from its result URL while that is valid (free: the job goes back to ``completed`` and the
  next run downloads it), otherwise, only when asked (``rerender=True``), rendered again as a
  new paid task (the job goes back to ``queued``; the caller shows the count and credits first).

Both are synchronous (boto3 and PyAV work runs in small thread/process pools) and write the
ledger in short transactions; neither sends a create.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import deliver as store_mod
from . import media
from .cost import PriceTable
from .errors import DeliveryError
from .jobs import RESULT_TTL, JobRow, JobState, short_key
from .ledger import Ledger, Scope, Transition
from .specs import Catalog

S = JobState
# A URL this close to its expiry is not worth a free re-download: it may lapse mid-run.
_URL_MARGIN_S = 15 * 60.0


# ---------------------------------------------------------------------------------- deliver
@dataclass
class DeliveryOutcome:
    """What ``deliver`` did, per destination."""

    delivered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    already_there: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_verified: list[dict[str, Any]] = field(default_factory=list)  # missing/changed: `recover` first
    # In a store, and since sent for a retake or rejected: kept (nothing is deleted silently), listed.
    not_approved: list[dict[str, Any]] = field(default_factory=list)
    pruned: int = 0
    left: dict[str, int] = field(default_factory=dict)  # the ledger's counts afterwards

    def as_dict(self) -> dict[str, Any]:
        # delivered / undelivered: the ledger's counts afterwards (what status and run show)
        return {"delivered_now": dict(self.delivered), "already_there": dict(self.already_there),
                "failed": self.failed, "skipped": self.not_verified, "pruned": self.pruned,
                "delivered_not_approved": self.not_approved, **self.left}


def deliver(led: Ledger, *, to: str | None = None, scope: Scope | None = None,
            open_store: Callable[[str], store_mod.Store] | None = None, prune_local: bool = False,
            threads: int = 4, verify: bool = True, catalog: Catalog | None = None, only: str | None = None,
            log: Callable[[str], None] = lambda _m: None) -> DeliveryOutcome:
    """Deliver what the ledger owes. ``to``: first record the clips of ``scope`` (or of the whole
    ledger) as owed there. ``open_store``: builds the store for a destination URL (default
    ``deliver.open_store``); each destination is checked before its first upload
    (``DeliveryError`` with ``fatal`` when it refuses)."""
    opener = open_store or store_mod.open_store
    if to is not None:  # ``only="approved"``: owed there once approved (`--deliver-only approved`)
        led.owe_delivery(scope, str(store_mod.Destination.parse(to)), only)
    rows = led.undelivered(scope, verified_only=False)
    out = DeliveryOutcome()
    stores: dict[str, store_mod.Store] = {}

    def checked(dest: str) -> store_mod.Store:
        if dest not in stores:
            store = opener(dest)
            store.check()  # credentials and bucket, once per destination, before any upload
            stores[dest] = store
        return stores[dest]

    # Every destination is checked before the slow part (reading back clips never verified):
    # a refusing bucket is said at once, not after an hour of verification.
    for dest in sorted({j["deliver_to"] for j in rows
                        if j["deliver_to"] and j["verify"] not in (media.MISSING, media.CHANGED)}):
        checked(dest)
    if verify:
        fresh = [j for j in rows if j["verify"] is None]
        if fresh:
            log(f"verifying {len(fresh)} clip(s) never verified before delivering them")
            verify_rows(led, fresh, catalog=catalog)
            rows = led.undelivered(scope, verified_only=False)
    by_dest: dict[str, list[JobRow]] = defaultdict(list)
    for j in rows:
        if j["verify"] in (media.MISSING, media.CHANGED):
            out.not_verified.append(_brief(j, error=f"local file {j['verify']}: `batchgen recover` gets it back"))
        else:
            assert j["deliver_to"] is not None
            by_dest[j["deliver_to"]].append(j)
    for dest, todo in by_dest.items():
        store = checked(dest)
        log(f"delivering {len(todo)} clip(s) to {dest}")
        with ThreadPoolExecutor(max(1, threads), thread_name_prefix="deliver") as pool:
            futures = [(j, pool.submit(store_mod.deliver_clip, store, j["output"], Path(j["output_path"] or ""),
                                       j["sha256"] or "", (j["poster"], j["sheet"]))) for j in todo]
            for j, fut in futures:
                try:
                    stored = fut.result()
                except (DeliveryError, OSError) as e:
                    why = str(e) if isinstance(e, DeliveryError) else f"cannot read {j['output_path']}: {e}"
                    led.apply([Transition(j["id"], S.DONE, (S.DONE,), {"delivery_error": why[:1000]}, event=False)])
                    out.failed.append(_brief(j, error=why))
                    continue
                led.apply([Transition(j["id"], S.DONE, (S.DONE,), store_mod.recorded(stored),
                                      detail=store_mod.recorded_detail(stored) + " by batchgen deliver")])
                (out.delivered if stored.uploaded else out.already_there)[dest] += 1
                if prune_local:
                    store_mod.prune_local(j["output_path"], j["poster"], j["sheet"])
                    led.apply([Transition(j["id"], S.DONE, (S.DONE,), {"pruned_at": time.time()},
                                          detail="local copy removed after delivery")])
                    out.pruned += 1
    out.left = led.delivery_counts(scope)
    kept = led.delivered_not_approved(scope)
    verdicts = led.latest_decisions([j["id"] for j in kept])
    out.not_approved = [_brief(j, error=f"in the store at {j['delivered_url']}, since marked "
                                      f"{verdicts[j['id']]['verdict']}: kept; remove it from the store yourself "
                                      "if it must go") for j in kept if j["id"] in verdicts]
    return out


def verify_rows(led: Ledger, rows: list[JobRow], *, workers: int | None = None, pictures: bool = True,
                catalog: Catalog | None = None) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Check done clips' files in a process pool and record each outcome: missing, changed since
    downloaded (size or sha256), or read again and compared with its request. Returns the counts
    per outcome and the clips that are not what was asked."""
    counts: dict[str, int] = defaultdict(int)
    wrong: list[dict[str, Any]] = []
    batch: list[Transition] = []
    with media.pool(workers) as pool:
        futures = []
        for j in rows:
            assert j["output_path"] is not None
            poster, sheet = media.picture_paths(j["output_path"], j["output"]) if pictures else (None, None)
            futures.append(pool.submit(media.check_file, j["output_path"], j["sha256"], j["bytes"], poster, sheet))
        for j, fut in zip(rows, futures):
            m = fut.result()
            if "gone" in m:
                outcome, diffs = m["gone"], [m["detail"]]
                values: dict[str, Any] = {"verify": outcome, "verify_detail": m["detail"], "verified_at": time.time()}
            else:
                outcome, diffs = media.compare(m, json.loads(j["request"]), j["model"], catalog)
                values = media.record(m, outcome, diffs)
            counts[outcome] += 1
            if outcome != media.OK:
                wrong.append(_brief(j, verify=outcome, detail="; ".join(diffs), output_path=j["output_path"]))
            batch.append(Transition(j["id"], S.DONE, (S.DONE,), values, event=outcome != j["verify"],
                                    detail=f"batchgen verify: {outcome}"))
            if len(batch) >= 500:
                led.apply(batch)
                batch = []
    if batch:
        led.apply(batch)
    return dict(counts), wrong


# ---------------------------------------------------------------------------------- recover
@dataclass
class Lost:
    """Done clips whose local file is gone or changed, by what getting them back costs."""

    refetch: list[JobRow] = field(default_factory=list)  # result URL still valid: free
    rerender: list[JobRow] = field(default_factory=list)  # URL expired: a new paid task
    in_store: list[JobRow] = field(default_factory=list)  # delivered: the store holds the clip
    credits: float = 0.0  # estimated credits of re-rendering ``rerender``
    found_now: dict[int, str] = field(default_factory=dict)  # job id → missing/changed, seen by this look


def lost_clips(led: Ledger, prices: PriceTable | None = None, *, now: float | None = None) -> Lost:
    """Done clips whose file ``verify`` found missing or changed, or that is not on disk now
    (never a clip pruned on purpose after its delivery)."""
    now = time.time() if now is None else now
    table = prices or PriceTable.load()
    found = Lost()
    for j in led.lost_candidates():
        path = Path(j["output_path"] or "")
        if j["verify"] not in (media.MISSING, media.CHANGED):
            try:
                if path.stat().st_size == j["bytes"]:
                    continue
                found.found_now[j["id"]] = media.CHANGED
            except OSError:
                found.found_now[j["id"]] = media.MISSING  # gone (or unreadable)
        if j["result_url"] and j["result_at"] and j["result_at"] + RESULT_TTL - now > _URL_MARGIN_S:
            found.refetch.append(j)
        elif j["delivered_url"]:
            found.in_store.append(j)
        else:
            found.rerender.append(j)
            found.credits += table.estimate(json.loads(j["request"])) or 0.0
    return found


def recover(led: Ledger, lost: Lost, *, rerender: bool) -> dict[str, int]:
    """Send lost clips back to be fetched again (free) and, with ``rerender``, the expired ones
    to be rendered again (paid, by the next run). The files are written by the next run."""
    reset = {"verify": None, "verify_detail": None, "verified_at": None, "error_code": None, "error_message": None}
    ts = [Transition(j["id"], S.COMPLETED, (S.DONE,), dict(reset), detail="batchgen recover: fetch the result again")
          for j in lost.refetch]
    if rerender:
        ts += [Transition(j["id"], S.QUEUED, (S.DONE,), {**reset, "task_id": None, "retryable": None,
                                                          "result_url": None, "result_at": None},
                          detail="batchgen recover --rerender: the result URL expired; render again (paid)")
               for j in lost.rerender]
    applied = led.apply(ts) if ts else []
    # What stays lost is recorded as `verify` would (plan, run and status then say so).
    sent = {t.job_id for t in ts}
    seen = [Transition(i, S.DONE, (S.DONE,), {"verify": outcome, "verified_at": time.time(),
                                              "verify_detail": f"batchgen recover: the local file is {outcome}"},
                       detail=f"batchgen recover: {outcome}") for i, outcome in lost.found_now.items() if i not in sent]
    if seen:
        led.apply(seen)
    refetch = sum(1 for ok in applied[:len(lost.refetch)] if ok)
    return {"refetch": refetch, "rerender": sum(1 for ok in applied[len(lost.refetch):] if ok)}


def _brief(j: JobRow, **extra: Any) -> dict[str, Any]:
    return {"id": j["id"], "key": short_key(j["key"]), "name": j["name"], **extra}


__all__ = ["DeliveryOutcome", "Lost", "deliver", "lost_clips", "recover", "verify_rows"]
