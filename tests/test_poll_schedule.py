"""The poll schedule (pipeline.pace.poll_delay / PaceBook): first poll a little before the estimate
while nothing is known, then placed from what this run learnt of the model (once per task when
estimates hold, early with a progress-timed second poll when they scatter); progress
extrapolation; geometric without estimate; backoff after errors; bounded; a jitter of a few
milliseconds, never a fraction of the render."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from batchgen.pipeline.pace import (BAND_HITS, EARLY, END_MARGIN_S, END_SPREAD_S, EXPLORE_EVERY, EXPLORE_MAX,
                                   LADDER_EVERY, PROBE_STEP_S, SEED_STEP_S, Anchor, PaceBook, poll_delay)

NOW = 1_000_000.0
M = "grok-imagine-text-to-video"


@dataclass
class Task:
    model: str = M
    polls: int = 0
    progress: int = 0
    estimated_time: float | None = None
    submitted_at: float | None = NOW
    create_sent: float | None = None
    poll_errors: int = 0
    retry_after: float | None = None


def delay(t: Task, now: float = NOW, book: PaceBook | None = None, poll_min: float = 2.0) -> float:
    return poll_delay(t, now, poll_min=poll_min, poll_max=60.0, book=book, jitter=lambda d: 0.0)


def test_first_poll_comes_just_before_the_estimate_while_nothing_is_known():
    assert delay(Task(estimated_time=40.0), NOW + 10) == pytest.approx(40 * EARLY - 10)
    assert delay(Task(estimated_time=40.0), NOW + 10, PaceBook()) == pytest.approx(40 * EARLY - 10)


def test_progress_extrapolates_the_remaining_time():
    # 25 % after 20 s: 60 s left, +5 % = 63 s, capped at poll_max
    assert delay(Task(estimated_time=40.0, polls=1, progress=25), NOW + 20) == 60.0
    assert delay(Task(estimated_time=40.0, polls=1, progress=50), NOW + 20) == pytest.approx(21.0)


def test_past_the_estimate_without_progress_it_grows_geometrically_up_to_poll_max():
    late = [delay(Task(estimated_time=10.0, polls=n), NOW + 100) for n in (1, 2, 3, 4)]
    assert late == pytest.approx([2 * 1.5, 2 * 1.5 ** 2, 2 * 1.5 ** 3, 2 * 1.5 ** 4])
    assert delay(Task(estimated_time=10.0, polls=30), NOW + 100) == 60.0


def test_never_below_the_floor_a_short_estimate_lowers_it():
    assert delay(Task(estimated_time=40.0), NOW + 100) == 2.0  # overdue: poll-min
    assert delay(Task(estimated_time=0.2), NOW + 5) == pytest.approx(0.05)  # a quarter of a 0.2 s estimate
    assert delay(Task(estimated_time=None), NOW) == 2.0


def test_errors_back_off_and_honour_retry_after():
    for _ in range(50):
        d = poll_delay(Task(poll_errors=3), NOW, poll_min=2.0, poll_max=60.0)
        assert 0 <= d <= min(60.0, 2.0 * 2 ** 3)
    assert poll_delay(Task(poll_errors=1, retry_after=30.0), NOW, poll_min=2.0, poll_max=60.0) >= 30.0


def test_jitter_is_a_few_milliseconds_not_a_fraction_of_the_render():
    ds = [poll_delay(Task(estimated_time=40.0), NOW + 10, poll_min=2.0, poll_max=60.0) for _ in range(200)]
    base = 40 * EARLY - 10
    assert all(base <= d <= base + 0.03 for d in ds) and len(set(ds)) > 100


def _simulate(book: PaceBook, renders: list[tuple[float, float]], *, with_progress: bool = True) -> tuple[float, float]:
    """Poll tasks (estimate, actual) one after another with the schedule; returns polls per task
    and the mean lateness (poll that found it done minus its end)."""
    polls = late = 0.0
    for est, actual in renders:
        t = Task(estimated_time=est)
        now = NOW
        while True:
            now += delay(t, now, book, poll_min=0.05)  # as the benchmarks run
            t.polls += 1
            polls += 1
            elapsed = now - NOW
            done = elapsed >= actual
            t.progress = 100 if done else (min(99, int(100 * elapsed / actual)) if with_progress else 0)
            book.observe(M, est, elapsed, done=done, progress=t.progress)
            if done:
                late += elapsed - actual
                break
    return polls / len(renders), late / len(renders)


@pytest.mark.parametrize("with_progress", [True, False])
def test_exact_estimates_converge_to_one_poll_per_task(with_progress):
    rng = random.Random(1)
    tasks = [(e, e) for e in (rng.uniform(3, 8) for _ in range(400))]
    book = PaceBook()
    _simulate(book, tasks[:40], with_progress=with_progress)  # learning
    polls, late = _simulate(book, tasks[40:], with_progress=with_progress)
    assert polls <= 1 + 1.5 / EXPLORE_EVERY  # one poll, plus the occasional probe
    assert late < 0.05  # seconds after the end, on average


def test_noisy_estimates_degrade_to_an_early_poll_and_a_progress_timed_second():
    rng = random.Random(2)
    tasks = [(e, e * rng.uniform(0.85, 1.15)) for e in (rng.uniform(3, 8) for _ in range(400))]
    book = PaceBook()
    polls, late = _simulate(book, tasks)
    assert not book.pace(M).holds()
    assert polls <= 2.0 and late < 0.3


def test_slow_answers_do_not_make_exact_estimates_look_noisy():
    """Requests take time: the provider starts a task somewhere within the create's round trip
    and looks at it somewhere within the poll's. A "still rendering" answer that came back late
    must not count as a lower bound measured at its arrival (it would pass the true end and
    contradict the upper bounds: exact estimates would look noisy, two polls a task)."""
    rng = random.Random(3)
    book, by_arrival = PaceBook(), PaceBook()  # by_arrival: both bounds timed at the answers
    for _ in range(200):
        est = rng.uniform(3, 8)
        create = (NOW, NOW + rng.uniform(0.001, 0.2))  # (sent, answered): the task started in between
        started = rng.uniform(*create)
        # one poll just before the end, answered late; one just after, answered quickly
        for done, sent, latency in ((False, started + est - 0.01, rng.uniform(0.05, 0.3)),
                                    (True, started + est + 0.01, rng.uniform(0.001, 0.01))):
            book.observe_poll(M, est, done=done, create=create, poll=(sent, sent + latency))
            by_arrival.observe(M, est, sent + latency - create[1], done=done)
    assert book.pace(M).holds()
    assert not by_arrival.pace(M).holds()


def test_a_first_poll_is_timed_from_the_creates_send_not_its_answer():
    """Bounds are measured from the send; an API that answers a create 0.5 s after its task
    started must not make the poll 0.5 s late."""
    book = PaceBook()
    for _ in range(3):
        book.observe("m", 10.0, 10.2, done=True)
    sent = Task(estimated_time=10.0, create_sent=NOW - 0.5)
    answered = Task(estimated_time=10.0)
    spread = lambda d: 0.0  # noqa: E731
    d_sent = poll_delay(sent, NOW, poll_min=2.0, poll_max=60.0, book=book, jitter=spread)
    d_answered = poll_delay(answered, NOW, poll_min=2.0, poll_max=60.0, book=book, jitter=spread)
    assert d_answered - d_sent == pytest.approx(0.5)


def _exact_book(est: float, lo: float, hi: float, slack: float, n: int = 8) -> PaceBook:
    """A book whose tasks of ``est`` seconds were seen rendering at ``lo`` and done by ``hi``
    (ratios), every poll's round trips summing to ``slack`` seconds."""
    book = PaceBook()
    for _ in range(n):
        for done, ratio in ((False, lo), (True, hi)):
            # observe_poll: a create (sent, answered) and a poll (sent, answered) of slack/2 each
            t = NOW + est * ratio
            book.observe_poll(M, est, done=done, create=(NOW, NOW + slack / 2) if done else (NOW - slack / 2, NOW),
                              poll=(t - slack / 2, t) if done else (t, t + slack / 2))
    return book


