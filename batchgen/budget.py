"""The request budget shared by creates and polls: a token scheduler.

Tokens come at ``rpm`` (paced smoothly, a little under it: a burst meets the server's bucket
exactly as full as ours, and jitter then turns into 429s). When the budget is short, requests
wait in a priority queue, not a FIFO: a create first (it only asks for a token once it holds a
render slot that would otherwise idle, so every create served starts a render the run needs),
then polls earliest-due first (a poll served late costs nothing when every token is spoken for:
a late poll finds its task done, so it is the last one that task needs). A library limiter
(aiolimiter, used before) serves its waiters in arrival order, which let the last creates of a
rate-bound night queue behind hundreds of polls: the night ended with the budget idle while
those renders ran (issue 31: 1.28× the bound 2 × jobs ÷ rate, 22 % of the tokens unused).

Whether the budget binds is measured, not configured: ``binding`` is true while requests wait
for tokens (a moving average of the wait, against the interval between two tokens). A token
interval in which nobody asked counts as a request that waited nothing: the average decays
while requests stop, so a worker that sends nothing stops counting as bound (and, under
``--rpm auto``, stops growing a rate nothing tests). The poll
schedule reads it (``pipeline/pace.py``): when tokens are short, a poll that would only probe
is not worth its token.

The rate itself is ``ratelearn.RateControl``'s: told or learned, for the whole API key; this
budget paces at its share of it (``set_workers``: a cooperative fleet splits it evenly). A 429
pauses *every* caller until its Retry-After and cuts the rate, which comes back while nothing
more is refused — so one throttle slows the whole run instead of each caller hammering the API
on its own schedule."""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import random
import time
from collections.abc import Callable
from enum import IntEnum

from .ratelearn import Quota, RateControl

HEADROOM = 0.99  # pace a little under the limit: network jitter then meets a server bucket with slack
# A token handed out late (a timer that fired late on a busy loop) is made up by the next one,
# up to this fraction of the interval: pacing keeps its long-run rate without ever bursting more
# than two requests closer than the interval.
CATCH_UP = 0.5
WAIT_SMOOTHING = 0.1  # weight of the newest request's wait in the moving average
BINDING_WAIT = 0.5  # the budget binds when requests wait more than this many token intervals


class Need(IntEnum):
    """Who asks for a token, in the order a short budget serves them."""

    CREATE = 0  # holds a free render slot (or an upload for one)
    POLL = 1  # served earliest-due first


