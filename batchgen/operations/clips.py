"""The clips a ledger records, checked and brought back without a run: ``verify`` (read every
delivered clip again), ``draw_sheets`` (the contact sheets a run left), ``deliver`` (what a
store is owed), ``lost`` and ``recover`` (clips whose local file is gone or changed). The work
itself is ``backlog``'s (``sheets``' for the sheets); these open the ledger and shape the result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cost import PriceTable
from ..errors import UsageError
from ..jobs import JobRow, JobState
from ..ledger import Ledger, Scope
from ..specs import Catalog
from .ledgers import brief, open_ledger

S = JobState


def verify(ledger: str | Ledger | None = None, *, run_id: int | None = None, workers: int | None = None,
           pictures: bool = True, catalog: Catalog | None = None) -> dict[str, Any]:
    """Re-check every delivered clip (or run ``run_id``'s): missing, changed since it was
    delivered (size or sha256), or read again and compared with its request; the outcome,
    measurements and pictures are recorded. Returns counts per outcome and the clips that are
    not what was asked."""
    from ..backlog import verify_rows

    with open_ledger(ledger, migrate=False) as led:
        done = [j for j in led.iter_export(run_id) if j["state"] == S.DONE and j["output_path"]]
        # Removed on purpose once delivered (run --prune-local): the store holds them, not this disk.
        rows = [j for j in done if not j["pruned_at"]]
        counts, wrong = verify_rows(led, rows, workers=workers, pictures=pictures, catalog=catalog)
    return {"checked": len(rows), "counts": dict(counts), "not_as_asked": wrong, "pruned": len(done) - len(rows)}


def draw_sheets(ledger: str | Ledger | None = None, *, run_id: int | None = None, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Draw the contact sheets a run's pictures lane left (of run ``run_id``, or every run's),
    checking no clip again; each recorded once drawn. ``progress(done, of)`` after each.
    Returns ``{"left", "drawn", "failed"}``; a Ctrl-C records the sheets drawn so far."""
    from ..sheets import draw_left

    with open_ledger(ledger, migrate=False) as led:
        return draw_left(led, run_id=run_id, workers=workers, progress=progress)


# ---------------------------------------------------------------------------------- deliver / recover
def deliver(ledger: str | Ledger | None = None, *, to: str | None = None, manifest: str | Path | None = None,
            endpoint: str | None = None, prune_local: bool = False, verify: bool = True,
            catalog: Catalog | None = None, only: str | None = None,
            log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Deliver every done clip that a manifest asked to deliver and that its store does not hold
    yet, from the local files (nothing is rendered or fetched again). ``to``: deliver there the
    clips of ``manifest`` (its jobs when it was last run), or of the whole ledger, that are not
    delivered. Raises ``DeliveryError`` (exit 8) when a destination refuses before any upload."""
    from .. import backlog
    from ..deliver import open_store

    with open_ledger(ledger) as led:
        scope = None
        if manifest is not None:
            path = str(Path(manifest).resolve())
            if led.manifest_members(path) is None:
                raise UsageError(f"{manifest}: no run of this manifest is recorded in {led}")
            scope = Scope(path, "")
        out = backlog.deliver(led, to=to, scope=scope, prune_local=prune_local, verify=verify, catalog=catalog, only=only,
                              open_store=lambda url: open_store(url, endpoint_url=endpoint), log=log)
    return out.as_dict()


def lost(ledger: str | Ledger | None = None, *, prices: PriceTable | None = None) -> dict[str, Any]:
    """Done clips whose local file is gone or changed, by what getting each back costs:
    ``refetch`` (result URL still valid: free), ``rerender`` (expired: a new paid task, with
    the estimated ``credits``), ``in_store`` (delivered: the store holds it)."""
    from .. import backlog

    with open_ledger(ledger) as led:
        found = backlog.lost_clips(led, prices)
    return _lost_doc(found)


def recover(ledger: str | Ledger | None = None, *, rerender: bool = False,
            prices: PriceTable | None = None) -> dict[str, Any]:
    """Get lost clips back: the next run fetches again those whose result URL is still valid
    (free) and, with ``rerender``, renders again those whose URL expired (paid). Returns what
    was found (as ``lost``) and how many jobs were sent back."""
    from .. import backlog

    with open_ledger(ledger) as led:
        found = backlog.lost_clips(led, prices)
        done = backlog.recover(led, found, rerender=rerender)
    return {**_lost_doc(found), "sent_back": done}


def _lost_doc(found: Any) -> dict[str, Any]:
    def rows(js: list[JobRow]) -> list[dict[str, Any]]:
        return [dict(brief(j), output_path=j["output_path"], verify=j["verify"], delivered_url=j["delivered_url"])
                for j in js]
    return {"refetch": rows(found.refetch), "rerender": rows(found.rerender), "in_store": rows(found.in_store),
            "credits": round(found.credits, 4)}