def test_probes_come_less_early_and_less_often_while_the_known_end_proves_tight():
    """Every explore_every-th first poll probes the gap between the bounds: halfway in, but
    never more than PROBE_STEP_S before the known end. A probe that finds its task still
    rendering (the end is tight) doubles the interval, up to EXPLORE_MAX; one that lowers the
    known end brings it back to EXPLORE_EVERY."""
    book = _exact_book(5.0, 0.90, 1.00, slack=0.25)  # a 0.5 s gap, as wide as the round trips: no ladder
    p = book.pace(M)
    assert p.holds() and p.explore_every == EXPLORE_EVERY
    ratios = [p.first_ratio(estimate=5.0) for _ in range(2 * EXPLORE_EVERY)]
    probes = [r for r in ratios if r < 1.0]
    assert probes == pytest.approx([1.0 - PROBE_STEP_S / 5.0] * 2)  # 50 ms before the end, not 250 ms
    intervals = []
    for k in range(6):  # each probe finds its task still rendering, a little later each time
        book.observe(M, 5.0, 5.0 * (0.99 + 0.001 * k), done=False)
        intervals.append(p.explore_every)
    assert intervals == [16, 32, 64, EXPLORE_MAX, EXPLORE_MAX, EXPLORE_MAX]
    firsts = p.probes
    [p.first_ratio(estimate=5.0) for _ in range(EXPLORE_MAX)]
    assert p.probes - firsts == 1  # one probe in EXPLORE_MAX first polls
    book.observe(M, 5.0, 5.0 * 0.998, done=True)  # found done before the known end: it was loose
    assert p.explore_every == EXPLORE_EVERY and min(p.uppers) == pytest.approx(0.998)


