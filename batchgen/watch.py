"""What a run watches beside its work (the conductor starts these as tasks): a stop asked
through the ledger (`batchgen stop`, from any terminal or machine) and an API that stays silent
for the whole outage window. Each ends the run the way a signal does: the stop event is set,
and every task id stays in the ledger for the next run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .ledger import Writer
from .pipeline import Context, RunOptions


class RunWatch:
    """The stop flag in the ledger and the API's silence, for one run."""

    def __init__(self, writer: Writer, opts: RunOptions, stop: asyncio.Event, log: Callable[[str], None]) -> None:
        self.w = writer
        self.opts = opts
        self.stop = stop
        self.log = log

    def outage_started(self, cause: str) -> None:
        self.log(f"the API does not answer: {cause}; retrying — the run stops if it stays silent for "
                 f"{self.opts.outage_window:g} s (task ids are kept)")

    async def ledger_stop(self, ctx: Context, run_id: int) -> None:
        """`batchgen stop` sets a flag in the ledger (works from any terminal or machine)."""
        while not self.stop.is_set():
            await asyncio.sleep(self.opts.stop_check_every)
            if await self.w.read(self.w.ledger.stop_requested, run_id):
                self.log("stop requested through the ledger (batchgen stop): draining")
                ctx.reason = "stopped by `batchgen stop`"
                self.stop.set()

    async def outage(self, ctx: Context) -> None:
        """Nothing answering for the whole outage window: more retries only burn the night.
        Stop (exit 3) with the cause; every task id is in the ledger for the next run."""
        every = min(1.0, self.opts.outage_window / 4)
        while not self.stop.is_set():
            await asyncio.sleep(every)
            outage = ctx.client.outage
            if outage is not None and ctx.client.silent_for() >= self.opts.outage_window:
                ctx.stop_submitting(f"no answer from the API for {self.opts.outage_window:g} s ({outage.cause}); "
                                    "stopped — re-run when it is back (task ids are kept)", unfinished=True)
                self.stop.set()
                return
