"""The faults the simulator injects and what it counts: the seeded dice every fault knob is
thrown with (``Faults.chance``), the per-key request budget (a token bucket) and 429 bursts, the
log of create-path faults (tied to request-body hashes, so an audit can match them to jobs), and
``Counters``, the tallies ``GET /_sim/stats`` and the ground truth report.

Deciding only: the routes turn a decision into a response. Knows no task, no file.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import SimConfig


@dataclass
class Counters:
    requests: int = 0
    creates_accepted: int = 0
    polls: int = 0
    downloads: int = 0
    uploads: int = 0
    status: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    # API requests per wall-clock second (unix seconds as keys): lets tests check a request
    # budget shared by several client processes.
    per_second: dict[str, int] = field(default_factory=dict)
    throttled_per_second: dict[str, int] = field(default_factory=dict)  # of which 429 (any cause)

    def bump(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


class Faults:
    """One simulator's fault state. ``rng`` is the simulator's one seeded generator, shared with
    the routes (render times, task ids): a seed replays the same run of faults only if every
    draw comes from it, in the same order."""

    def __init__(self, config: SimConfig, rng: random.Random, counters: Counters) -> None:
        self.config = config
        self.rng = rng
        self.counters = counters
        # create-path faults with the request-body hash, so audits can tie them to jobs
        self.log: list[dict[str, Any]] = []
        self._bucket: dict[str, tuple[float, float]] = {}
        self._burst_until = 0.0

    def chance(self, p: float, name: str) -> bool:
        """True (and counted under ``name``) with probability ``p``; no draw at all when p is 0."""
        if p > 0 and self.rng.random() < p:
            self.counters.bump(self.counters.faults, name)
            return True
        return False

    def rate_limited(self, key: str) -> float | None:
        """Token bucket per key; returns seconds to wait when empty."""
        rpm = self.config.rpm_limit
        if not rpm:
            return None
        now = time.monotonic()
        rate = rpm / 60.0
        burst = max(1.0, rate)  # at most a second's worth at once
        tokens, last = self._bucket.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens >= 1:
            self._bucket[key] = (tokens - 1, now)
            return None
        self._bucket[key] = (tokens, now)
        return (1 - tokens) / rate

    def quota_headers(self, key: str) -> dict[str, str]:
        """What a server that states its quota says of ``key``'s bucket (``rate_headers``): the
        limit per one-second window, the whole requests left, the seconds until the next one."""
        style, rpm = self.config.rate_headers, self.config.rpm_limit
        if style == "none" or not rpm or key not in self._bucket:
            return {}
        rate = rpm / 60.0
        burst = max(1.0, rate)
        tokens, last = self._bucket[key]
        tokens = min(burst, tokens + (time.monotonic() - last) * rate)
        limit, left = max(1, int(burst)), int(tokens)
        reset = str(max(0, math.ceil((1 - tokens) / rate))) if tokens < 1 else "0"
        if style == "x":
            return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(left), "X-RateLimit-Reset": reset}
        return {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(left), "RateLimit-Reset": reset,
                "RateLimit-Policy": f"{limit};w=1"}

    def burst(self) -> float | None:
        """Seconds left of a 429 burst (one may start now, ``p_burst``), or None outside one."""
        now = time.monotonic()
        if now >= self._burst_until and self.chance(self.config.p_burst, "burst"):
            self._burst_until = now + self.config.burst_seconds
        if now < self._burst_until:
            return self._burst_until - now
        return None


def drop(request: web.Request) -> None:
    """Cut the connection without an answer (what a reset or a dead proxy looks like)."""
    if request.transport is not None:
        request.transport.abort()