def test_a_probes_second_poll_goes_to_the_known_end_whatever_poll_min():
    """The early probe found the task rendering: its second poll is aimed at where tasks have
    always been done, not held back by --poll-min (default 2 s; the floor was a quarter of the
    estimate, so the clip was found about a second late)."""
    book = _exact_book(5.0, 0.9, 1.0, slack=0.0)
    probed = Task(estimated_time=5.0, polls=1, progress=95)
    d = delay(probed, NOW + 4.75, book, poll_min=2.0)
    assert d == pytest.approx(5.0 * 1.0 - 4.75 + 0.02)


def test_without_progress_the_second_poll_is_aimed_at_the_estimate_from_the_creates_answer():
    """No progress told (an API's habit) and nothing learnt yet: after the early first poll, the
    next goes at the estimate counted from the create's answer — once, not held back by
    --poll-min — then, past it, geometrically from --poll-min."""
    t = Task(estimated_time=5.0, polls=1, create_sent=NOW - 0.1, submitted_at=NOW)
    assert delay(t, NOW + 4.5, poll_min=2.0) == pytest.approx(0.5 + 0.02)
    t.polls = 2
    assert delay(t, NOW + 5.03, poll_min=2.0) == pytest.approx(2.0 * 1.5 ** 2)


def test_a_progress_report_times_one_aimed_poll_then_the_floor_holds():
    t = Task(estimated_time=40.0, polls=1, progress=99)
    assert delay(t, NOW + 39.0, poll_min=2.0) == pytest.approx(39.0 / 99 * 1.05)  # below poll_min: aimed
    t.polls = 2
    assert delay(t, NOW + 39.5, poll_min=2.0) == 2.0  # stuck at 99 %: not a poll every 0.4 s


def test_a_task_late_past_the_known_end_is_polled_again_in_small_doubling_steps():
    """Estimates hold, but this task was still rendering at the known end (its create or poll
    was slow: jitter): the next polls step by the round trips (at least 50 ms), doubling, for a
    few polls — not --poll-min (2 s), nor a coarse progress's extrapolation — then as usual."""
    book = _exact_book(5.0, 0.99, 1.0, slack=0.08)
    t = Task(estimated_time=5.0, polls=1, progress=75)  # coarse progress: 75 % at the end
    steps = []
    for polls in (1, 2, 3, 4):
        t.polls = polls
        steps.append(delay(t, NOW + 5.1, book, poll_min=2.0))
    assert steps == pytest.approx([0.08, 0.16, 0.32, 0.64])
    t.polls = 5  # past those: the usual schedule (here the progress, floored by --poll-min)
    assert delay(t, NOW + 6.3, book, poll_min=2.0) == pytest.approx(6.3 * 25 / 75 * 1.05)
    assert delay(Task(estimated_time=5.0, polls=1), NOW + 5.1, _exact_book(5.0, 0.99, 1.0, slack=0.0),
                 poll_min=2.0) == pytest.approx(0.05)


