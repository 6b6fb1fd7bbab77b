"""The rate the request budget paces at: told (``--rpm N``) or learned (``--rpm auto``).

foxapi publishes no rate limit (reference §7: per key, 429 with Retry-After, no numbers), so
a told ``--rpm`` is a guess, and a wrong guess either leaves tokens unused or turns a fifth of
the requests into 429s. ``RateControl`` keeps the rate in requests per minute for the whole API
key (a fleet's workers each pace at their share of it) and moves it on evidence:

* **Told** (``--rpm N``): N is the ceiling. A 429 (network jitter bunching requests at the
  server, or a limit lower than told) cuts the rate a little and it comes back within seconds
  while nothing more is refused.
* **Learned** (``--rpm auto``): start at ``AUTO_START`` (one request a second, the old default)
  and, while the run wants more requests than the rate gives (``binding``) and nothing is
  refused, grow: by ``SLOW_START`` a second until the first 429 (the limit is unknown, could be
  ten times the start), then additively, fast below the level where the last 429s came and
  slowly near it (the probe that finds the limit costs one 429 burst every minute or so). A 429
  cuts the rate multiplicatively (``DECREASE``) and records the level it came at (``ceiling``).
  Growth needs demand: a run whose render slots bind never inflates the rate it has not tried.
* **Stated**: a server that says its quota (``RateLimit-Policy``, ``RateLimit-Limit`` with a
  window, or their ``X-`` forms: ``client.quota_of``) is believed at once, in both modes, up to
  the told ceiling.

One cut per burst: the 429s of the requests already in flight all report one overload.
Pure: no I/O, the clock is the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

AUTO_START = 60.0  # requests a minute an --rpm auto run starts at
SLOW_START = 0.10  # before the first 429: +10 % a second while the budget binds
APPROACH = 0.02  # after: + this × ceiling a second while below NEAR × ceiling
PROBE = 0.0005  # + this × ceiling a second above NEAR × ceiling: finding the limit again costs a 429 every half minute or so
NEAR = 0.95
DECREASE = 0.9  # learned: rate × this on a 429
TOLD_DECREASE = 0.9  # told: rate × this on a 429 ...
TOLD_RECOVER = 0.02  # ... back by this fraction of the told rate a second while nothing is refused
FLOOR_RPM = 6.0  # never below one request in ten seconds
MAX_STEP_S = 5.0  # growth counts at most this long between two looks (tokens may be seconds apart)
BURST_S = 1.0  # 429s within this many seconds of a cut are the same overload


@dataclass
class RateControl:
    """The whole key's request rate (requests a minute); ``None`` told means no limit."""

    told: float | None
    auto: bool = False

    def __post_init__(self) -> None:
        self.rpm: float | None = AUTO_START if self.auto else self.told
        if self.auto and self.told:
            self.rpm = min(AUTO_START, self.told)
        self.ceiling: float | None = None  # learned: where the latest 429s came (per minute)
        self.stated: float | None = None  # the server's own statement of its quota
        self.fleet: float | None = None  # a cooperative ledger's shared rate (``adopt``)
        self.cuts = 0
        self._last_cut = float("-inf")
        self._last_tick: float | None = None

    @property
    def top(self) -> float | None:
        """The most this rate may reach: the told rate, the server's statement, or nothing."""
        tops = [t for t in (self.told, self.stated) if t]
        return min(tops) if tops else None

    def refused(self, now: float) -> bool:
        """A 429 at ``now``. True when it cut the rate (the first of its burst)."""
        if self.rpm is None or now - self._last_cut < BURST_S:
            return False
        self._last_cut = now
        self.cuts += 1
        if self.auto and not self.stated:
            hit = self.rpm
            # The level of the 429s, smoothed: one overshoot of a jittery server does not
            # set the ceiling alone.
            self.ceiling = hit if self.ceiling is None else 0.5 * (self.ceiling + hit)
            self.rpm = max(FLOOR_RPM, hit * DECREASE)
        else:
            self.rpm = max(FLOOR_RPM, self.rpm * TOLD_DECREASE)
        return True

    def tick(self, now: float, binding: bool) -> None:
        """Time passes: grow while the budget binds and nothing is refused."""
        last, self._last_tick = self._last_tick, now
        if last is None or self.rpm is None:
            return
        dt = min(now - last, MAX_STEP_S)  # a paused process did not test the limit while it slept
        if dt <= 0 or now - self._last_cut < BURST_S:
            return
        top = self.top
        if self.auto and not self.stated:
            if not binding:
                return
            c = self.ceiling
            if c is None:
                grown = self.rpm * (1.0 + SLOW_START * dt)
            else:
                grown = self.rpm + c * (APPROACH if self.rpm < NEAR * c else PROBE) * dt
        else:
            assert top is not None  # told or stated: a top exists
            grown = self.rpm + top * TOLD_RECOVER * dt
        self.rpm = min(top, grown) if top else grown

    def state(self, quota_rpm: float) -> None:
        """The server stated its quota (requests a minute, for this key)."""
        if quota_rpm <= 0:
            return
        self.stated = quota_rpm
        self.rpm = min(self.told, quota_rpm) if self.told else quota_rpm

    @property
    def pace(self) -> float | None:
        """The rate to pace at: this view, never above the fleet's (``adopt``)."""
        if self.rpm is None or self.fleet is None:
            return self.rpm
        return min(self.rpm, self.fleet)

    def adopt(self, fleet_rpm: float, *, joining: bool = False) -> None:
        """A cooperative ledger's shared view of the key's rate: the lowest view any live worker
        holds. Every worker paces at most at it, and its own view starts again from it (a
        joining worker takes it as it is): the fleet then grows only as fast as the worker that
        grows slowest — the one that met a 429 and knows where the limit is — and one worker's
        429 slows every worker within a heartbeat."""
        if self.rpm is None:
            return
        self.fleet = max(FLOOR_RPM, fleet_rpm)
        self.rpm = self.fleet if joining else min(self.rpm, self.fleet)


