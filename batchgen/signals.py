"""Stopping a run: SIGINT (Ctrl-C) and SIGTERM, any number of them at any moment, end in a
documented exit code and never in a traceback.

* The first signal stops the run gracefully: no new creates, what is in flight is recorded, and
  the run ends with its summary (exit 3: re-run to resume). One that arrives before the run's
  event loop runs (reading the manifest, opening the ledger) stops the run as soon as it starts,
  before anything is submitted; one that arrives after the scheduler finished changes nothing.
* A second signal exits at once with ``EXIT_INTERRUPTED`` (130): the ledger writes already
  queued — the task ids of creates that were answered — are committed first (at most
  ``FLUSH_S`` seconds), then the process ends without its summary. A create still on the wire
  has its intent recorded: the next run lists it as in doubt. A third signal ends the process
  at once.

The handlers are installed with ``signal.signal`` for the whole of ``guard()`` (``runner.run``:
from reading the manifest to the last notification), not with the event loop's
``add_signal_handler`` for the scheduler's lifetime only: outside that window Python's default
handler raised KeyboardInterrupt inside aiohttp's and asyncio's teardown (hundreds of lines of
``InvalidStateError``, exit 1). While the loop runs it is woken by ``signal.set_wakeup_fd`` on a
socket pair it watches, and the handler only schedules callbacks on it
(``call_soon_threadsafe``), as ``asyncio.Runner`` does."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import EXIT_INTERRUPTED
from .logs import log

SIGNALS = (signal.SIGINT, signal.SIGTERM)
FLUSH_S = 3.0  # second signal: longest wait for queued ledger writes before exiting


@dataclass
class _Guarded:
    """The signal state of one guarded run."""

    quiet: bool
    count: int = 0
    started: bool = False  # the scheduler's loop has attached once
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    hooks: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    exiting: set[asyncio.Task[None]] = field(default_factory=set)
    said_exit: bool = False  # the "exiting now" line is out (a third signal must not swallow it)


_current: _Guarded | None = None


def _say(g: _Guarded, message: str) -> None:
    if not g.quiet:
        log.warning(message)


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)


def _handler(signum: int, _frame: Any) -> None:
    """Runs in the main thread between two bytecodes: it only counts, logs outside the loop, and
    schedules callbacks on the loop (never touches the loop's state itself)."""
    g = _current
    if g is None:  # pragma: no cover - restored before any further signal can come
        return
    g.count += 1
    name = signal.Signals(signum).name
    loop = g.loop
    if g.count == 1:
        if loop is not None:
            loop.call_soon_threadsafe(_first_in_loop, g, name)
        elif not g.started:
            _say(g, f"{name} received: the run stops before submitting anything (send again to exit at once)")
        else:
            _say(g, f"{name} received: the run is ending already (send again to exit at once)")
        return
    if g.count == 2 and loop is not None and not loop.is_closed():
        # Flush on the loop; if it cannot (blocked), the timer ends the process anyway.
        loop.call_soon_threadsafe(_second_in_loop, g, name)
        timer = threading.Timer(FLUSH_S + 1.0, _exit_now)
        timer.daemon = True
        timer.start()
        return
    if not g.said_exit:
        # A second signal without a loop, or a third one before the loop got to say the
        # second's line: the operator still learns how the run ended.
        g.said_exit = True
        _say(g, f"{'second' if g.count == 2 else 'another'} signal ({name}): exiting now (exit {EXIT_INTERRUPTED}); "
                "re-run to resume")
    _exit_now()


def _first_in_loop(g: _Guarded, name: str) -> None:
    _say(g, f"{name} received, finishing in-flight records (send again to exit at once)")
    if g.stop is not None:
        g.stop.set()


def _second_in_loop(g: _Guarded, name: str) -> None:
    if not g.said_exit:  # (a third signal may have said it already; the flush still runs)
        g.said_exit = True
        _say(g, f"second signal ({name}): exiting now (exit {EXIT_INTERRUPTED}) — answered creates are recorded "
                "first; a create still on the wire is in doubt for the next run; re-run to resume")
    if g.stop is not None:
        g.stop.set()
    task = asyncio.ensure_future(_flush_then_exit(g))
    g.exiting.add(task)


async def _flush_then_exit(g: _Guarded) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(h() for h in list(g.hooks)), return_exceptions=True), FLUSH_S)
    except BaseException:  # noqa: BLE001 - exiting regardless: what committed is in the ledger
        pass
    _exit_now()


@contextmanager
def guard(*, quiet: bool = False, enabled: bool = True) -> Iterator[None]:
    """SIGINT/SIGTERM handled as this module says for the duration of the block (the main
    thread only; nested guards share the outer one). ``enabled=False`` installs nothing: a
    program embedding batchgen keeps its own signal handling."""
    global _current
    if not enabled or _current is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    g = _Guarded(quiet)
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _current = g
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _current = None


@contextmanager
def stop_on_signals(stop: asyncio.Event, *, quiet: bool = False, enabled: bool = True) -> Iterator[None]:
    """Within the block (on the running loop) the first SIGINT/SIGTERM sets ``stop``, a second
    one exits at once (see the module). A signal that came before the block (under ``guard``)
    sets ``stop`` on entry. ``enabled=False`` installs nothing."""
    with guard(quiet=quiet, enabled=enabled):
        g = _current
        if not enabled or g is None:
            yield  # not the main thread (e.g. tests): the caller's stop event still works
            return
        loop = asyncio.get_running_loop()
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        loop.add_reader(rsock.fileno(), _drain, rsock)
        old_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        g.loop, g.stop, g.started = loop, stop, True
        if g.count:
            stop.set()  # stopped before the loop ran: nothing is submitted
        try:
            yield
        finally:
            g.loop = g.stop = None
            signal.set_wakeup_fd(old_fd)
            loop.remove_reader(rsock.fileno())
            rsock.close()
            wsock.close()


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:  # BlockingIOError: drained
        pass


@contextmanager
def before_exit(hook: Callable[[], Awaitable[object]]) -> Iterator[None]:
    """Within the block, a second signal awaits ``hook()`` (at most FLUSH_S seconds, with the
    other hooks) before the process exits: e.g. committing the ledger writes already queued."""
    g = _current
    if g is None:
        yield
        return
    g.hooks.append(hook)
    try:
        yield
    finally:
        g.hooks.remove(hook)