def test_the_known_end_does_not_creep_up_with_the_polls_placed_at_it():
    """A first poll placed at the known end finds its task done a little after it: no news. If
    those bounds filled the window, the smaller ones would leave it and the known end would
    creep up by that little every WINDOW tasks; they are not kept while the estimates hold."""
    book = _exact_book(5.0, 0.99, 1.0, slack=0.0)
    p = book.pace(M)
    for _ in range(10 * 64):
        book.observe(M, 5.0, 5.0 * min(p.uppers) + 0.05, done=True)  # 50 ms after the known end
    assert min(p.uppers) == pytest.approx(1.0)
    book.observe(M, 5.0, 5.0 * 0.995, done=True)  # a probe that found one done earlier: news
    assert min(p.uppers) == pytest.approx(0.995)


def test_a_coarse_progress_never_puts_the_next_poll_past_where_every_task_was_done():
    """Progress told in steps of 25 reads 75 % at nine tenths of a render: extrapolated, the
    next poll would come a third of the elapsed time later. It comes no later than the latest
    ratio a task of this model was seen done by."""
    book = PaceBook()
    for ratio in (1.02, 1.05, 1.08, 0.97):
        book.observe(M, 5.0, 5.0 * ratio, done=True)
    book.observe(M, 5.0, 5.0 * 1.01, done=False)  # estimates scatter: one still rendering past another's end
    assert not book.pace(M).holds()
    t = Task(estimated_time=5.0, polls=1, progress=75)
    assert delay(t, NOW + 4.5, book, poll_min=2.0) == pytest.approx(5.0 * 1.08 - 4.5 + 0.02)
    # a fine-grained progress that predicts an earlier end still wins
    t.progress = 95
    assert delay(t, NOW + 4.5, book, poll_min=2.0) == pytest.approx(4.5 * 5 / 95 * 1.05)


def test_a_known_end_far_from_the_bounds_is_probed_by_a_ladder():
    """A known end learnt from late polls (0.8 s late: the first wave's, timed by progress) comes
    down within one render of probes: while the gap between the bounds is wide, one first poll in
    LADDER_EVERY probes, LADDER_STEP_S below the known end, then twice that, up to half the gap
    (probes answer a render later: one at a time, every eighth first poll, took up to 200 tasks)."""
    book = _exact_book(5.0, 0.90, 1.16, slack=0.0)  # a 1.3 s gap
    p = book.pace(M)
    ratios = [p.first_ratio(estimate=5.0) for _ in range(7 * LADDER_EVERY)]
    hi = min(p.uppers)
    depths = [round((hi - r) * 5.0, 3) for r in ratios if r < hi]
    assert depths == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64]  # up to half the gap, 0.65 s
    assert all(r == hi for k, r in enumerate(ratios, 1) if k % LADDER_EVERY)  # the others at the known end
    # The deepest found done sets the known end (0.64 s lower); the rungs then reach half the new gap.
    book.observe(M, 5.0, 5.0 * hi - 0.64 + 0.005, done=True)
    hi = p.known_end(5.0)
    assert 5.0 * hi == pytest.approx(5.0 * 1.16 - 0.635)
    ratios = [p.first_ratio(estimate=5.0) for _ in range(7 * LADDER_EVERY)]
    depths = [round((hi - r) * 5.0, 3) for r in ratios if r < hi]
    assert max(depths) <= (5.0 * hi - 4.5) / 2 and len(set(depths)) > 3


def test_the_ladder_stops_once_the_gap_is_as_narrow_as_the_round_trips():
    """A probe that finds its task still rendering just below the known end closes the gap: no
    more ladder, only the usual probe in EXPLORE_EVERY (and fewer while the end proves tight)."""
    book = _exact_book(5.0, 0.90, 1.01, slack=0.0)
    p = book.pace(M)
    book.observe(M, 5.0, 5.0 * 1.01 - 0.01, done=False)  # rendering 10 ms before the known end
    assert p.known_end(5.0) == pytest.approx(1.01)
    ratios = [p.first_ratio(estimate=5.0) for _ in range(4 * LADDER_EVERY)]
    probes = [r for r in ratios if r < 1.01]
    assert len(probes) <= 4 * LADDER_EVERY // p.explore_every + 1 and p.ladder == 0


