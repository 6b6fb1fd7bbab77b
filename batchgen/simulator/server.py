"""``Simulator``: one simulator, wired and served. It holds the pieces (config, the seeded
generator, counters, faults, the book of tasks, the API routes), serves them with aiohttp
(``start``/``stop``), and answers its own admin endpoints: ``GET /_sim/ground-truth`` (every create
it accepted with its request-body hash and served file hash: how tests count duplicate and
orphaned creates), ``GET /_sim/stats`` and ``POST /_sim/config`` (change knobs while it runs).

No request of the API is answered here (``routes``), no fault decided (``faults``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from .catalog import validate
from .config import SimConfig
from .faults import Counters, Faults
from .media import mp4_sha256, plan
from .routes import Routes
from .tasks import Book, Task


class Simulator:
    """The fake API. ``state_file`` (JSON lines, appended once per accepted create) keeps its
    tasks across restarts, so a run against the embedded simulator can be interrupted and
    resumed like a real one; ``saved_port`` is the port it last listened on (result URLs
    name it)."""

    validate = staticmethod(validate)

    def __init__(self, config: SimConfig | None = None, *, state_file: Path | None = None) -> None:
        self.config = config or SimConfig()
        self.rng = random.Random(self.config.seed)
        self.counters = Counters()
        self.faults = Faults(self.config, self.rng, self.counters)
        self.book = Book(state_file)
        self.routes = Routes(self.config, self.rng, self.counters, self.faults, self.book)
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=2 * 1024 * 1024)
        self.routes.add_to(self.app.router)
        self.app.on_response_prepare.append(self.routes.quota_headers)
        self.app.router.add_get("/_sim/ground-truth", self._ground_truth)
        self.app.router.add_get("/_sim/stats", self._stats)
        self.app.router.add_post("/_sim/config", self._set_config)

    # What callers read of the book (tests count tasks; the runner restarts on the saved port).
    @property
    def tasks(self) -> dict[str, Task]:
        return self.book.tasks

    @property
    def saved_port(self) -> int | None:
        return self.book.saved_port

    @property
    def base_url(self) -> str:
        return self.routes.base_url

    def media_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the result file of an accepted ``body`` would be (draws from the seeded generator
        like a create does)."""
        return plan(body, self.config, self.faults)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # A client killed mid-request (the crash tests do it on purpose) is not a server error:
        # without this, aiohttp prints a traceback for every such disconnect.
        logging.getLogger("aiohttp.server").addFilter(_client_gone)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.routes.base_url = f"http://{host}:{sock.getsockname()[1]}"
        if sock.getsockname()[1] != self.book.saved_port:
            self.book.save({"port": sock.getsockname()[1]})
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ admin
    def ground_truth(self) -> dict[str, Any]:
        stub = self.config.media == "stub"
        return {
            "creates": [
                {"task_id": t.id, "body_sha256": t.body_sha256, "model": t.model, "created": t.created,
                 "outcome": t.outcome, "credits": t.credits, "polls": t.polls,
                 "file_sha256": (t.file_sha256 or (mp4_sha256(t.id, t.file_size) if stub else None))
                 if t.outcome == "completed" else None,
                 "media": {"width": t.width, "height": t.height, "seconds": t.seconds, "audio": t.audio,
                           "variant": t.variant},
                 "render_s": t.render, "ready_at": t.ready_at, "received": t.received, "seen_done": t.seen_done}
                for t in self.book.tasks.values()
            ],
            "counters": asdict(self.counters),
            "uploads": [{"id": f, "size": v[0], "sha256": v[2]} for f, v in self.book.uploaded.items()],
            "fault_log": self.faults.log,
        }

    async def _ground_truth(self, request: web.Request) -> web.Response:
        return web.json_response(self.ground_truth())

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.counters))

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            self.config.update(await request.json())
        except (ValueError, KeyError) as e:
            return web.json_response({"error": {"message": f"bad config: {e}", "type": "invalid_request_error"}}, status=400)
        return web.json_response(asdict(self.config))


def _client_gone(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, (ConnectionResetError, BrokenPipeError))
