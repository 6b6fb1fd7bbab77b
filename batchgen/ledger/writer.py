"""The scheduler's door to the ledger: one thread, grouped commits.

The event loop never blocks on an fsync: transitions are queued and committed together by one
ledger thread (``Transitions.apply`` through the ``Ledger`` facade), so an fsync is paid per
batch, not per job. Only the intent is awaited on the hot path; later records are queued in
order (``Writer.record``): a crash before they commit is recovered by re-polling or
re-downloading."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from ..errors import LedgerError
from .transitions import Transition

if TYPE_CHECKING:
    from .facade import Ledger

P = ParamSpec("P")
R = TypeVar("R")


class Writer:
    """Asynchronous front of the ledger: one thread, grouped commits.

    ``await writer.apply(t)`` returns once ``t`` is durably committed. Transitions that arrive
    while a commit is in progress are committed together in the next transaction, so an fsync
    is paid per batch, not per job, while each caller still waits for its own durability."""

    def __init__(self, ledger: Ledger, max_batch: int = 512, *, owner: int | None = None) -> None:
        self.ledger = ledger
        self.owner = owner  # cooperative ledgers: every transition requires this worker's lease
        self.max_batch = max_batch
        self.commits = 0
        self._pending: list[tuple[Transition, asyncio.Future[bool]]] = []
        self._outstanding: set[asyncio.Future[bool]] = set()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.error: BaseException | None = None  # first failed write; the scheduler stops submitting

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self._loop(), name="ledger-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._pool.shutdown(wait=True)

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run any ledger method on the ledger thread (keeps SQLite on one thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A ledger call that need not queue behind the writes: PostgreSQL's pooled connections
        serve it from another thread (heartbeats, claims); SQLite keeps everything on one."""
        if self.ledger.is_sqlite:
            return await self.call(fn, *args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    def submit(self, t: Transition) -> asyncio.Future[bool]:
        """Queue a transition; the future resolves once it is committed. Transitions are applied
        in the order they were submitted, so a job's later moves never overtake earlier ones."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if t.owner is None:
            t.owner = self.owner
        self._pending.append((t, fut))
        self._outstanding.add(fut)
        fut.add_done_callback(self._outstanding.discard)
        self._wake.set()
        return fut

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        if self._outstanding:
            await asyncio.wait(set(self._outstanding))

    async def apply(self, t: Transition) -> bool:
        # shield: if the caller is cancelled, the write still completes; the caller just stops
        # waiting for it.
        return await asyncio.shield(self.submit(t))

    def record(self, t: Transition) -> None:
        """Queue a transition without waiting for its commit. For moves whose loss in a crash is
        recovered by redoing idempotent work (re-poll, re-download); never for an intent."""
        self.submit(t).add_done_callback(self._check)

    def _check(self, fut: asyncio.Future[bool]) -> None:
        if not fut.cancelled() and fut.exception() is not None and self.error is None:
            self.error = fut.exception()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(self._pool, self.ledger.apply, [t for t, _ in batch])
                except LedgerError as err:  # Ledger.apply raises nothing else (error_boundary)
                    self.error = self.error or err
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                self.commits += 1
                for (_, fut), ok in zip(batch, results):
                    if not fut.done():
                        fut.set_result(ok)
            if self._closing and not self._pending:
                return
