"""Where in a create's round trip a model's tasks start (``Anchor``), for the poll schedule
(``pace``): at the create's send, or a fixed time before its answer. Also ``remember``: the
create-sent moments of polls awaiting their answer, bounded. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field

ANCHOR_RATE = 0.2  # how fast the anchor follows the misses (hits: AIM_HITS of it)…
ANCHOR_SWITCH = 0.5  # …and how far it leans (in round trips' deviations) before it moves
AIM_HITS = 0.25  # (first polls hit several times as often as they miss)
MARKS = 1024  # create-sent moments kept per model for polls awaiting their answer


def remember(marks: dict[float, None], sent: float) -> None:
    """Mark the poll of the task whose create was sent at ``sent`` (its answer will be matched to
    it), forgetting the oldest marks past ``MARKS``: polls whose answer never came."""
    marks[sent] = None
    while len(marks) > MARKS:
        del marks[next(iter(marks))]


@dataclass
class Anchor:
    """Where in a create's round trip this model's tasks start, judged from the first polls at the
    known end: at its send (``answer`` False) or a fixed time before its answer (True: an API that
    answers 50 ms after the task started, every answer up to 50 ms late). Timed from the send of
    the task behind the known end, a task whose create took longer (it started later) was polled
    too early (with the habits, four first polls in ten missed): misses of slow creates (and hits
    of quick ones) move the aim to the answer; the opposite moves it back."""

    answer: bool = False
    mean: float | None = None  # the creates' round trips: running mean and mean deviation
    dev: float = 0.0
    misses: float = 0.0  # running means of the round trips (in deviations from their mean) of misses…
    hits: float = 0.0  # …and of hits
    aimed: dict[float, None] = field(default_factory=dict)  # create-sent moments of first polls at the known end

    def shift(self, rtt: float, ref: float) -> float:
        """Seconds to add to a poll placed at the known end, whose task's create took ``ref``."""
        return rtt - ref if self.answer else 0.0

    def aim(self, sent: float) -> None:
        remember(self.aimed, sent)

    def learn(self, create: tuple[float, float], done: bool) -> None:
        """A poll's outcome: counted when it is the first, placed at the known end."""
        if create[0] not in self.aimed:
            return
        del self.aimed[create[0]]
        rtt = create[1] - create[0]
        mean = rtt if self.mean is None else self.mean
        z = max(-3.0, min(3.0, (rtt - mean) / max(self.dev, 0.001)))
        self.mean, self.dev = mean + 0.05 * (rtt - mean), self.dev + 0.05 * (abs(rtt - mean) - self.dev)
        if done:
            self.hits += ANCHOR_RATE * AIM_HITS * (z - self.hits)
        else:
            self.misses += ANCHOR_RATE * (z - self.misses)
        lean = self.misses - self.hits
        if (lean > ANCHOR_SWITCH and not self.answer) or (lean < -ANCHOR_SWITCH and self.answer):
            self.answer, self.misses, self.hits = not self.answer, 0.0, 0.0
