"""The request budget shared by creates and polls.

A leaky bucket (aiolimiter) paces requests at ``rpm``; a 429 pauses *every* caller until its
Retry-After and cuts the rate (multiplicative decrease), which then recovers slowly (additive
increase) while no 429 arrives — so one throttle slows the whole run instead of each caller
hammering the API on its own schedule."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

DECREASE = 0.7  # rate × this on a 429
FLOOR = 0.1  # never below 10% of the configured rate
RECOVER_EVERY = 15.0  # seconds without a 429 between two recovery steps
RECOVER_STEP = 0.05  # + 5% of the configured rate per step
HEADROOM = 0.98  # pace a little under the limit: network jitter then meets a server bucket with slack


class RequestBudget:
    def __init__(self, rpm: float | None) -> None:
        self.rpm = rpm
        self.factor = 1.0
        self._limiter: AsyncLimiter | None = None
        self._set_rate()
        self._not_before = 0.0
        self._last_change = time.monotonic()  # last rate change, for recovery pacing
        self._last_cut = float("-inf")
        self._recent: collections.deque[float] = collections.deque()
        self.used = 0
        self.throttled = 0

    @property
    def current_rpm(self) -> float | None:
        return None if not self.rpm else self.rpm * self.factor

    def _set_rate(self) -> None:
        rpm = self.current_rpm
        if rpm:
            # Smooth pacing (no burst) just under the limit: a burst meets the server's bucket
            # exactly as full as ours, and any jitter then turns into 429s.
            # A new limiter rather than mutating the old one's private rate; callers already
            # waiting on the old one finish on it (at most --concurrency of them).
            self._limiter = AsyncLimiter(1, 60.0 / (rpm * HEADROOM))

    def set_rpm(self, rpm: float | None) -> None:
        """A new configured rate, e.g. this worker's share of a budget several workers split."""
        if rpm != self.rpm:
            self.rpm = rpm
            self._set_rate()

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a joining worker waits until the others have cut their
        shares)."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)

    async def acquire(self) -> None:
        while True:
            wait = self._not_before - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self._maybe_recover()
        if self._limiter is not None:
            await self._limiter.acquire()
        self.used += 1
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 60.0:
            self._recent.popleft()

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
        # One cut per burst: the 429s of requests already in flight all report the same overload.
        if self.rpm and self.factor > FLOOR and now - self._last_cut > min(pause, 1.0):
            self.factor = max(FLOOR, self.factor * DECREASE)
            self._last_change = self._last_cut = now
            self._set_rate()

    def _maybe_recover(self) -> None:
        if self.factor >= 1.0:
            return
        now = time.monotonic()
        if now - self._last_change >= RECOVER_EVERY and now >= self._not_before:
            self.factor = min(1.0, self.factor + RECOVER_STEP)
            self._last_change = now
            self._set_rate()


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
