"""When to poll a task: a schedule that learns, per model, how long tasks take against their
``estimated_time``.

foxapi does not document how accurate ``estimated_time`` is. Each poll tells something: a task
still rendering at ``t`` seconds took longer than ``t`` (a lower bound on its ratio
``actual / estimate``), a task found completed at ``t`` took at most ``t`` (an upper bound),
and a progress of ``p`` % at ``t`` predicts ``t × 100 / p``. ``Pace`` keeps the recent bounds
of one model and picks the first poll of its next task from them:

* **Estimates that hold** (every lower bound below every upper bound): the first poll goes at
  the smallest upper bound seen — a moment known to come after the end — so each task is
  polled once. Every ``EXPLORE_EVERY``-th task polls at the middle of the remaining gap instead
  (bisection), but no more than ``Pace.probe_step`` before the known end (``PROBE_STEP_S``,
  doubling while probes find the end loose, back to it once one finds it tight), so the schedule keeps
  closing in on the true end rather than staying late (a first poll placed at the known end
  reports a little after it, so without probes the known end creeps up as the window forgets
  older bounds). Estimates that prove exact are probed less often: each probe (or first poll)
  that finds its task still rendering doubles the interval between probes, up to
  ``EXPLORE_MAX``; a poll that lowers the known end brings it back to ``EXPLORE_EVERY``.
  Probes answer a render later, so while they find the end loose each new one reaches further
  without waiting, and a probe found done yet not early (its answer came late) reaches further
  too. When the bounds straddle a ratio of 1 (``Pace.exact``) the known end is counted in seconds
  past the estimate, and ``Anchor`` learns whether the task starts at the create's send or a
  fixed time before its answer (issue 31 part 4). While the known end lies far past the latest
  point a task was seen rendering (after the first wave, whose bounds came from polls timed by
  progress), one first poll in ``LADDER_EVERY`` probes at depths doubling from ``LADDER_STEP_S``
  below it: one render's probes find how loose it is, where one probe at a time took hundreds
  of tasks.
* **Estimates that hold but for a wait of each task's own** (``Pace.band``: a task queued in
  `pending` for a time its estimate does not count): the ends scatter by a few tenths of a
  second past the estimates, not by a share of them. The first poll goes where a share
  ``BAND_HITS`` of first polls find their task done (followed in small steps from the latest point
  a task was seen rendering), a task still rendering there is polled again in small steps.
* **Estimates that scatter** (bounds overlap across tasks): the first poll goes a little before
  the lower end of what was seen (``EARLY``), where a still-rendering task reports its
  progress, from which the second poll is timed to land just after the result is ready.
* **Requests short** (the request budget binds, ``thrifty``): the first poll goes just after the
  latest point a task was seen still rendering (and not before the estimate), never earlier: a
  probe's token is one another task's create or final poll needed, and a poll that comes a
  little late costs nothing.
* **No estimate, or past it without progress**: polls grow geometrically from ``--poll-min``;
  but tasks first polled while nothing bounded a model's end (the first wave) are polled at the
  estimate from the send (or the known end, if earlier) and then in small doubling steps
  (``SEED_STEP_S``): they seed the known end.

A poll aimed at a moment (the known end, the estimate, the end a first progress predicts) is a
single shot, so ``--poll-min`` does not hold it back: that floor is for polls that repeat (past
the estimate, or following progress), where it bounds the request rate. Held back, a probe's
second poll came up to a quarter of the estimate after the result was ready (issue 31 part 4).

Jitter spreads polls of tasks created together by a few milliseconds, never by a fraction of the
render. Errors back off with jitter and honour Retry-After (``budget``). Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..budget import backoff
from .anchor import Anchor, remember

EARLY = 0.9  # first poll at this fraction of the estimate while nothing is known (or it scatters)
WINDOW = 64  # bounds kept per model: recent tasks speak for the next ones
EXPLORE_EVERY = 8  # in the "estimates hold" regime, one first poll in eight probes the gap
MIN_FOR_TRUST = 3  # upper bounds needed before a first poll is placed at one
SPREAD_S = 0.03  # jitter: at most this many seconds, or 1 % of the delay if less
# A poll placed at a known end comes this much after it: clocks, latency and rounding make
# "exactly at the end" a race that a second poll would pay for.
MARGIN_S = 0.02
# A first poll at the known end (estimates hold) comes this much after it, spread by at most this
# much: the known end is a "done by" bound already, so MARGIN_S and SPREAD_S (35 ms on average)
# were most of the 57 ms a freed slot waited for its detection with exact estimates.
END_MARGIN_S = 0.002
END_SPREAD_S = 0.002
PROBE_STEP_S = 0.05  # a probe comes this long before the known end (doubling while probes find it loose)
PROBE_STEP_MAX_S = 1.6
EXPLORE_MAX = 64  # probes at least once in this many first polls: the window's length
# While the known end lies more than LADDER_GAP_S (plus two round trips) past the latest point a
# task was seen rendering, one first poll in LADDER_EVERY probes, LADDER_STEP_S before the known
# end, then twice that, and so on up to half the gap (``Pace.first_ratio``).
LADDER_GAP_S = 0.02
LADDER_EVERY = 4
LADDER_STEP_S = 0.01
AIMED_FLOOR_S = 0.01  # an aimed poll (see the module's docstring) comes at least this long after the last
# Past the known end (estimates hold), the first polls step by this (or the round trips, if longer), doubling…
PAST_END_STEP_S = 0.05
PAST_END_POLLS = 4  # …for at most this many polls of the task
SEED_STEP_S = 0.02  # seeding the known end (no progress told): steps past the estimate, doubling…
SEED_POLLS = 6  # …for at most this many polls of the task
THRIFTY_MARGIN = 1.02  # a thrifty first poll comes this much after the latest ratio seen still rendering
# Ends that scatter past their estimates by at most this many seconds (a wait in `pending` the
# estimate does not count, the same for short and long renders): one poll at the latest end seen
# costs less than an early poll and one timed by a progress told in steps of 25 (``Pace.band``).
BAND_MAX_S = 0.45
# Within the band, first polls aim where BAND_HITS of them find their task done (a quantile followed
# by steps of BAND_STEP_S: up on a miss, down on a hit, weighted so they balance at that share); a
# miss is polled again in small steps, as past a known end.
BAND_HITS = 0.7
BAND_STEP_S = 0.005


class Polled(Protocol):
    """What the schedule reads of a task in flight (``moves.LiveJob``)."""

    model: str
    polls: int
    progress: int
    estimated_time: float | None
    submitted_at: float | None
    create_sent: float | None
    poll_errors: int
    retry_after: float | None


@dataclass
class Pace:
    """One model's recent evidence: bounds on ``actual / estimate``."""

    lowers: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    uppers: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    # Round trips (create's + poll's) of recent polls: the width the bounds cannot close below.
    slacks: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    firsts: int = 0  # first polls planned (every explore_every-th explores)
    probes: int = 0  # of which probes
    explore_every: int = EXPLORE_EVERY  # doubles while probes find the known end tight
    probe_step: float = PROBE_STEP_S  # seconds before the known end a probe goes; doubles while probes find it loose
    descending: bool = False  # the last probe news: the known end was loose (not yet found tight since)
    news: int = 0  # probe news so far (loose or tight), and its count when the last probe was placed
    news_at_probe: int = -1
    probed: dict[float, None] = field(default_factory=dict)  # create-sent moments of tasks whose first poll probes
    # The same bounds in seconds past the estimate (``elapsed − estimate``), and the round trip of
    # the create of each task done by an upper bound (parallel to ``uppers``).
    upper_secs: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    lower_secs: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    upper_rtts: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    anchor: Anchor = field(default_factory=Anchor)
    band_aim: float | None = None  # seconds past the estimate the next first poll in the band goes (``band``)
    banded: dict[float, None] = field(default_factory=dict)  # create-sent moments of first polls in the band
    ladder: int = 0  # probes placed while the gap is wide (``first_ratio``): sets the next one's depth
    seeded: dict[float, None] = field(default_factory=dict)  # create-sent moments of tasks first polled with no bound
    outlived: bool = False  # a task seen rendering past its estimate (from the create's answer): estimates fail

    def exact(self) -> bool:
        """Estimates that hold with a ratio of 1 between the bounds: the tasks end at their
        estimate give or take round trips, so the known end is a number of seconds past the
        estimate (the smallest seen), not a ratio. As a ratio, the smallest was a long task's;
        a short task's poll then went early, and a long task's late by up to the longest render
        over the shortest times a bound's round trips (known ends learnt from 3 s tasks put the
        first polls of 8 s tasks 0.1 s late)."""
        return self.holds() and max(self.lowers, default=0.0) <= 1.0 <= min(self.uppers) \
            and len(self.upper_secs) == len(self.uppers)

    def _end(self) -> int:
        """The bound behind the known end (exact estimates): the smallest "done by" from the send;
        anchored at the answer, the smallest from the answer that no task seen rendering contradicts."""
        secs, rtts = self.upper_secs, self.upper_rtts
        if self.anchor.answer and len(rtts) == len(secs) and self.lower_secs:
            floor = max(self.lower_secs)
            ok = [i for i in range(len(secs)) if secs[i] - rtts[i] > floor]
            if ok:
                return min(ok, key=lambda i: secs[i] - rtts[i])
        return min(range(len(secs)), key=secs.__getitem__)

    def end_ratio(self, estimate: float | None) -> float:
        """The known end for a task of ``estimate`` seconds, as a ratio (``holds`` assumed)."""
        if estimate and estimate > 0 and self.exact():
            return 1.0 + self.upper_secs[self._end()] / estimate
        return min(self.uppers)

    def end_rtt(self) -> float:
        """The create's round trip of the task behind the known end (0 when not known)."""
        exact = self.exact()
        bounds = self.upper_secs if exact else self.uppers
        if len(self.upper_rtts) != len(bounds) or not bounds:
            return 0.0
        return self.upper_rtts[self._end() if exact else min(range(len(bounds)), key=bounds.__getitem__)]

    def beats(self, estimate: float, elapsed: float, *, done: bool, rtt: float = 0.0) -> bool:
        """Whether a bound is news: done before the known end, or rendering past the latest seen."""
        if self.exact():
            secs = elapsed - estimate
            if done and self.anchor.answer and len(self.upper_rtts) == len(self.upper_secs):
                end = self._end()
                return secs - rtt < self.upper_secs[end] - self.upper_rtts[end]
            return secs < min(self.upper_secs) if done else secs > max(self.lower_secs, default=-1e9)
        return elapsed / estimate < min(self.uppers) if done else elapsed / estimate > max(self.lowers, default=0.0)

    def holds(self) -> bool:
        """Whether the estimates look exact up to a constant: every bound consistent."""
        return len(self.uppers) >= MIN_FOR_TRUST and max(self.lowers, default=0.0) < min(self.uppers)

    def slack(self) -> float:
        """The typical round trips, in seconds, around a poll (median): the step past the known end."""
        if not self.slacks:
            return 0.0
        return sorted(self.slacks)[len(self.slacks) // 2]

    def first_ratio(self, thrifty: bool = False, estimate: float | None = None) -> float:
        """Where the first poll of the next task goes, as a fraction of its estimate.
        ``thrifty``: requests are short (the budget binds), so the poll goes where every task
        seen so far was done — a poll that finds its task still rendering wastes a token some
        other task needed, while a late one costs nothing."""
        self.firsts += 1
        if thrifty:
            # Past the latest moment a task was still seen rendering, never before the estimate.
            # Not past the upper bounds: a short budget delays polls, so "done by" figures are
            # as late as the queue was long and say little about when tasks end.
            late = max(1.0, max(self.lowers, default=0.0) * THRIFTY_MARGIN)
            return min(late, min(self.uppers)) if self.holds() else late
        if not self.holds():
            return EARLY
        hi = self.end_ratio(estimate)
        lo = max(self.lowers) if self.lowers else hi * EARLY
        slack = self.slack()
        if estimate and self.exact() and self.lower_secs:  # lower bounds: from the answer; the known end: the
            # send (anchored at the answer: its task's, ``end_rtt``, and only the poll's round trip is slack)
            answer = self.anchor.answer and self.anchor.mean is not None
            lo = 1.0 + (max(self.lower_secs) + (self.end_rtt() if answer else 0.0)) / estimate
            slack = max(0.0, slack - (self.anchor.mean or 0.0)) if answer else slack
        gap = (hi - lo) * estimate if estimate and self.exact() else 0.0
        if estimate and gap > LADDER_GAP_S + 2 * slack and self.firsts % LADDER_EVERY == 0:
            # The known end is far from the latest point a task was seen rendering (after the
            # first wave, whose bounds came from polls timed by progress, 50-150 ms late): probes
            # one first poll in LADDER_EVERY, at depths doubling from LADDER_STEP_S below the
            # known end up to half the gap, so one render's probes find how loose it is (the
            # deepest found done sets it). One probe at a time, every eighth first poll and
            # answered a render later, took up to 200 tasks to bring it down (0.09 s of detection).
            rungs = max(1, int(math.log2(max(1.0, gap / 2 / LADDER_STEP_S))) + 1)
            depth = LADDER_STEP_S * (1 << (self.ladder % rungs))
            self.probes, self.ladder = self.probes + 1, self.ladder + 1
            return hi - depth / estimate
        if self.firsts % self.explore_every == 0 and hi - lo > 0.002:
            self.probes += 1
            if self.descending and self.news_at_probe == self.news:
                # No news since the last probe, which went out after a loose one: probes take a
                # render to answer, so waiting for each before reaching further took one doubling a
                # render (a known end 0.4 s late after the first wave took 150 tasks to come down).
                self.probe_step = min(self.probe_step * 2, PROBE_STEP_MAX_S)
            self.news_at_probe = self.news
            # Halfway into the gap, but never more than PROBE_STEP_S before the known end: a
            # probe that finds its task rendering costs that task at most that much.
            return max((lo + hi) / 2, hi - self.probe_step / estimate) if estimate else (lo + hi) / 2
        return hi

    def band(self) -> float | None:
        """Estimates that hold but for a wait of each task's own (issue 31 part 4: a task queued in
        `pending` 0.15-0.45 s, a time its estimate does not count): the bounds overlap as ratios,
        yet in seconds past the estimate (timed from the create's answer) the latest point a task
        was seen rendering lies within ``BAND_MAX_S`` of the earliest "done by". Returns where the
        next first poll goes, in seconds past its estimate: an aim that starts at that latest
        point (which never passes the latest true end) and follows the first polls' outcomes
        (``band_learn``) towards the point where ``BAND_HITS`` of them find their task done; None
        otherwise (estimates that hold, or scatter by a share of the render: ±15 % of 3-8 s is
        seconds). Timed by a coarse progress instead (an early poll read 75 % at nine tenths of
        the render; the next was aimed at the latest ratio seen done), a task was found 0.6 s late."""
        if len(self.upper_secs) < MIN_FOR_TRUST or len(self.lower_secs) < MIN_FOR_TRUST \
                or len(self.upper_secs) != len(self.uppers):
            return None
        top = max(self.lower_secs)
        if self.holds() or top - min(self.upper_secs) > BAND_MAX_S:
            return None
        if self.band_aim is None or self.band_aim > top:
            self.band_aim = top
        return self.band_aim

    def band_learn(self, done: bool) -> None:
        """A first poll placed in the band found its task done (the aim may come earlier) or not."""
        if self.band_aim is not None:
            self.band_aim += -BAND_STEP_S * (1 - BAND_HITS) if done else BAND_STEP_S * BAND_HITS

    def known_end(self, estimate: float | None = None) -> float | None:
        """A fraction of the estimate by which a task of this model has always been done."""
        return self.end_ratio(estimate) if self.holds() else None


class PaceBook:
    """``Pace`` per model for one run, fed by every poll's outcome."""

    def __init__(self) -> None:
        self._by_model: dict[str, Pace] = {}

    def pace(self, model: str) -> Pace:
        p = self._by_model.get(model)
        if p is None:
            p = self._by_model[model] = Pace()
        return p

    def observe(self, model: str, estimate: float | None, elapsed: float, *, done: bool, progress: int = 0,
                probe: bool = False, rtt: float = 0.0) -> None:
        """What one poll saw, ``elapsed`` seconds after the task was created (``probe``: the
        first poll of a task placed before the known end)."""
        if not estimate or estimate <= 0 or elapsed <= 0:
            return
        p = self.pace(model)
        ratio = elapsed / estimate
        if p.holds():  # how often to probe: less while the known end proves tight
            if done and p.beats(estimate, elapsed, done=True, rtt=rtt):
                # The end was loose: probe again soon, and further before it (a known end learnt
                # from late polls, 0.8 s late, took 16 probes at 50 ms each to come down).
                p.explore_every = EXPLORE_EVERY
                p.probe_step = min(p.probe_step * 2, PROBE_STEP_MAX_S)
                p.descending, p.news = True, p.news + 1
            elif done and probe:
                # A probe found its task done, yet not before the known end: its answer came late
                # (a loaded machine). It did not reach far enough: the next reaches further.
                p.probe_step = min(p.probe_step * 2, PROBE_STEP_MAX_S)
                p.descending, p.news = True, p.news + 1
                return
            elif done:
                # No news: a poll placed at the known end finds the task done a little after it.
                # Kept, such bounds would push the smaller ones out of the window and the known
                # end would creep up by that little every WINDOW tasks (0.45 s late after 400
                # tasks in makespan-habits). Slower tasks show as still rendering there instead.
                return
            elif p.beats(estimate, elapsed, done=False):
                p.explore_every = min(EXPLORE_MAX, p.explore_every * 2)
                p.probe_step = PROBE_STEP_S
                p.descending, p.news = False, p.news + 1
        if done:
            p.uppers.append(ratio)
            p.upper_secs.append(elapsed - estimate)
            p.upper_rtts.append(rtt)
        else:
            p.lowers.append(ratio)
            p.outlived = p.outlived or ratio > 1.0
            p.lower_secs.append(elapsed - estimate)

    def observe_poll(self, model: str, estimate: float | None, *, done: bool, create: tuple[float, float],
                     poll: tuple[float, float], progress: int = 0) -> None:
        """One poll's outcome with the moments around it: ``create`` and ``poll`` are (sent,
        answered). The provider started the task somewhere within the create's round trip and
        looked at it somewhere within the poll's, so a task found completed took at most
        ``poll answered − create sent``, and one still rendering took more than ``poll sent −
        create answered``. Measuring both from the answers (as a single clock would) makes a
        slow "still rendering" answer look like a lower bound above the true end: the bounds
        then contradict each other and exact estimates look noisy (two polls a task)."""
        done_by = poll[1] - create[0]
        running_at = poll[0] - create[1]
        pace = self.pace(model)
        if estimate and estimate > 0:
            pace.slacks.append(max(0.0, create[1] - create[0]) + max(0.0, poll[1] - poll[0]))
        probe = create[0] in pace.probed  # the task's first poll, placed before the known end
        pace.probed.pop(create[0], None)
        pace.anchor.learn(create, done)
        if create[0] in pace.banded:
            del pace.banded[create[0]]
            pace.band_learn(done)
        self.observe(model, estimate, done_by if done else running_at, done=done, progress=progress, probe=probe,
                     rtt=create[1] - create[0])


def poll_delay(job: Polled, now: float, *, poll_min: float, poll_max: float, book: PaceBook | None = None,
               jitter: Callable[[float], float] | None = None, thrifty: bool = False) -> float:
    """Seconds until the next poll of ``job`` (see the module's docstring). ``jitter(d)`` returns
    what to add to a delay ``d`` (default: up to ``SPREAD_S`` or 1 % of it). ``thrifty``: the
    request budget binds (``budget.RequestBudget.binding``): no probing before the known end."""
    # Timed from the create's send when this process sent it: the bounds a first poll is placed
    # by are measured from there (``observe_poll``), and a task cannot start before it was asked
    # for. From the answer, an API that answers a create after its task started (or just
    # slowly) made every poll late by the create's round trip (issue 31 part 4).
    elapsed = now - (job.create_sent or job.submitted_at or now)
    if job.poll_errors:
        return max(job.retry_after or 0.0, backoff(job.poll_errors, poll_min, poll_max))
    est = job.estimated_time
    floor = max(0.02, min(poll_min, est * 0.25)) if est is not None else poll_min
    aimed = False  # a single shot at a moment (see the module's docstring): not held back by the floor
    pace = book.pace(job.model) if book is not None else None
    end = pace.known_end(est) if pace is not None else None
    spread = SPREAD_S
    band = pace.band() if pace is not None and not thrifty and est is not None else None  # (None while estimates hold)
    since = now - (job.submitted_at or job.create_sent or now)  # from the create's answer, as lower bounds are
    if band is not None and est is not None and job.polls == 0:
        d = est + band - since + MARGIN_S  # where most tasks seen were done: one poll, or a few steps
        aimed = True
        if pace is not None and job.create_sent is not None:
            remember(pace.banded, job.create_sent)
    elif band is not None and est is not None and job.polls <= PAST_END_POLLS and since >= est + band:
        # Rendering past the band (its wait was the longest yet): small steps, doubling, as past a
        # known end; timed by the coarse progress instead, the next poll came seconds late.
        d = max(PAST_END_STEP_S, pace.slack() if pace is not None else 0.0) * 2 ** max(0, job.polls - 1)
        aimed = True
    elif job.polls == 0 and est is not None:
        if pace is not None and not pace.uppers and job.create_sent is not None:
            remember(pace.seeded, job.create_sent)  # nothing bounds the end yet: this task seeds it
        ratio = pace.first_ratio(thrifty, est) if pace is not None else (1.0 if thrifty else EARLY)
        d = est * ratio - elapsed + (END_MARGIN_S if end is not None and ratio >= end else 0.0)
        if end is not None and pace is not None:
            spread = END_SPREAD_S
            if job.create_sent is not None and job.submitted_at is not None:
                d += pace.anchor.shift(job.submitted_at - job.create_sent, pace.end_rtt())
                if ratio >= end:
                    pace.anchor.aim(job.create_sent)
            if ratio < end and (job.create_sent or job.submitted_at):  # a probe: its outcome is news either way
                remember(pace.probed, job.create_sent or job.submitted_at or 0.0)
    elif est is not None and pace is not None and not thrifty and job.progress == 0 and 0 < job.polls <= SEED_POLLS \
            and (len(pace.uppers) < MIN_FOR_TRUST or (end is not None and (job.create_sent or 0.0) in pace.seeded)):
        # A seed (see the module's docstring): at its first three peers' known end (plus MARGIN_S)
        # instead, the habits' first wave was found ~0.1 s late, and the next waves learnt that.
        at = est * min(1.0, end) if end is not None else est
        d = at - elapsed if elapsed < at else SEED_STEP_S * 2 ** max(0, job.polls - 2)
        aimed = True
    elif est is not None and end is not None and elapsed < est * end + MARGIN_S:
        d = est * end - elapsed + MARGIN_S  # a probe came early: go to where tasks have always been done
        d = min(d, est - since + MARGIN_S) if pace is not None and not pace.outlived else d  # (see below)
        aimed = True
    elif est is not None and end is not None and job.polls <= PAST_END_POLLS:
        # Estimates hold, yet this task was still rendering where tasks have always been done:
        # late by a round trip's jitter, not by a render. Small steps, doubling, before the usual
        # schedule: from --poll-min (2 s by default), or timed by a coarse progress, the next poll
        # came seconds after the result was ready.
        d = max(PAST_END_STEP_S, pace.slack() if pace is not None else 0.0) * 2 ** max(0, job.polls - 1)
        aimed = True
    elif 0 < job.progress < 100 and elapsed > 0:
        d = elapsed * (100 - job.progress) / job.progress * 1.05
        if est is not None and pace is not None and pace.uppers:
            # Never later than where every task seen so far was done: a coarse progress (steps
            # of 25) read 75 % at nine tenths of the render and put the next poll 1.6 s late.
            # As a ratio or in seconds past the estimate, whichever comes first: a wait in
            # `pending` is the same for short and long renders, and as a ratio a 3 s task's put
            # an 8 s task's poll 0.7 s late.
            done_by = est * max(pace.uppers)
            if len(pace.upper_secs) == len(pace.uppers):
                done_by = min(done_by, est + max(pace.upper_secs))
            if elapsed < done_by:
                d = min(d, done_by - elapsed + MARGIN_S)
        capped = False
        if est is not None and pace is not None and not pace.uppers and not thrifty:
            # Nothing seen done yet: no later than as far past the estimate as the early poll was
            # before it, then steps of half that, doubling. Extrapolated, a coarse 75 % at nine
            # tenths of the estimate put the first tasks' second polls a third of the render
            # late, and the known end learnt from them 0.6 s late for the next two waves (the
            # pending variant's first 120 tasks); held back by --poll-min, a third poll came
            # seconds late.
            late = est * (2 - EARLY)
            cap = late - elapsed if elapsed < late else est * (1 - EARLY) / 2 * 2 ** max(0, job.polls - 2)
            if cap + MARGIN_S < d:
                d, capped = cap + MARGIN_S, True
        if est is not None and pace is not None and not pace.outlived and since < est < since + d - END_MARGIN_S:
            # Not past the estimate from the create's answer while no task outlived its own: timed by a
            # coarse progress, a probe's next poll came 0.3 s after the end (issue 31 part 4, indep check).
            d, capped = est - since + END_MARGIN_S, True
        aimed = job.polls <= 1 or capped  # the end the first progress predicts; later ones repeat: the floor
    elif est is not None and elapsed < est + MARGIN_S:
        # The estimate from the create's answer: a task runs by then on an API that started it
        # before answering (from the send, the poll would race the end by the create's way there).
        d = max(est - elapsed, est - since + MARGIN_S)
        aimed = True
    else:
        d = poll_min * 1.5 ** min(job.polls, 10)
    if aimed:
        floor = min(floor, AIMED_FLOOR_S)
    d = min(poll_max, max(floor, d))
    return d + (jitter(d) if jitter is not None else random.uniform(0.0, min(spread, d * 0.01)))


__all__ = ["EARLY", "Anchor", "Pace", "PaceBook", "Polled", "poll_delay"]