# ---------------------------------------------------------------- issue 31 part 4: detection


def test_a_first_poll_at_the_known_end_comes_a_few_milliseconds_after_it():
    """The known end is a "done by" bound already: the first poll goes END_MARGIN_S after it,
    spread by at most END_SPREAD_S (was 20 ms + up to 30 ms: most of a freed slot's wait)."""
    book = _exact_book(5.0, 0.997, 1.0, slack=0.0)  # a 15 ms gap: no ladder
    ds = [poll_delay(Task(estimated_time=5.0), NOW, poll_min=2.0, poll_max=60.0, book=book) for _ in range(6)]
    assert all(5.0 + END_MARGIN_S <= d <= 5.0 + END_MARGIN_S + END_SPREAD_S for d in ds)


def test_with_exact_estimates_the_known_end_is_seconds_past_the_estimate_not_a_ratio():
    """Tasks of 3 s and 8 s, each done 30 ms after its estimate: as a ratio, the smallest bound
    (the 8 s task's) put a 3 s task's poll 19 ms early; in seconds, both go 30 ms after."""
    book = PaceBook()
    for est in (8.0, 3.0, 5.0, 8.0):
        book.observe(M, est, est - 0.05, done=False)
        book.observe(M, est, est + 0.03, done=True)
    p = book.pace(M)
    assert p.exact()
    assert 3.0 * p.known_end(3.0) == pytest.approx(3.03)
    assert 8.0 * p.known_end(8.0) == pytest.approx(8.03)
    scaled = PaceBook()  # estimates 10 % short: a ratio, as before
    for est in (8.0, 3.0, 5.0):
        scaled.observe(M, est, est * 1.09, done=False)
        scaled.observe(M, est, est * 1.1, done=True)
    assert not scaled.pace(M).exact() and scaled.pace(M).known_end(3.0) == pytest.approx(1.1)


def test_probes_in_flight_reach_further_without_waiting_for_each_answer():
    """Probes answer a render later: once one found the end loose, each next probe placed with
    no news since reaches twice as far (a known end 0.4 s late took 150 tasks to come down)."""
    book = _exact_book(5.0, 0.90, 1.16, slack=0.7)  # round trips as wide as the gap: no ladder
    p = book.pace(M)
    hi = min(p.uppers)
    book.observe(M, 5.0, 5.0 * (hi - 0.01), done=True)  # a probe found the end loose
    steps = []
    for _ in range(3):  # three probes go out before any answers
        hi = p.known_end(5.0)
        probe = next(r for r in (p.first_ratio(estimate=5.0) for _ in range(EXPLORE_EVERY)) if r < hi)
        steps.append(round((hi - probe) * 5.0, 3))
    assert steps == [0.1, 0.2, 0.4]
    book.observe(M, 5.0, 5.0 * (p.known_end(5.0) - 0.001), done=False)  # one finds it tight
    assert p.probe_step == PROBE_STEP_S and not p.descending


def test_a_probe_found_done_but_answered_late_reaches_further():
    """On a loaded machine a probe's answer comes late: found done, yet its bound is not below
    the known end. It did not reach far enough: the next probe goes twice as far."""
    book = _exact_book(5.0, 0.90, 1.0, slack=0.0)
    p = book.pace(M)
    sent = NOW - 0.001
    job = Task(estimated_time=5.0, create_sent=sent, submitted_at=NOW)
    for _ in range(EXPLORE_EVERY):  # the EXPLORE_EVERY-th first poll probes
        poll_delay(job, NOW, poll_min=2.0, poll_max=60.0, book=book, jitter=lambda d: 0.0)
    assert sent in p.probed
    book.observe_poll(M, 5.0, done=True, create=(sent, NOW), poll=(NOW + 4.95, NOW + 5.2))
    assert p.probe_step == 2 * PROBE_STEP_S and sent not in p.probed