class RequestBudget:
    def __init__(self, rpm: float | None, *, auto: bool = False) -> None:
        self.control = RateControl(rpm or None, auto=auto)
        self.workers = 1  # this worker's share is 1/workers of the key's rate
        self._not_before = 0.0
        self._next_at = 0.0  # when the next token is due (monotonic)
        self._recent: collections.deque[float] = collections.deque()
        self._queue: list[tuple[int, float, int, asyncio.Future[None], float]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._wait = 0.0  # moving average of the seconds a request waited for its token
        self._last_grant = 0.0  # when the last token went (monotonic): the idle intervals since decay ``_wait``
        self.used = 0
        self.throttled = 0
        self.idle = True  # asked for no token and met no 429 between the fleet's last two looks (``view``)
        self._asked = 0  # tokens asked for since the last ``view``
        self._cuts_seen = 0

    @property
    def rpm(self) -> float | None:
        """The key's rate now (requests a minute, all workers together); None: no limit."""
        return self.control.rpm

    @property
    def current_rpm(self) -> float | None:
        """This worker's share of it (at most its share of the fleet's, ``adopt``)."""
        rpm = self.control.pace
        return None if not rpm else rpm / self.workers

    @property
    def interval(self) -> float:
        """Seconds between two tokens (0: no limit)."""
        rpm = self.current_rpm
        return 60.0 / (rpm * HEADROOM) if rpm else 0.0

    @property
    def binding(self) -> bool:
        """Requests are waiting for tokens: the request rate, not the render slots, limits the run."""
        return bool(self.rpm) and (self._average_wait(time.monotonic()) > BINDING_WAIT * self.interval
                                   or len(self._queue) > 1)

    def _average_wait(self, now: float) -> float:
        """The moving average of the wait, each whole token interval since the last grant in
        which nobody waited counted as a request that waited nothing (the average alone only
        moved when a token went: a worker whose requests stopped kept the wait of its last busy
        moment, "bound" for ever, and ``--rpm auto`` grew its rate with nothing sent)."""
        interval = self.interval
        if self._queue or not interval:
            return self._wait  # someone is waiting now: not idle
        idle = int(max(0.0, now - self._last_grant) / interval)
        return self._wait * (1.0 - WAIT_SMOOTHING) ** idle if idle else self._wait

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def set_workers(self, n: int) -> None:
        """How many workers share the key's rate (a cooperative ledger's live workers)."""
        if max(1, n) != self.workers:
            self.workers = max(1, n)
            self._reschedule()

    def view(self) -> float | None:
        """The key's rate this worker holds, grown up to now (what it writes with its heartbeat:
        a worker that sent nothing since the fleet's last look still grew while it waited);
        None while it is idle: it asked for no token and met no 429 since its last look. An idle
        worker learns nothing of the limit, and the fleet paces at the lowest rate a live worker
        holds: the rate it last had would pin every worker at it (a worker whose share of the
        manifest is done, one that found nothing to claim), however far the others could grow."""
        # Since the last tick (a token asked for or handed out), time grew the rate only if
        # requests wait for a token now: with none waiting, nothing tested the limit meanwhile.
        self.control.tick(time.monotonic(), bool(self._queue) and self.binding)
        asked, self._asked = self._asked or bool(self._queue), 0
        cut, self._cuts_seen = self.control.cuts != self._cuts_seen, self.control.cuts
        self.idle = not (asked or cut)
        return None if self.idle else self.control.rpm

    def adopt(self, fleet_rpm: float | None, *, joining: bool = False) -> None:
        """The fleet's shared view of the key's rate (see ``RateControl.adopt``). An idle worker
        takes it as it is, as a joining one does: it starts from the fleet's rate when work comes."""
        if fleet_rpm:
            self.control.adopt(fleet_rpm, joining=joining or self.idle)
            self._reschedule()

    def observe(self, quota: Quota) -> None:
        """An answer stated the quota (``ratelearn.quota_of``): a stated rate is believed at once;
        without one, "none left, reset in N s" holds every request for N s."""
        if quota.rpm is not None:
            if quota.rpm != self.control.stated:
                self.control.state(quota.rpm)
                self._reschedule()
        elif quota.remaining == 0 and quota.reset:
            self.hold(quota.reset)

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a joining worker waits until the others have cut their
        shares)."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)
        self._reschedule()

    async def acquire(self, need: Need = Need.POLL, due: float | None = None) -> None:
        """Wait for a token. ``due``: when a poll was meant to go (monotonic; default now)."""
        now = time.monotonic()
        self.control.tick(now, self.binding)
        self._asked += 1
        if not self._queue and now >= self._ready_at():
            self._grant(now, now)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (int(need), now if due is None else due, next(self._seq), fut, now))
        self._reschedule()
        await fut

    def last_minute(self) -> int:
        """Requests sent in the last 60 seconds."""
        cutoff = time.monotonic() - 60.0
        return sum(1 for t in self._recent if t >= cutoff)

    def throttle(self, retry_after: float | None) -> None:
        """A 429: everybody waits for Retry-After (or a short jittered pause without one) and the
        rate drops."""
        self.throttled += 1
        pause = retry_after if retry_after is not None else 1.0 + random.random()
        now = time.monotonic()
        self._not_before = max(self._not_before, now + pause)
        self.control.refused(now)
        self._reschedule()

    # -------------------------------------------------------------- the scheduler
    def _ready_at(self) -> float:
        return max(self._not_before, self._next_at) if self.interval else self._not_before

    def _grant(self, now: float, asked: float) -> None:
        interval = self.interval
        if interval:
            self._next_at = max(self._next_at, now - CATCH_UP * interval) + interval
        self._wait = self._average_wait(now)
        self._wait += WAIT_SMOOTHING * ((now - asked) - self._wait)
        self._last_grant = now
        self.used += 1
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 60.0:
            self._recent.popleft()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._queue:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, self._ready_at() - time.monotonic()), self._pump)

    def _pump(self) -> None:
        """Hand out the tokens that are due, highest priority first."""
        self._timer = None
        self.control.tick(time.monotonic(), self.binding)
        while self._queue:
            now = time.monotonic()
            if now < self._ready_at():
                break
            *_, fut, asked = heapq.heappop(self._queue)
            if fut.done():  # its caller was cancelled (a stop): the token goes to the next
                continue
            fut.set_result(None)
            self._grant(now, asked)
        self._reschedule()


class CreditCap:
    """``--max-credits``: the estimated credits of this run's creates, against the cap.

    A create reserves its estimate before it is sent (and before it waits for the request
    budget), so concurrent jobs see it; once the create is answered the reservation becomes
    spent (a task, or a create in doubt) or is returned (refused, stopped, not sent). A job
    that would pass the cap while other creates still hold reservations waits for them to
    settle instead of declaring the cap reached: a reservation that is returned may leave room
    for it. So the jobs admitted are exactly those that fit, in manifest order, however the
    creates are paced (``--rpm``) — not fewer because some were still waiting for their turn.
    Sums are rounded to 1e-9 so that adding and returning estimates leaves no float noise."""

    def __init__(self, cap: float | None) -> None:
        self.cap = cap
        self.spent = 0.0  # estimated credits of creates sent (tasks and creates in doubt)
        self.reserved = 0.0  # held by creates not answered yet
        self._holders = 0
        self._settled = asyncio.Event()

    def fits(self, estimate: float) -> bool:
        return self.cap is None or round(self.spent + self.reserved + estimate, 9) <= self.cap

    async def reserve(self, estimate: float, stopped: Callable[[], bool]) -> bool | None:
        """True: reserved (``settle`` it later). False: it does not fit even once every
        reservation has settled — the cap is reached. None: ``stopped()`` became true first."""
        while True:
            if stopped():
                return None
            if self.fits(estimate):
                self.reserved = round(self.reserved + estimate, 9)
                self._holders += 1
                return True
            if not self._holders:
                return False
            settled = self._settled
            await settled.wait()

    def settle(self, estimate: float, *, spent: bool) -> None:
        """The create that reserved ``estimate`` was answered: ``spent`` (a task exists or may
        exist) or not (its reservation goes back)."""
        self.reserved = max(0.0, round(self.reserved - estimate, 9))
        self._holders -= 1
        if spent:
            self.spent = round(self.spent + estimate, 9)
        self.wake()

    def wake(self) -> None:
        """Let waiting jobs look again (a reservation settled, or the run is stopping)."""
        self._settled.set()
        self._settled = asyncio.Event()


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt)))
