"""``run --finish-by`` (issue 30): a night with a deadline.

The deadline is a time of day (``07:00``: the next such time of the machine's local clock, which
after a 23:00 start is tomorrow morning) or an ISO date-time (``2026-12-07T07:00``, local time
unless it names its offset: ``…+01:00``, ``…Z``). It is kept as epoch seconds, so the workers of
a fleet on machines in other time zones agree on it, and a clock change for daylight saving
moves nothing: ``07:00`` is read once, when the run starts, as the local 07:00 of that night.

Before each create the conductor asks ``Deadline.allows(model)``: a job starts only if one clip
of its model — 9 in 10 of them, by the ledger's history (``forecast.clip_seconds``; a guess
without history) — is rendered, downloaded and verified by the deadline. A model past its
cut-off starts nothing more tonight: its jobs stay queued (never failed, never paid) for the
next night and are named in the summary. Tasks already created are collected whatever the time.

``outlook`` is the one sentence the live display, ``status`` and the notification say of it:
"on track: ends ≈ 06:10, deadline 07:00" or "behind: ≈ 14 job(s) will be left for tomorrow"."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from . import forecast

_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse(text: str, now: float | None = None) -> float:
    """``--finish-by``'s value as epoch seconds. ``HH:MM`` (or ``HH:MM:SS``): the next such
    local time after ``now`` (tomorrow when it has passed today); an ISO date-time: that moment,
    which must lie ahead. Raises ``ValueError`` saying what is wrong and what is accepted."""
    now = time.time() if now is None else now
    s = text.strip()
    accepted = "give a time of day such as 07:00 (the next 07:00, local time) or an ISO date-time such as 2026-12-07T07:00"
    m = _CLOCK.match(s)
    if m:
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hh > 23 or mm > 59 or ss > 59:
            raise ValueError(f"{text!r} is not a time of day: {accepted}")
        return next_local(hh, mm, ss, now)
    if not s:
        raise ValueError(f"empty: {accepted}")
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is neither a time of day nor an ISO date-time: {accepted}") from None
    if len(s) <= 10 and "T" not in s and " " not in s:  # a bare date: midnight is surely not what was meant
        raise ValueError(f"{text!r} is a date without a time: {accepted}")
    at = when.timestamp()  # a naive date-time is the machine's local time
    if at <= now:
        raise ValueError(f"{text!r} has already passed (it is {stamp(now, now)} now): {accepted}")
    return at


def next_local(hh: int, mm: int, ss: int, now: float) -> float:
    """The first local ``hh:mm:ss`` after ``now``. Local time as the machine's clock keeps it:
    on a day when daylight saving starts, a time that does not exist (02:30) is read by the C
    library as the next that does; on one when it ends, an hour that happens twice is its first."""
    today = datetime.fromtimestamp(now).date()
    for day in (today, today + timedelta(days=1), today + timedelta(days=2)):
        at = _local(day, hh, mm, ss)
        if at > now:
            return at
    raise ValueError(f"no local {hh:02d}:{mm:02d} in the next two days")  # pragma: no cover — a clock gone wrong


def _local(day: date, hh: int, mm: int, ss: int) -> float:
    return time.mktime((day.year, day.month, day.day, hh, mm, ss, 0, 0, -1))


def stamp(at: float, now: float | None = None) -> str:
    """``at`` as a person reads it on this machine: ``07:00`` within a day of ``now``, else
    ``2026-12-09 07:00``."""
    now = time.time() if now is None else now
    fmt = "%H:%M" if abs(at - now) < 20 * 3600 else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(at))


class Deadline:
    """A night's deadline and what it allows. ``at`` is epoch seconds; the conductor's clock is
    monotonic, so the deadline is carried over once (``at_mono``) and a wall-clock step (NTP)
    during the night neither starts nor stops anything by itself."""

    def __init__(self, at: float, needs: dict[str, float] | None = None, *, source: str = "--finish-by",
                 guess: Callable[[str], float] | None = None, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.at = at
        self.source = source  # who set it: --finish-by, the manifest, or "the fleet (worker N)"
        self.needs: dict[str, float] = dict(needs or {})  # model → seconds one clip takes (forecast.clip_seconds)
        self._guess = guess or (lambda model: forecast.clip_seconds(model, {})[0])
        self._wall, self._mono = wall, mono
        self.at_mono = mono() + (at - wall())
        self.cut: set[str] = set()  # models that may start nothing more tonight

    def move(self, at: float, source: str) -> None:
        """The fleet's deadline is earlier than this one: work to it from now on."""
        self.at, self.source = at, source
        self.at_mono = self._mono() + (at - self._wall())

    def need(self, model: str) -> float:
        n = self.needs.get(model)
        if n is None:
            n = self.needs[model] = self._guess(model)
        return n

    def left_s(self) -> float:
        """Seconds to the deadline (negative once it has passed)."""
        return self.at_mono - self._mono()

    def allows(self, model: str) -> bool:
        """Whether a clip of ``model`` created now would be in place by the deadline. Once it
        would not, never again tonight (time only moves on)."""
        if model in self.cut:
            return False
        if self._mono() + self.need(model) <= self.at_mono:
            return True
        self.cut.add(model)
        return False

    def past(self, models: list[str]) -> bool:
        """Every one of ``models`` is past its cut-off (asking cuts the ones that just passed it)."""
        return all(not self.allows(m) for m in models)

    def when(self) -> str:
        return stamp(self.at)