def test_without_progress_the_first_tasks_seed_the_known_end_in_small_steps():
    """Nothing learnt and no progress told: the run's first tasks are polled at the estimate
    from the create's send, then 20, 40, 80 ms later — not at the estimate from the answer and
    then --poll-min (2 s) later: their bounds are the known end every later task is polled at."""
    book = PaceBook()
    t = Task(estimated_time=5.0, polls=1, create_sent=NOW - 0.1, submitted_at=NOW)
    assert delay(t, NOW + 4.5, book, poll_min=2.0) == pytest.approx(0.4)
    steps = []
    for polls in (2, 3, 4):
        t.polls = polls
        steps.append(delay(t, NOW + 4.95, book, poll_min=2.0))
    assert steps == pytest.approx([SEED_STEP_S, 2 * SEED_STEP_S, 4 * SEED_STEP_S])
    for est in (5.0, 6.0, 7.0):  # seeded: the usual schedule
        book.observe(M, est, est + 0.01, done=True)
    t.polls = 2
    assert delay(t, NOW + 5.5, book, poll_min=2.0) != pytest.approx(SEED_STEP_S)


def test_the_anchor_moves_to_the_answer_when_slow_creates_miss_and_back():
    """First polls at the known end that miss belong to tasks whose create took longer than
    usual (the provider started them late, a fixed time before answering): the aim moves to the
    create's answer, then back to its send when the misses are the quick creates'."""
    rng = random.Random(5)
    a = Anchor()
    for i in range(400):
        rtt = 0.05 + rng.uniform(0.0, 0.05)
        a.aim(float(i))
        a.learn((float(i), i + rtt), done=rtt < 0.085)  # the slow creates' tasks miss
    assert a.answer and a.shift(0.09, 0.06) == pytest.approx(0.03)
    for i in range(400, 800):
        rtt = 0.05 + rng.uniform(0.0, 0.05)
        a.aim(float(i))
        a.learn((float(i), i + rtt), done=rtt > 0.065)  # now the quick ones miss
    assert not a.answer and a.shift(0.09, 0.06) == 0.0
    b = Anchor()  # misses unrelated to the create's round trip: it stays at the send
    for i in range(800):
        b.aim(float(i))
        b.learn((float(i), i + 0.05 + rng.uniform(0.0, 0.05)), done=rng.random() > 0.15)
    assert not b.answer


def test_a_first_wave_task_keeps_seeding_after_three_peers_bounded_the_end():
    """A task whose first poll went out while nothing was known (the first wave) is polled at
    its estimate from the send, then in seed steps, even once three peers' seeds bound the end:
    placed at that young known end plus a margin, the first wave was found ~0.1 s late with the
    habits (an answer 50 ms after the start, every answer up to 50 ms late). A task first polled
    after the end was bounded is not a seed."""
    book = PaceBook()
    first = Task(estimated_time=5.0, create_sent=NOW - 0.1, submitted_at=NOW)
    delay(first, NOW, book)  # its first poll: nothing known, so it seeds
    for est in (4.0, 6.0, 7.0):  # three peers done 90 ms past their estimates: the end holds
        book.observe(M, est, est - 0.5, done=False)
        book.observe(M, est, est + 0.09, done=True)
    assert book.pace(M).known_end(5.0) is not None
    first.polls = 1
    assert delay(first, NOW + 4.5, book) == pytest.approx(0.4)  # at its estimate from the send
    first.polls = 2
    assert delay(first, NOW + 4.95, book) == pytest.approx(SEED_STEP_S)
    later = Task(estimated_time=5.0, create_sent=NOW - 0.2, submitted_at=NOW - 0.15)
    delay(later, NOW - 0.15, book)
    later.polls = 1  # not a seed: polled later than its estimate from the send (0.3 s from now)
    assert delay(later, NOW + 4.5, book) > 0.3 + 0.05


