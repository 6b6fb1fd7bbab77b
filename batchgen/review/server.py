"""``batchgen review``'s web server: the dailies page (static files) and a small JSON API over
the ledger (``clips.ClipIndex`` reads, ``Ledger.decide`` writes), on aiohttp.

Who gets in: the server binds 127.0.0.1 unless told otherwise, and every API and media request
carries a random token (printed once, inside the URL's fragment, which browsers never send to
a server or in a Referer). A request that changes something is a POST with the token in a
header and a JSON body: another page the reviewer has open can neither read the data nor forge
a decision (a cross-origin request with that header needs a CORS preflight this server never
grants). Files are served only from inside the output folder after symlinks are resolved; the
request names a job by id, never a path. The API key is never read here."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from ..deliver import Destination, S3Store, check_endpoint
from ..errors import BatchgenError, DecisionChanged
from ..jobs import Verdict
from ..specs import SHIPPED, Catalog
from ..ledger import KEEP, Change, Decision, Keep, Ledger
from .clips import ClipIndex, inside
from .decide import pick_changes
from .pictures import Sheets
from .retake import changed_request

NOTE_CHARS = 4000
MAX_CHANGES = 500
PRESIGN_S = 300  # a presigned clip URL lives five minutes: long enough to play, short enough to leak little
_STATIC = {"review.js": "text/javascript", "review.css": "text/css"}
_HEADERS = {
    # The page's own script and style only; media may come from the store (a presigned URL).
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "media-src 'self' http: https:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """A request this server answers with an error status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReviewServer:
    """The page and its API for one ``ClipIndex``; ``start`` returns the URL to open."""

    def __init__(self, ledger: Ledger, index: ClipIndex, *, reviewer: str, endpoint_url: str | None = None,
                 catalog: Catalog = SHIPPED) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.index = index
        self.reviewer = reviewer
        self.endpoint = check_endpoint(endpoint_url)
        self.token = secrets.token_urlsafe(24)
        self._stores: dict[str, S3Store] = {}
        self.sheets = Sheets(ledger, index.out)
        self._runner: web.AppRunner | None = None
        # A states read and a decision each read the ledger and patch the index as one step: a
        # read taken before a decision must not patch the index after it (the counts would
        # show the older verdict until the next reload).
        self._patching = asyncio.Lock()
        self.app = web.Application(client_max_size=256 * 1024, middlewares=[self._guard])
        self.app.router.add_get("/", self._page)
        self.app.router.add_get("/static/{name}", self._static)
        self.app.router.add_get("/favicon.ico", self._no_icon)
        self.app.router.add_get("/api/clips", self._clips)
        self.app.router.add_get("/api/states", self._states)
        self.app.router.add_post("/api/decide", self._decide)
        self.app.router.add_get("/media/{job:[0-9]+}/{kind:clip|poster|sheet}", self._media)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        bound = int(sock.getsockname()[1])
        shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{shown if ':' not in shown else f'[{shown}]'}:{bound}/#token={self.token}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self.sheets.close)

    # -- guard: the token, the headers, errors as JSON -------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse
        try:
            if request.path.startswith(("/api/", "/media/")):
                given = request.headers.get("X-Review-Token") or request.query.get("t") or ""
                if not hmac.compare_digest(given.encode(), self.token.encode()):
                    raise Refused(403, "missing or wrong review token: open the URL `batchgen review` printed")
                if request.method == "POST" and (request.content_type != "application/json"
                                                 or "X-Review-Token" not in request.headers):
                    raise Refused(403, "a change is a JSON POST carrying the token in X-Review-Token")
            response = await handler(request)
        except Refused as e:
            response = web.json_response({"error": str(e)}, status=e.status)
        except BatchgenError as e:
            response = web.json_response({"error": str(e)}, status=500)
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    # -- the page ---------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=_asset("page.html"), content_type="text/html")

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise Refused(404, "no such file")
        return web.Response(text=_asset(name), content_type=_STATIC[name])

    # -- the API ------------------------------------------------------------------------------
    async def _clips(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            offset, limit = max(0, int(q.get("offset", 0))), min(100, max(1, int(q.get("limit", 20))))
        except ValueError:
            raise Refused(400, "offset and limit are numbers") from None
        doc = await asyncio.to_thread(self.index.page, verdict=q.get("verdict", ""), verify=q.get("verify", ""),
                                      model=q.get("model", ""), text=q.get("q", "")[:200], offset=offset, limit=limit)
        doc["reviewer"] = self.reviewer
        return web.json_response(doc)

    async def _states(self, request: web.Request) -> web.Response:
        """The decisions of the clips a page shows (``ids``), read from the ledger now: what
        other reviewers decided since the page loaded."""
        try:
            ids = [int(i) for i in request.query.get("ids", "").split(",") if i][:500]
        except ValueError:
            raise Refused(400, "ids: job ids separated by commas") from None
        ids = [i for i in ids if self.index.clip(i) is not None]
        async with self._patching:
            latest = await asyncio.to_thread(self.ledger.latest_decisions, ids)
            self.index.updated(list(latest.values()))
        states = {str(i): _state(latest.get(i)) for i in ids}
        return web.json_response({"clips": states, "counts": await asyncio.to_thread(self.index.counts)})

    async def _decide(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        raw = body.get("changes") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_CHANGES:
            raise Refused(400, f"expected {{\"changes\": [...]}} with 1 to {MAX_CHANGES} changes")
        who = body.get("reviewer") or self.reviewer
        if not isinstance(who, str) or len(who) > 100:
            raise Refused(400, "reviewer: a name of at most 100 characters")
        changes, diffs = await asyncio.to_thread(self._changes, raw)
        if body.get("dry") is True:  # a retake's change checked and shown as a diff, not recorded
            return web.json_response({"diffs": diffs})
        ids = list(dict.fromkeys(c.job_id for c in changes))
        async with self._patching:
            try:
                written = await asyncio.to_thread(self.ledger.decide, changes, who)
            except DecisionChanged as e:
                raise Refused(409, str(e)) from None
            latest = await asyncio.to_thread(self.ledger.latest_decisions, ids)
            self.index.updated(list(latest.values()))
        clips = {str(i): _state(d) for i, d in latest.items()}
        return web.json_response({"written": len(written), "clips": clips, "counts": self.index.counts(),
                                  "diffs": diffs})

    def _changes(self, raw: list[Any]) -> tuple[list[Change], dict[str, list[dict[str, Any]]]]:
        """The page's changes as ledger ``Change``s, each checked: a clip of this review, a
        known verdict, a note of bounded length, a retake's changed request fields valid as a
        manifest row (``Refused`` with every problem, each naming its field). A pick makes the
        take its shot's pick. Also returns each retake change's diff, by job id."""
        out: list[Change] = []
        diffs: dict[str, list[dict[str, Any]]] = {}
        for ch in raw:
            if not isinstance(ch, dict) or not isinstance(ch.get("job"), int):
                raise Refused(400, "each change names its clip: {\"job\": ID, …}")
            clip = self.index.clip(ch["job"])
            if clip is None:
                raise Refused(404, f"job {ch['job']} is not a finished clip of this review")
            verdict: Verdict | None | Keep = KEEP
            if "verdict" in ch:
                if ch["verdict"] is not None and ch["verdict"] not in {v.value for v in Verdict}:
                    raise Refused(400, f"verdict {ch['verdict']!r}: approve, retake, reject or null (pending)")
                verdict = None if ch["verdict"] is None else Verdict(ch["verdict"])
            note: str | None | Keep = KEEP
            if "note" in ch:
                if ch["note"] is not None and (not isinstance(ch["note"], str) or len(ch["note"]) > NOTE_CHARS):
                    raise Refused(400, f"note: text of at most {NOTE_CHARS} characters")
                note = ch["note"]
            pick: bool | Keep = KEEP
            if "pick" in ch:
                if not isinstance(ch["pick"], bool):
                    raise Refused(400, "pick: true or false")
                pick = ch["pick"]
            expect: int | None | Keep = KEEP
            if "expect" in ch:  # an undo: only over the decision it undoes
                if ch["expect"] is not None and (not isinstance(ch["expect"], int) or isinstance(ch["expect"], bool)):
                    raise Refused(400, "expect: the id of the clip's latest decision, or null")
                expect = ch["expect"]
            fields: str | None | Keep = KEEP
            if "changes" in ch:
                fields, diffs[str(clip.id)] = self._retake_change(clip.id, ch["changes"])
                verdict = Verdict.RETAKE
            if pick is True and verdict is KEEP:
                out.extend(pick_changes(self.ledger, clip.id, clip.takes))
                if note is not KEEP:
                    out.append(Change(clip.id, note=note))
                continue
            if pick is KEEP and verdict is not KEEP and verdict != Verdict.APPROVE:
                pick = False  # no longer approved: no longer the pick
            out.append(Change(clip.id, verdict=verdict, pick=pick, note=note, changes=fields, expect=expect))
        return out, diffs

    def _retake_change(self, job_id: int, raw: Any) -> tuple[str | None, list[dict[str, Any]]]:
        """A retake's changed request fields (``{}``: the same request again), checked like a
        manifest row against the catalog; the JSON recorded and the diff shown."""
        if not isinstance(raw, dict) or len(json.dumps(raw)) > 64 * 1024:
            raise Refused(400, "changes: an object of request fields (at most 64 KiB)")
        if not raw:
            return None, []
        original = self.ledger.job(job_id)
        if original is None:
            raise Refused(404, f"job {job_id} is not in the ledger")
        _, diff, problems = changed_request(original, raw, self.catalog)
        if problems:
            raise Refused(400, "; ".join(str(p) for p in problems))
        return json.dumps(raw, sort_keys=True, ensure_ascii=False), [{"field": f, "was": a, "now": b} for f, a, b in diff]

    # -- media ----------------------------------------------------------------------------------
    async def _media(self, request: web.Request) -> web.StreamResponse:
        clip = await asyncio.to_thread(self.index.clip, int(request.match_info["job"]))
        if clip is None:
            raise Refused(404, "not a finished clip of this review")
        kind = request.match_info["kind"]
        if kind == "sheet":  # drawn now if the run left it: the request waits for it (``pictures``)
            sheet = await self.sheets.get(clip)
            if sheet is None:
                raise Refused(404, "no contact sheet for this clip (no pictures, or its file is not here)")
            return web.FileResponse(sheet, headers={"Content-Type": "image/jpeg"})
        local = await asyncio.to_thread(inside, clip.path if kind == "clip" else clip.poster, self.index.out)
        if local is not None:
            return web.FileResponse(local, headers={"Content-Type": "video/mp4" if kind == "clip" else "image/jpeg"})
        if kind == "clip" and clip.delivered:
            url = await asyncio.to_thread(self._presign, clip.delivered)
            raise web.HTTPFound(url)
        raise Refused(404, "this clip is nowhere: not in the output folder, not delivered" if kind == "clip"
                      else "no poster frame here")

    def _presign(self, delivered: str) -> str:
        bucket = delivered.removeprefix("s3://").partition("/")[0]
        store = self._stores.get(bucket)
        if store is None:
            store = self._stores[bucket] = S3Store(Destination(bucket, ""), endpoint_url=self.endpoint)
        return store.presign(delivered, PRESIGN_S)


def _state(d: Decision | None) -> dict[str, Any]:
    """A clip's decision as the page reads it (none: pending)."""
    if d is None:
        return {"review": None, "note": None, "reviewer": None, "pick": False, "decision": None}
    return {"review": d["verdict"], "note": d["note"], "reviewer": d["reviewer"], "pick": d["pick"], "decision": d["id"]}


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


async def serve(server: ReviewServer, host: str, port: int, ready: Any = None) -> None:
    """Serve until cancelled (Ctrl-C); ``ready(url)`` is called once it listens."""
    url = await server.start(host, port)
    try:
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
    finally:
        await server.stop()


def out_dir_of(ledger: Ledger, run_id: int | None) -> Path:
    """The output folder the run recorded (``--out``), where its clips are served from."""
    run = ledger.run(run_id)
    try:
        opts = json.loads(run["options"]) if run and isinstance(run.get("options"), str) else (run or {}).get("options")
    except ValueError:
        opts = None
    return Path(str((opts or {}).get("out") or "out"))