def for_night(at: float, models: Iterable[str], history: dict[str, dict[str, Any]],
              typical: Mapping[str, float | None], *, source: str = "--finish-by") -> Deadline:
    """The deadline ``at`` with each model's cut-off from the ledger's history of it, else the
    catalog's typical render time (``forecast.clip_seconds``): what a run works to and what
    ``status`` judges a running night by, computed one way."""
    def clip(model: str) -> float:
        return forecast.clip_seconds(model, history, typical)[0]

    return Deadline(at, {m: clip(m) for m in models}, source=source, guess=clip)


def outlook(at: float, now: float, *, remaining: int, queued: int, eta_s: float | None,
            cut_off: bool = False) -> str:
    """The night against its deadline, in one sentence. ``remaining``: jobs not finished yet (in
    flight or queued), ``queued``: not created yet; ``eta_s``: seconds until the last of them
    is done at the pace seen (the live ETA) or forecast, None when unknown; ``cut_off``: the
    deadline already stopped every start (what is queued waits for the next night)."""
    deadline = stamp(at, now)
    if cut_off:
        return (f"deadline {deadline}: no new job starts tonight; {queued} job(s) left for the next night"
                + (f", {remaining - queued} in flight still collected" if remaining > queued else ""))
    if not remaining:
        return f"on track: nothing left to do, deadline {deadline}"
    if eta_s is None:
        return f"deadline {deadline}: on track or not is known once the first clips are done"
    ends = now + eta_s
    if ends <= at:
        return f"on track: ends ≈ {stamp(ends, now)}, deadline {deadline}"
    if not queued:
        return (f"every job has started: the last ends ≈ {stamp(ends, now)}, after the deadline {deadline} "
                "(clips in flight are always collected)")
    # At this pace, the clips done by the deadline are the share of the remaining ones that its
    # time left allows; the others stay queued (never more than are queued: those in flight end).
    done_by = remaining * max(0.0, at - now) / eta_s if eta_s > 0 else 0.0
    left = min(queued, max(1, math.ceil(remaining - done_by)))
    return f"behind: ≈ {left} job(s) will be left for tomorrow (ends ≈ {stamp(ends, now)} at this pace, deadline {deadline})"


def summary(at: float, source: str, cut: list[str], left: int, left_jobs: list[dict[str, str]],
            ended: float) -> dict[str, object]:
    """What a run's summary (``RunResult.deadline``) keeps of its deadline: when, who set it,
    the models it cut, the jobs it left queued (how many, and the first of them), when the run
    ended and whether that was in time."""
    return {"finish_by": round(at, 3), "deadline": stamp(at, ended), "source": source, "models_cut": cut,
            "left": left, "left_jobs": left_jobs, "ended_at": round(ended, 3), "on_time": ended <= at}


def verdict(d: dict[str, object], show: int = 10) -> list[str]:
    """The summary's and the notification's lines for a deadline (``summary``): in time or not,
    and the jobs left for the next night by row and output (the first ``show``, then a count)."""
    ended = float(d["ended_at"])  # type: ignore[arg-type]
    at = float(d["finish_by"])  # type: ignore[arg-type]
    when = (f"ended {stamp(ended, at)}, before the deadline {d['deadline']}" if d["on_time"] else
            f"ended {stamp(ended, at)}, {forecast.duration(ended - at)} after the deadline {d['deadline']} "
            "(clips already in flight are always collected)")
    left = int(d["left"])  # type: ignore[call-overload]
    if not left:
        return [f"finish-by {d['deadline']}: on track — {when}"]
    jobs: list[dict[str, str]] = d["left_jobs"]  # type: ignore[assignment]
    out = [f"finish-by {d['deadline']}: {left} job(s) left queued for the next night — the forecast said they "
           f"could not be rendered, downloaded and verified by then (not paid, not failed); {when}"]
    out += [f"  left for tomorrow: {j['row']} → {j['output']}" for j in jobs[:show]]
    if left > min(show, len(jobs)):
        out.append(f"  … and {left - min(show, len(jobs))} more (batchgen export lists every queued job)")
    return out