def test_anchored_at_the_answer_the_known_end_is_the_smallest_from_the_answer_no_task_contradicts():
    """When tasks start a fixed time before the create's answer, the "done by" that counts is the
    smallest from the answer, not from the send: the smallest from the send belongs to a quick
    create, whose end from the answer is late (the habits' first polls came ~14 ms late all night,
    the probes unable to beat it). A bound from the answer below a point a task was seen still
    rendering is not one (an answer read late by a busy loop): it is passed over."""
    book = PaceBook()
    # (create's round trip, done by from the send): the quick create's bound is the smallest
    # from the send (0.06) yet the largest from the answer (0.06 - 0.05 = 0.01).
    for rtt, by in ((0.05, 0.06), (0.09, 0.07), (0.08, 0.075)):
        book.observe_poll(M, 5.0, done=False, create=(NOW, NOW + rtt), poll=(NOW + 4.9, NOW + 4.91))
        book.observe_poll(M, 5.0, done=True, create=(NOW, NOW + rtt), poll=(NOW + 5.0 + by - 0.01, NOW + 5.0 + by))
    p = book.pace(M)
    assert p.exact() and 5.0 * p.known_end(5.0) == pytest.approx(5.06)
    p.anchor.answer = True
    # From the answer the smallest is the 0.09 s create's (0.07 - 0.09 = -0.02): a task whose create
    # took 0.07 s is polled at its send + 5 + 0.07 - 0.02 (+ END_MARGIN_S), not + 0.06 + 0.02.
    t = Task(estimated_time=5.0, create_sent=NOW - 0.07, submitted_at=NOW)
    p.firsts = 1  # not a probe's turn
    assert delay(t, NOW, book) == pytest.approx(5.0 - 0.02 + END_MARGIN_S, abs=1e-9)
    assert p.beats(5.0, 5.065, done=True, rtt=0.09)  # done by 5.065 after a 0.09 s create: news
    assert not p.beats(5.0, 5.065, done=True, rtt=0.07)
    # A task seen rendering 10 ms before its estimate from the answer contradicts -0.02: the next
    # smallest from the answer (the 0.08 s create's, -0.005) is the known end.
    book.observe_poll(M, 5.0, done=False, create=(NOW, NOW + 0.06), poll=(NOW + 0.06 + 4.99, NOW + 0.06 + 5.0))
    p.firsts = 1
    assert delay(t, NOW, book) == pytest.approx(5.0 - 0.005 + END_MARGIN_S, abs=1e-9)


# ------------------------------------------------- issue 31 part 4: a wait in `pending` (the band)


def _pending_book(waits: list[tuple[float, float]]) -> PaceBook:
    """Tasks of (estimate, wait in `pending`) each seen rendering 10 ms before its end and done
    10 ms after it, timed from the create's answer (the create's round trip 2 ms)."""
    book = PaceBook()
    for est, wait in waits:
        end = NOW + est + wait
        for done, at in ((False, end - 0.01), (True, end + 0.01)):
            book.observe_poll(M, est, done=done, create=(NOW - 0.002, NOW), poll=(at, at))
    return book


WAITS = [(3.0, 0.44), (8.0, 0.17), (5.0, 0.3), (6.0, 0.21), (4.0, 0.38)]


def test_ends_scattered_by_a_wait_in_pending_are_polled_once_at_the_latest_seen():
    """Exact estimates but for a wait in `pending` of 0.15-0.45 s: as ratios the bounds overlap
    (a 3 s task rendering at 1.14, an 8 s one done by 1.02), so the estimates do not hold; in
    seconds past the estimate every end lies within 0.3 s. The first poll goes where the latest of
    them was still rendering (timed from the create's answer), not at nine tenths of the estimate
    with a second timed by a progress told in steps of 25."""
    book = _pending_book(WAITS)
    p = book.pace(M)
    assert not p.holds() and p.band() == pytest.approx(0.43)
    t = Task(estimated_time=7.0, create_sent=NOW + 1.0, submitted_at=NOW + 1.002)
    assert delay(t, NOW + 1.002, book) == pytest.approx(7.0 + 0.43 + 0.02)
    # A poll that finds it still rendering past the band comes again in small doubling steps.
    t.polls = 1
    assert delay(t, NOW + 1.002 + 7.46, book) == pytest.approx(0.05)
    t.polls = 2
    assert delay(t, NOW + 1.002 + 7.52, book) == pytest.approx(0.1)


def test_the_band_aim_follows_the_share_of_first_polls_that_find_their_task_done():
    """First polls in the band aim where BAND_HITS of them find their task done: each hit brings
    the aim earlier, each miss later, weighted so that hits and misses in that share balance; the
    aim never passes the latest point a task was seen rendering."""
    book = _pending_book(WAITS)
    p = book.pace(M)
    top = p.band()
    sent = [NOW + k for k in range(10)]
    for c in sent:
        assert delay(Task(estimated_time=5.0, create_sent=c, submitted_at=c + 0.002), c + 0.002, book) > 5.0
    hits = round(10 * BAND_HITS)
    for k, c in enumerate(sent):  # BAND_HITS of them done, the rest still rendering at the aim
        done = k < hits
        at = c + 0.002 + 5.0 + top
        book.observe_poll(M, 5.0, done=done, create=(c, c + 0.002), poll=(at, at))
    assert p.band() == pytest.approx(top)  # balanced: the aim stays
    for c in (NOW + 20, NOW + 21, NOW + 22):  # three more that find it done: earlier
        delay(Task(estimated_time=5.0, create_sent=c, submitted_at=c + 0.002), c + 0.002, book)
        book.observe_poll(M, 5.0, done=True, create=(c, c + 0.002), poll=(c + 5.1, c + 5.1))
    assert p.band() < top


