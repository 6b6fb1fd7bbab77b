"""The clips a review looks at, grouped into shots: read through the ledger (one streamed
read, cached a few seconds, patched in place by this server's own decisions), filtered and
paged for the page. A shot is the job's request without ``take`` — or, with ``by``, without
that matrix field too (``--by model``: the same shot on every model), so its takes sit side by
side."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import JobRow, JobState, Verdict, canonical_json, short_key
from ..ledger import Decision, Ledger

PROMPT_CHARS = 2000  # a prompt longer than this is cut in the page (the export has it whole)
VERDICTS = ("pending", *(v.value for v in Verdict))


@dataclass(frozen=True)
class Scope:
    """What a review covers: one run's clips (``run_id``) or a manifest's (``manifest``:
    its resolved path, the jobs it expanded to when last recorded)."""

    run_id: int | None = None
    manifest: str | None = None


@dataclass
class Clip:
    """One finished clip as the page shows it; ``path``/``poster``/``sheet`` stay on the server."""

    id: int
    shot: str
    doc: dict[str, Any]
    path: str | None
    poster: str | None
    delivered: str | None
    text: str = ""  # what the free-text filter searches, lower case
    sheet: str | None = None  # its contact sheet, when recorded (else drawn when the page asks: ``pictures``)
    output: str = ""  # its output name, which names its pictures
    takes: list[int] = field(default_factory=list)  # the job ids of its shot, in take order


def _take_order(take: str | None) -> tuple[int, str]:
    t = take or ""
    return (int(t), "") if t.isdigit() else (1 << 30, t)


def shot_of(j: JobRow, by: str | None) -> str:
    """The shot a job belongs to: its request (and model) without ``take``, and without the
    field ``by`` when asked. A short hash, for the page."""
    req = json.loads(j["request"])
    if by:
        req.pop(by, None)
    return hashlib.sha256(canonical_json(req).encode()).hexdigest()[:16]


class ClipIndex:
    """The finished clips of a ``Scope``, grouped into shots. ``clips()`` reads the ledger at
    most every ``ttl`` seconds (one short read: a run writing the same ledger is never held
    up), so the page sees clips that a run still in progress adds."""

    def __init__(self, ledger: Ledger, scope: Scope, out: Path, *, by: str | None = None, ttl: float = 3.0) -> None:
        self.ledger = ledger
        self.out = out
        self.scope = scope
        self.by = by
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._clips: dict[int, Clip] = {}
        self._order: list[int] = []  # clip ids, shot by shot in manifest order, takes in order

    def _load(self) -> None:
        clips: dict[int, Clip] = {}
        shots: dict[str, list[int]] = {}
        takes: dict[int, str | None] = {}
        retake_of: dict[int, int] = {}
        for j in self.ledger.iter_export(self.scope.run_id, manifest=self.scope.manifest, review=True):
            if j["state"] != JobState.DONE:
                continue
            req = json.loads(j["request"])
            prompt = req.pop("prompt", None)
            req.pop("model", None)
            shot = shot_of(j, self.by)
            doc = {"id": j["id"], "key": short_key(j["key"]), "name": j["name"], "take": j["take"], "model": j["model"],
                   "prompt": prompt if not isinstance(prompt, str) or len(prompt) <= PROMPT_CHARS
                   else prompt[: PROMPT_CHARS - 1] + "…",
                   "params": {k: v for k, v in req.items() if k != "reference_image_urls"},
                   "verify": j["verify"], "detail": j["verify_detail"], "duration": j["m_duration"],
                   "width": j["m_width"], "height": j["m_height"], "shot": shot, "retake_of": j["retake_of"],
                   # a contact sheet to show: drawn, or left by the run's pictures lane (a poster, no sheet)
                   "sheet": bool(j["sheet"] or j["poster"])}
            doc.update(_decision_doc(j.get("review"), j.get("review_note"), j.get("reviewer"), bool(j.get("pick"))))
            clips[j["id"]] = Clip(j["id"], shot, doc, j["output_path"], j["poster"], j["delivered_url"],
                                  " ".join(str(x) for x in (j["name"], prompt, j["key"], j["model"])).lower(),
                                  sheet=j["sheet"], output=j["output"])
            shots.setdefault(shot, []).append(j["id"])
            takes[j["id"]] = j["take"]
            if j["retake_of"] is not None:
                retake_of[j["id"]] = j["retake_of"]
        # A retake (`batchgen retake`) joins the shot of the clip it replaces, even when the
        # reviewer changed its request: it is that shot's next take.
        for i, c in list(clips.items()):
            of = retake_of.get(i)
            if of is not None and of in clips and clips[of].shot != c.shot:
                shots[c.shot].remove(i)
                if not shots[c.shot]:
                    del shots[c.shot]
                c.shot = c.doc["shot"] = clips[of].shot
                shots[c.shot].append(i)
        order: list[int] = []
        for ids in shots.values():
            ids.sort(key=lambda i: (_take_order(takes[i]), i))
            for n, i in enumerate(ids, 1):
                clips[i].takes = ids
                clips[i].doc["n"] = n  # its key in the shot: 1–9 make it the pick
            order.extend(ids)
        self._clips, self._order, self._at = clips, order, time.monotonic()

    def clips(self) -> tuple[dict[int, Clip], list[int]]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._load()
            return self._clips, self._order

    def updated(self, decisions: list[Decision]) -> None:
        """Patch the cached clips with decisions just recorded, so the next page shows them at once."""
        with self._lock:
            for d in decisions:
                c = self._clips.get(d["job_id"])
                if c is not None:
                    c.doc.update(_decision_doc(d["verdict"], d["note"], d["reviewer"], d["pick"]))

    def counts(self) -> dict[str, int]:
        clips, _ = self.clips()
        out = dict.fromkeys(VERDICTS, 0)
        for c in clips.values():
            out[c.doc["review"] or "pending"] += 1
        out["clips"] = len(clips)
        return out

    def page(self, *, verdict: str = "", verify: str = "", model: str = "", text: str = "",
             offset: int = 0, limit: int = 20) -> dict[str, Any]:
        """A page of shots holding at least one clip that matches the filters (each shot with
        all its takes, the matching ones marked), with the counts and the filters' choices."""
        clips, order = self.clips()
        text = text.strip().lower()
        shots: list[list[int]] = []
        matched: set[int] = set()
        seen: set[str] = set()
        for i in order:
            c = clips[i]
            d = c.doc
            if ((verdict and (d["review"] or "pending") != verdict) or (verify and (d["verify"] or "") != verify)
                    or (model and d["model"] != model) or (text and text not in c.text)):
                continue
            matched.add(i)
            if c.shot not in seen:
                seen.add(c.shot)
                shots.append(c.takes)
        page = shots[offset : offset + limit]
        out_shots = []
        for ids in page:
            takes = [dict(clips[i].doc, match=i in matched, where=self.where(clips[i])) for i in ids]
            out_shots.append({"shot": clips[ids[0]].shot, "takes": takes})
        return {"shots": out_shots, "offset": offset, "total_shots": len(shots), "matching_clips": len(matched),
                "counts": self.counts(), "models": sorted({c.doc["model"] for c in clips.values()}),
                "verify": sorted({c.doc["verify"] for c in clips.values() if c.doc["verify"]})}

    def clip(self, job_id: int) -> Clip | None:
        clips, _ = self.clips()
        return clips.get(job_id)

    def where(self, c: Clip) -> str:
        """``local`` (the file is here, under the output folder), ``store`` (delivered: played
        through a presigned URL) or ``nowhere``."""
        if inside(c.path, self.out) is not None:
            return "local"
        return "store" if c.delivered else "nowhere"


def _decision_doc(verdict: str | None, note: str | None, reviewer: str | None, pick: bool) -> dict[str, Any]:
    return {"review": verdict, "note": note, "reviewer": reviewer, "pick": pick}


def inside(path: str | None, root: Path) -> Path | None:
    """``path`` with its symlinks resolved, if that is a regular file under ``root`` (itself
    resolved); else None. The only way a file reaches the page."""
    if not path:
        return None
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root.resolve()) and real.is_file() else None
