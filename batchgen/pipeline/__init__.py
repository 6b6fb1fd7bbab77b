"""A run's pipeline: the stages a job goes through, one room (module) per stage, each owning its
own state, pool, counters and retry policy, and handing jobs on through a typed seam.

* ``context``  — ``RunOptions``, ``ApiWatch`` (the API, watched for outages) and ``Context``:
  what every stage shares (writer, budget, stop) and the run-wide verdicts (stop submitting,
  halt code, unfinished), with the stop-aware sleep.
* ``moves``    — ``LiveJob`` and ``Moves``: **the only code of the pipeline that writes a job's
  state** (each move's ``Transition``, the live counts, the event record).
* ``submit``   — ``Submitter``: intent, uploads, create, in doubt; the credit cap; create retries.
* ``poll``     — ``Poller``: follows a task, what a poll means; a fresh URL for the fetch stage.
* ``pace``     — ``poll_delay`` and ``PaceBook``: when to poll, learnt per model (pure: no I/O);
  ``anchor`` — ``Anchor``: where in a create's round trip a model's tasks start (pace's part).
* ``fetch``    — ``Fetcher``: downloads (own pool), expiry, refetch, download retries.
* ``check``    — ``Checker``: verification and pictures (own process pool, outcome counts).
* ``delivery`` — ``Deliverer``: uploads to ``--deliver`` (own thread pool, counts, retry policy),
  ``--prune-local``.

The conductor (``scheduler.Scheduler``) feeds jobs, holds the render slots and wires the stages:
``Submitter → Poller → Fetcher →(Handoff) Checker →(Handoff) Deliverer``. A stage imports
``context`` and ``moves`` only (the poll stage ``pace`` too), never another stage; it reaches the next one through the
callable it was given (``moves.Handoff``, ``fetch.Refresh``).
"""

from __future__ import annotations

from .check import Checker
from .context import ApiWatch, Context, RunOptions, track
from .delivery import Deliverer
from .fetch import Fetcher
from .moves import Handoff, LiveJob, Moves
from .poll import Poller
from .submit import Submitter

__all__ = ["ApiWatch", "Checker", "Context", "Deliverer", "Fetcher", "Handoff", "LiveJob", "Moves", "Poller",
           "RunOptions", "Submitter", "track"]
