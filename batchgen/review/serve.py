"""``batchgen review`` without --set/--from: open the ledger, find what to review (a run, by
default the latest, or a manifest's clips) and where its files are, and serve the page until
Ctrl-C. The server's own event loop: ``batchgen review`` runs no scheduler."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..ledger import Ledger
from .clips import ClipIndex, Scope
from .decide import default_reviewer
from .server import ReviewServer, out_dir_of, serve


def serve_review(ledger: str | None, *, run_id: int | None = None, manifest: Path | None = None, by: str | None = None,
                 out_dir: Path | None = None, host: str = "127.0.0.1", port: int = 8765, reviewer: str | None = None,
                 endpoint_url: str | None = None, announce: Callable[[str], None] = print) -> None:
    """Serve the review page for the run ``run_id`` (default: the latest) or ``manifest``'s clips
    until interrupted; the URL (with its token) goes to stdout once."""
    if run_id is not None and manifest is not None:
        raise UsageError("--run and --manifest both choose the clips: give one of them")
    led = Ledger(ledger, create=False)
    try:
        if manifest is not None:
            path = str(manifest.resolve())
            last = led.last_run_of(path)
            if last is None:
                raise UsageError(f"{manifest}: no run of this manifest is recorded in {led}")
            scope, out_run = Scope(manifest=path), int(last["id"])
        else:
            run = led.run(run_id)
            if run is None:
                raise UsageError(f"no run {run_id} in {led}" if run_id is not None else f"no run is recorded in {led}")
            scope, out_run = Scope(run_id=int(run["id"])), int(run["id"])
        out = out_dir or out_dir_of(led, out_run)
        index = ClipIndex(led, scope, out, by=by)
        server = ReviewServer(led, index, reviewer=reviewer or default_reviewer(), endpoint_url=endpoint_url)

        def ready(url: str) -> None:
            counts = index.counts()
            click.echo(url)
            announce(f"review: {counts['pending']} of {counts['clips']} clip(s) waiting for review "
                     f"({'run ' + str(scope.run_id) if scope.run_id else scope.manifest}); files from {out}. "
                     "Open the URL above (it carries the page's token: share it only with reviewers); Ctrl-C stops.")

        _run_until_interrupted(serve(server, host, port, ready))
    finally:
        led.close()


def _run_until_interrupted(coro: Coroutine[Any, Any, None]) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
