"""Graceful shutdown: the first SIGINT/SIGTERM sets a stop event (stop submitting, finish
recording what is in flight); a second one exits at once. Everything already committed to the
ledger survives either way."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from .logs import log


@contextmanager
def stop_on_signals(stop: asyncio.Event, *, quiet: bool = False, enabled: bool = True) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM set ``stop`` (a second one exits at once). ``enabled=False``
    installs nothing: a program embedding batchgen keeps its own signal handling."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM) if enabled else ()

    def handler(signum: int) -> None:
        if stop.is_set():
            if not quiet:
                log.warning("second signal, exiting now (re-run to resume)")
            os._exit(130)
        if not quiet:
            log.warning(f"{signal.Signals(signum).name} received, finishing in-flight records "
                        "(send again to exit at once)")
        stop.set()

    installed: list[signal.Signals] = []
    for s in sigs:
        try:
            loop.add_signal_handler(s, handler, s)
            installed.append(s)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (e.g. tests) – the caller's stop event still works
    try:
        yield
    finally:
        for s in installed:
            loop.remove_signal_handler(s)