@dataclass(frozen=True)
class Quota:
    """What an answer's rate-limit headers state: the rate (requests a minute) when a window is
    stated, the requests left in the current window, the seconds until it resets."""

    rpm: float | None
    remaining: int | None
    reset: float | None


def _number(value: str | None) -> float | None:
    try:
        return float(value.split(",")[0].strip()) if value is not None else None
    except ValueError:
        return None


def _policy_rpm(value: str) -> float | None:
    """``RateLimit-Policy`` (or a ``RateLimit-Limit`` carrying one): ``10;w=1``,
    ``"default";q=100;w=60``, several comma-separated (the strictest counts)."""
    rates = []
    for item in value.split(","):
        parts = [p.strip() for p in item.split(";")]
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        quota, window = _number(params.get("q", parts[0])), _number(params.get("w"))
        if quota is not None and window:
            rates.append(quota / window * 60.0)
    return min(rates) if rates else None


def quota_of(headers: Mapping[str, str]) -> Quota | None:
    """The quota an answer states in IETF ``RateLimit-*`` headers (draft-ietf-httpapi-ratelimit-headers)
    or the common ``X-RateLimit-*`` ones; None when it states none. A reset above a day's seconds
    is read as a Unix time (GitHub's habit) and left out: the clocks may differ."""
    h = {k.lower(): v for k, v in headers.items()}
    rpm = None
    for name in ("ratelimit-policy", "x-ratelimit-policy", "ratelimit-limit", "x-ratelimit-limit"):
        if name in h and ";" in h[name]:
            rpm = _policy_rpm(h[name])
            if rpm is not None:
                break
    limit = _number(h.get("ratelimit-limit") or h.get("x-ratelimit-limit"))
    remaining = _number(h.get("ratelimit-remaining") or h.get("x-ratelimit-remaining"))
    reset = _number(h.get("ratelimit-reset") or h.get("x-ratelimit-reset"))
    if reset is not None and (reset < 0 or reset > 86400):
        reset = None
    if rpm is None and limit is None and remaining is None:
        return None
    return Quota(rpm, None if remaining is None else int(remaining), reset)


__all__ = ["AUTO_START", "Quota", "RateControl", "quota_of"]