def test_estimates_that_scatter_by_a_share_of_the_render_form_no_band():
    """Estimates ±15 % of 3-8 s scatter by seconds: no band; the first poll stays early, where a
    fine progress times the second (the noisy night)."""
    book = PaceBook()
    rng = random.Random(5)
    for _ in range(30):
        est = rng.uniform(3, 8)
        actual = est * rng.uniform(0.85, 1.15)
        book.observe(M, est, actual - 0.05, done=False)
        book.observe(M, est, actual + 0.05, done=True)
    assert book.pace(M).band() is None
    assert delay(Task(estimated_time=5.0), NOW, book) == pytest.approx(5.0 * EARLY)


def test_before_any_task_is_seen_done_a_coarse_progress_puts_no_poll_past_a_tenth_over_the_estimate():
    """The run's first tasks, nothing seen done yet, one seen rendering past its estimate (so
    estimates fail): a progress of 75 % at nine tenths of a 5 s estimate extrapolates to 1.575 s
    more (1.2 × the estimate); the next poll goes no later than 1.1 × the estimate (as far past it
    as the early poll was before it). A fine progress (89 %) that predicts an earlier end keeps its
    own time."""
    book = PaceBook()
    book.observe(M, 5.0, 5.3, done=False)
    assert delay(Task(estimated_time=5.0, polls=1, progress=75), NOW + 4.5, book) == pytest.approx(
        5.0 * (2 - EARLY) - 4.5 + 0.02)
    fine = delay(Task(estimated_time=5.0, polls=1, progress=89), NOW + 4.5, book)
    assert fine == pytest.approx(4.5 * 11 / 89 * 1.05)
    # Still rendering there: steps of half that margin, doubling, not --poll-min (2 s).
    steps = [delay(Task(estimated_time=5.0, polls=n, progress=75), NOW + 5.52, book) for n in (2, 3, 4)]
    assert steps == pytest.approx([0.25 + 0.02, 0.5 + 0.02, 1.0 + 0.02])


def test_a_coarse_progress_puts_no_poll_past_the_estimate_while_no_task_outlived_its_own():
    """Exact estimates, progress told in steps of 25 (issue 31 part 4, an independent check): an
    early poll reads 75 % at nine tenths of a 5 s render. Its next poll goes at the estimate from
    the create's answer (plus MARGIN_S), not where the progress or the first wave's late "done by"
    bounds put it (0.3 s after the end); once a task is seen rendering past its estimate, as before."""
    sent, answered = NOW - 0.01, NOW
    t = Task(estimated_time=5.0, polls=1, progress=75, create_sent=sent, submitted_at=answered)
    assert delay(t, NOW + 4.5, PaceBook(), poll_min=2.0) == pytest.approx(0.5 + END_MARGIN_S)  # nothing known yet
    book = PaceBook()
    for _ in range(2):  # seen done 0.4 s late and rendering at 0.9: uppers, not yet trusted
        book.observe(M, 5.0, 5.4, done=True)
        book.observe(M, 5.0, 4.5, done=False)
    assert delay(t, NOW + 4.5, book, poll_min=2.0) == pytest.approx(0.5 + END_MARGIN_S)
    loose = _exact_book(5.0, 0.9, 1.08, slack=0.0)  # estimates hold, the known end 0.4 s loose
    assert delay(t, NOW + 4.5, loose, poll_min=2.0) == pytest.approx(0.5 + 0.02)  # a probe's next poll
    book.observe(M, 5.0, 5.1, done=False)  # a task outlived its estimate: progress and bounds time it
    assert delay(t, NOW + 4.5, book, poll_min=2.0) == pytest.approx(5.4 - 4.51 + 0.02)
