"""The foxapi endpoints the simulator answers (reference: shared/reference/foxapi-video-api.md):
``POST /v1/videos/generations`` (create), ``GET /v1/tasks/{id}`` (poll), ``POST
/v1/files/upload/stream`` (upload) and the result files (``/files/{id}.mp4``, no auth, like a CDN).

``Routes`` turns requests into answers: the common front (latency, Bearer auth, rate limits,
injected 429s) and the documented error JSON are here; what a fault knob decides is asked of
``faults``, what a task shows of ``tasks``, a clip's bytes of ``media``, whether a body is
acceptable of ``catalog``. The simulator's own admin endpoints (``/_sim/...``) are in ``server``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
from dataclasses import asdict
from typing import Any

from aiohttp import BodyPartReader, web

from .catalog import SCHEMA, validate
from .config import SimConfig
from .faults import Counters, Faults, drop
from .media import clip, plan
from .tasks import FAIL_CODES, Book, Task, canonical_sha256


QUOTA_KEY = web.RequestKey("quota_key", str)  # the key an answer states the quota of


class Routes:
    """The API side of one simulator. ``rng`` is the simulator's one seeded generator (shared with
    ``faults``: a seed replays a run only if every draw comes from it in the same order);
    another API's delays are drawn from generators of their own, seeded from the same seed
    (``jitter``: a draw per request; ``waits``: the wait in ``pending``, a draw per create, so the
    same seed gives the same waits too): drawn from ``rng``, every request's jitter moved the
    render times of the tasks after it, so an API with habits rendered other tasks than the same
    seed without them (issue 31 part 4: makespan-habits and makespan-exact, compared as "the same
    night, another API", ran on two different draws of 400 render times, whose best possible
    packing on 40 slots differed by 1-3 %). ``base_url`` is set once the server listens (result
    and upload URLs name it)."""

    def __init__(self, config: SimConfig, rng: random.Random, counters: Counters, faults: Faults, book: Book) -> None:
        self.config = config
        self.rng = rng
        self.jitter = random.Random(f"jitter:{config.seed}")
        self.waits = random.Random(f"pending:{config.seed}")
        self.counters = counters
        self.faults = faults
        self.book = book
        self.base_url = ""
        self.started = time.monotonic()  # model_faults count from here

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/videos/generations", self.create)
        router.add_get("/v1/tasks/{task_id}", self.get_task)
        router.add_get("/files/{task_id}.mp4", self.file)
        router.add_post("/v1/files/upload/stream", self.upload)

    async def quota_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare``: every API answer past the key check states the quota, when
        the ``rate_headers`` knob asks for it."""
        key = request.get(QUOTA_KEY)
        if key is not None:
            response.headers.update(self.faults.quota_headers(key))

    def _render(self, kind: str, p: list[float]) -> float:
        """A render time drawn from a ``model_render`` distribution (the one seeded generator)."""
        if kind == "uniform":
            return self.rng.uniform(p[0], p[1])
        if kind == "lognormal":
            return p[0] * math.exp(self.rng.gauss(0.0, p[1]))
        return (p[1] if self.rng.random() < p[2] else p[0]) * self.rng.uniform(0.9, 1.1)

    def _fractional(self) -> bool:
        return self.config.render_max < 10  # sub-10 s renders: report fractional estimates

    def _error(self, status: int, message: str, type_: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        err: dict[str, Any] = {"message": message, "type": type_}
        if code:
            err["code"] = code
        self.counters.bump(self.counters.status, str(status))
        if status == 429:
            self.counters.bump(self.counters.throttled_per_second, str(int(time.time())))
        return web.json_response({"error": err}, status=status, headers=headers)

    async def _gate(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """Common front: latency, auth, rate limits, injected 429. Returns (key, error response)."""
        self.counters.requests += 1
        self.counters.bump(self.counters.per_second, str(int(time.time())))
        if self.config.latency:
            await self._delay("latency")
        if self.config.jitter:
            await asyncio.sleep(self.jitter.uniform(0.0, self.config.jitter))
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return None, self._error(401, "Missing API key", "authentication_error")
        key = auth[7:].strip()
        if self.config.api_key is not None and key != self.config.api_key:
            return None, self._error(401, "Invalid API key", "authentication_error")
        wait = self.faults.rate_limited(key)
        request[QUOTA_KEY] = key  # the answer states the quota (see quota_headers)
        if wait is not None:
            self.counters.bump(self.counters.faults, "rate_limit")
            return key, self._error(429, "Rate limit exceeded", "rate_limit_error",
                                    headers={"Retry-After": str(max(1, math.ceil(wait)))})
        left = self.faults.burst()
        if left is not None:
            self.counters.bump(self.counters.faults, "burst_429")
            return key, self._error(429, "Rate limit exceeded", "rate_limit_error",
                                    headers={"Retry-After": f"{max(0.1, left):.1f}"})
        if self.faults.chance(self.config.p429, "429"):
            return key, self._error(429, "Rate limit exceeded", "rate_limit_error",
                                    headers={"Retry-After": f"{self.config.retry_after:g}"})
        if self.faults.chance(self.config.p_slow, "slow"):
            await asyncio.sleep(self.config.slow_seconds)
        return key, None


    async def create(self, request: web.Request) -> web.StreamResponse:
        received = time.time()  # the create reached the API: what a freed slot's refill is timed to
        key, err = await self._gate(request)
        if err is not None:
            return err
        c = self.config
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "Malformed JSON body", "invalid_request_error")
        sha = canonical_sha256(body)
        if self.faults.chance(c.p_drop_before, "drop_before"):
            self.faults.log.append({"fault": "drop_before", "body_sha256": sha, "created": False})
            drop(request)
            return web.Response(status=500)
        if self.faults.chance(c.p5xx_before, "5xx_before"):
            status = self.rng.choice((500, 502, 503))
            self.counters.bump(self.counters.faults, f"5xx_before_{status}")
            if status != 503:  # 503 "no channel" is a clean refusal; 500/502 leave the client in doubt
                self.faults.log.append({"fault": f"{status}_before", "body_sha256": sha, "created": False})
            msg = "No available channel for this model" if status == 503 else "Upstream error"
            return self._error(status, msg, "service_unavailable_error" if status == 503 else "server_error")
        bad = validate(body)
        if bad is not None:
            return self._error(bad[0], bad[1], bad[2], bad[3])
        duration = body.get("duration") or SCHEMA[body["model"]].get("duration", (0, 0, 0, 6))[3] or 6
        if duration < 0:  # "auto"
            duration = 15
        credits = round(float(duration) * c.credits_per_second * (1.4 if body.get("resolution") == "720p" else 1.0), 2)
        if c.balance is not None and self.book.spent + credits > c.balance:
            return self._error(402, "Insufficient balance, please top up", "insufficient_quota")
        self.book.spent += credits
        dist = c.render_of(body["model"]) if c.model_render else None
        render = self.rng.uniform(c.render_min, c.render_max) if dist is None else self._render(*dist)
        r = self.rng.random()
        outcome, code = "completed", None
        if r < c.p_fail:
            outcome, code = "failed", self.rng.choice(FAIL_CODES)
            self.counters.bump(self.counters.faults, "task_failed")
        elif r < c.p_fail + c.p_cancel:
            outcome = "cancelled"
            self.counters.bump(self.counters.faults, "task_cancelled")
        broken = c.model_fault(body["model"], time.monotonic() - self.started) if c.model_faults else 0.0
        if outcome == "completed" and broken and (broken >= 1 or self.rng.random() < broken):
            outcome, code = "failed", c.model_fault_code
            self.counters.bump(self.counters.faults, "model_fault")
        t = Task(
            id=self.book.new_id(self.rng), model=body["model"], body_sha256=canonical_sha256(body), created=time.time(),
            render=render, estimate=render * self.rng.uniform(1 - c.estimate_noise, 1 + c.estimate_noise),
            outcome=outcome, fail_code=code, credits=credits, file_size=self.rng.randint(c.file_min, c.file_max),
            wait=c.pending_s * self.waits.uniform(0.5, 1.5) if c.pending_s else 0.0, received=received,
            **plan(body, c, self.faults))
        self.book.tasks[t.id] = t
        self.book.save({"task": asdict(t)})
        self.counters.creates_accepted += 1
        for knob, name in ((c.p500_after, "500_after"), (c.p_drop_after, "drop_after"), (c.p_malformed, "malformed_create")):
            if self.faults.chance(knob, name):
                self.faults.log.append({"fault": name, "body_sha256": sha, "created": True, "task_id": t.id})
                if name == "500_after":
                    return self._error(500, "Internal server error", "server_error")
                if name == "drop_after":
                    drop(request)
                    return web.Response(status=500)
                return web.Response(status=200, text='{"id": "task-unified-', content_type="application/json")
        doc = t.view(t.created, self.base_url, self._fractional())
        doc.update(status="pending", progress=0, results=None, error=None)
        self.counters.bump(self.counters.status, "200")
        if c.latency_after:  # the task's clock is running while its answer travels
            await self._delay("latency_after")
        return web.json_response(doc)

    async def _delay(self, knob: str) -> None:
        """Wait ``latency`` or ``latency_after`` seconds from now, the knob read again as the
        wait goes on: a test that lowers it (``POST /_sim/config``) releases the answers already
        waiting at once, so a hold ends on an event instead of a fixed wait after it."""
        start = time.monotonic()
        while (left := getattr(self.config, knob) - (time.monotonic() - start)) > 0:
            await asyncio.sleep(min(left, 0.05))

    async def get_task(self, request: web.Request) -> web.StreamResponse:
        _key, err = await self._gate(request)
        if err is not None:
            return err
        self.counters.polls += 1
        c = self.config
        if self.faults.chance(c.p5xx_before, "5xx_poll"):
            return self._error(self.rng.choice((500, 502, 503)), "Upstream error", "server_error")
        t = self.book.tasks.get(request.match_info["task_id"])
        if t is None or self.faults.chance(c.p_poll_404, "poll_404"):
            return self._error(404, "Task not found", "not_found")
        if self.faults.chance(c.p_malformed, "malformed_poll"):
            return web.Response(status=200, text="<html>502 Bad Gateway</html>", content_type="text/html")
        t.polls += 1
        self.counters.bump(self.counters.status, "200")
        now = time.time()
        if not t.seen_done and t.ready(now):
            t.seen_done = now  # the first poll that finds the render over (detection, as the API sees it)
        return web.json_response(t.view(now, self.base_url, self._fractional(), c.progress))

    async def file(self, request: web.Request) -> web.StreamResponse:
        self.counters.downloads += 1
        if "Authorization" in request.headers:
            # The real CDN would ignore it; we count it so tests catch a leaked key.
            self.counters.bump(self.counters.faults, "download_with_authorization")
        t = self.book.tasks.get(request.match_info["task_id"])
        now = time.time()
        if t is None or t.outcome != "completed" or not t.ready(now):
            return web.Response(status=404, text="Not Found")
        if now - (t.created + t.render) > self.config.result_ttl:
            return web.Response(status=403, text="Link expired")
        data = await clip(self.config, t)
        t.file_sha256 = hashlib.sha256(data).hexdigest()
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(len(data))})
        await resp.prepare(request)
        if self.faults.chance(self.config.p_slow, "slow_body"):
            half = len(data) // 2  # half now, the rest after a pause: a slow, not a cut, body
            await resp.write(data[:half])
            await asyncio.sleep(self.config.slow_seconds)
            await resp.write(data[half:])
            await resp.write_eof()
            return resp
        if self.faults.chance(self.config.p_truncate, "truncate"):
            await resp.write(data[: len(data) // 2])
            drop(request)
            return resp
        await resp.write(data)
        await resp.write_eof()
        return resp

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/files/upload/stream`` (reference §5.3): multipart ``file``, optional
        ``file_name`` and ``auto_cleanup`` (default true)."""
        _key, err = await self._gate(request)
        if err is not None:
            return err
        c = self.config
        data, name, auto_cleanup = None, None, True
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart: not something this endpoint takes
                if part.name == "file":
                    name = name or part.filename
                    buf = bytearray()
                    while chunk := await part.read_chunk(1 << 16):
                        buf += chunk
                        if len(buf) > c.upload_max_bytes:
                            return self._error(413, "File too large", "file_too_large_error")
                    data = bytes(buf)
                elif part.name == "file_name":
                    name = (await part.text()) or name
                elif part.name == "auto_cleanup":
                    auto_cleanup = (await part.text()).strip().lower() not in ("false", "0")
        except (ValueError, AssertionError):
            return self._error(400, "Expected multipart/form-data", "invalid_request_error")
        if data is None:
            return self._error(400, "file is required", "invalid_request_error")
        used = sum(size for size, _, _ in self.book.uploaded.values())
        if used + len(data) > c.storage_cap:
            if not auto_cleanup:
                return self._error(403, "Storage full", "permission_error")
            for fid in sorted(self.book.uploaded, key=lambda f: self.book.uploaded[f][1]):
                if used + len(data) <= c.storage_cap:
                    break
                used -= self.book.uploaded.pop(fid)[0]
                self.counters.bump(self.counters.faults, "upload_evicted")
        fid = f"file-{int(time.time())}-{self.rng.getrandbits(24):06x}"
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name or "upload.bin")
        self.book.uploaded[fid] = (len(data), time.time(), hashlib.sha256(data).hexdigest())
        self.counters.uploads += 1
        self.counters.bump(self.counters.status, "200")
        return web.json_response({"id": fid, "filename": safe, "url": f"{self.base_url}/uploads/{fid}/{safe}",
                                  "size": len(data), "created": int(time.time())})

