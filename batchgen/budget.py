"""The request budget shared by creates and polls: a leaky bucket (aiolimiter) plus a global
pause that a 429's Retry-After sets, so one throttle slows every caller instead of each caller
hammering the API on its own schedule."""

from __future__ import annotations

import asyncio
import random
import time

from aiolimiter import AsyncLimiter


class RequestBudget:
    def __init__(self, rpm: float | None) -> None:
        self.rpm = rpm
        self._limiter: AsyncLimiter | None = None
        if rpm:
            # Burst of at most one second's worth: the server's own bucket is unlikely to allow more.
            burst = max(1.0, round(rpm / 60.0))
            self._limiter = AsyncLimiter(burst, 60.0 * burst / rpm)
        self._not_before = 0.0
        self.used = 0
        self.throttled = 0

    async def acquire(self) -> None:
        while True:
            wait = self._not_before - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        if self._limiter is not None:
            await self._limiter.acquire()
        self.used += 1

    def throttle(self, retry_after: float | None) -> None:
        """A 429: everybody waits for Retry-After (or a short jittered pause without one)."""
        self.throttled += 1
        pause = retry_after if retry_after is not None else 1.0 + random.random()
        self._not_before = max(self._not_before, time.monotonic() + pause)


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt)))
