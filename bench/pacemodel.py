"""The poll schedule alone, without the machine's load: batchgen's own ``pipeline/pace.py`` driving a
discrete-event model of a concurrency-bound night (issue 31 part 4).

On the shared 2-core machine the makespan scenarios' detection moved by tens of milliseconds
with the other helpers' load (an event loop that wakes late, a simulator that answers late), more
than what a change to the schedule moves it by. This model replays the same shapes — 400 renders
of U(3, 8) s on 40 slots, exact estimates or ±15 %, the habits' jitter, the answer 50 ms after the
task started, a wait in `pending`, progress linear, coarse or none — with round trips of a few
milliseconds and no CPU of its own, calling the real ``poll_delay`` and ``PaceBook`` as the poll
stage does. It prints, per scenario, the mean detection (ready → the poll that finds it done,
as the simulator's ``seen_done``), polls per job, and makespan ÷ the render lower bound. It does
not replace the benchmark (no HTTP, no ledger, no downloads); it measures the schedule's part.

    .venv/bin/python bench/pacemodel.py [seeds]
"""

from __future__ import annotations

import heapq
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchgen.pipeline.pace import PaceBook, poll_delay  # noqa: E402


@dataclass
class Job:
    """What ``poll_delay`` reads of a task in flight (``pace.Polled``)."""

    model: str = "m"
    polls: int = 0
    progress: int = 0
    estimated_time: float | None = None
    submitted_at: float | None = None
    create_sent: float | None = None
    poll_errors: int = 0
    retry_after: float | None = None


# The night's clock starts here, not at 0: batchgen's moments are never 0, and ``poll_delay`` reads
# a create sent at 0.0 as one with no send time (timed from its answer instead).
START = 1000.0


def night(seed: int, n: int = 400, conc: int = 40, *, jitter: float = 0.0, latency_after: float = 0.0,
          progress: str = "linear", pending: float = 0.0, noise: float = 0.0, poll_min: float = 0.05,
          oneway: tuple[float, float] = (0.0005, 0.003), wake: float = 0.002, refill: float = 0.008,
          render_s: tuple[float, float] = (3.0, 8.0), pending_range: tuple[float, float] | None = None,
          pending_grows: bool = False, lag: float = 0.0) -> dict[str, float]:
    """One night. Renders (and waits, estimate noise) come from their own generator, so every
    variant of a seed renders the same tasks; the habits' delays from another (as the simulator).
    The wait in `pending` is ``pending`` × U(0.5, 1.5) (the bench's), or U(``pending_range``);
    ``pending_grows``: it scales with the night's load, from once to twice that by the last task."""
    tasks_rng, net = random.Random(f"tasks:{seed}"), random.Random(f"net:{seed}")
    loop = random.Random(f"loop:{seed}")  # a busy event loop reads each answer late: exponential, mean ``lag``

    def late() -> float:
        return loop.expovariate(1 / lag) if lag else 0.0

    random.seed(f"spread:{seed}")  # poll_delay's spread of a few milliseconds: the same night each time
    book = PaceBook()
    events: list[tuple[float, int, str, Job, dict[str, float]]] = []
    seq = 0
    made = 0
    detection: list[float] = []
    polls = 0
    last = 0.0
    renders: list[float] = []

    def push(at: float, kind: str, job: Job, task: dict[str, float]) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, job, task))

    def create(at: float) -> None:
        nonlocal made
        if made >= n:
            return
        made += 1
        render = tasks_rng.uniform(*render_s)
        wait = pending * tasks_rng.uniform(0.5, 1.5) if pending else 0.0
        if pending_range is not None:
            wait = tasks_rng.uniform(*pending_range)
        if pending_grows:
            wait *= 1 + made / n
        estimate = round(render * tasks_rng.uniform(1 - noise, 1 + noise), 2)
        created = at + net.uniform(*oneway) + net.uniform(0, jitter)  # the API's own time before it starts
        answered = created + latency_after + net.uniform(*oneway) + late()
        renders.append(wait + render)
        push(answered, "plan", Job(estimated_time=estimate, submitted_at=answered, create_sent=at),
             {"render": render, "wait": wait, "created": created, "ready": created + wait + render})

    def status(task: dict[str, float], at: float) -> tuple[bool, int]:
        """The simulator's view: pending for the wait and a tenth of the render, then progress."""
        elapsed = at - task["created"] - task["wait"]
        if elapsed >= task["render"]:
            return True, 100
        told = min(99, int(100 * max(0.0, elapsed) / task["render"])) if elapsed >= task["render"] * 0.1 else 0
        return False, 0 if progress == "none" else (told // 25 * 25 if progress == "coarse" else told)

    for _ in range(conc):
        create(START)
    while events:
        now, _, kind, job, task = heapq.heappop(events)
        if kind == "plan":
            d = poll_delay(job, now, poll_min=poll_min, poll_max=60.0, book=book)
            push(now + d + net.uniform(0, wake), "poll", job, task)
            continue
        look = now + net.uniform(*oneway) + net.uniform(0, jitter)
        answered = look + net.uniform(*oneway) + late()
        done, told = status(task, look)
        polls += 1
        job.polls += 1
        job.progress = told
        assert job.create_sent is not None and job.submitted_at is not None
        book.observe_poll("m", job.estimated_time, done=done, create=(job.create_sent, job.submitted_at),
                          poll=(now, answered), progress=told)
        if done:
            detection.append(look - task["ready"])
            last = max(last, answered)
            create(answered + refill)
        else:
            push(answered, "plan", job, task)
    bound = max(sum(renders) / conc, max(renders))
    return {"detection_ms": 1000 * statistics.fmean(detection), "polls": polls / n, "ratio": (last - START) / bound}


SCENARIOS: dict[str, dict[str, Any]] = {
    "makespan-exact": {},
    "makespan-exact, coarse progress": {"progress": "coarse", "poll_min": 2.0},
    "makespan-habits": {"jitter": 0.05, "latency_after": 0.05, "progress": "none", "poll_min": 2.0},
    "makespan-habits, pending": {"jitter": 0.02, "pending": 0.3, "progress": "coarse", "poll_min": 2.0},
    "makespan (noisy ±15 %, 64 slots)": {"noise": 0.15, "n": 1000, "conc": 64},
    # A busy event loop (a loaded 2-core machine) reads each answer 10 ms late on average: the
    # real runs' detection sat between this and the quiet model's.
    "makespan-habits, busy loop (+10 ms)": {"jitter": 0.05, "latency_after": 0.05, "progress": "none",
                                            "poll_min": 2.0, "lag": 0.01},
}
# Other APIs' waits in `pending` (not the bench's 0.15-0.45 s): the schedule must find them itself.
PENDING_VARIANTS: dict[str, dict[str, Any]] = {
    "pending 0.3-0.9 s, renders 3-8 s": {"jitter": 0.02, "pending_range": (0.3, 0.9), "progress": "coarse",
                                         "poll_min": 2.0},
    "pending 1-2.5 s, renders 10-20 s": {"jitter": 0.02, "pending_range": (1.0, 2.5), "render_s": (10.0, 20.0),
                                         "progress": "coarse", "poll_min": 2.0},
    "pending 0.2-0.6 s growing to 2x": {"jitter": 0.02, "pending_range": (0.2, 0.6), "pending_grows": True,
                                        "progress": "coarse", "poll_min": 2.0},
    "pending 0.3-0.9 s, no progress": {"jitter": 0.02, "pending_range": (0.3, 0.9), "progress": "none",
                                       "poll_min": 2.0},
}


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"poll schedule model ({seeds} seeds a scenario; round trips 0.5-3 ms, wake-ups 0-2 ms late)")
    for name, knobs in {**SCENARIOS, **PENDING_VARIANTS}.items():
        runs = [night(seed, **knobs) for seed in range(seeds)]
        mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
        print(f"  {name:34s} detection {mean['detection_ms']:6.1f} ms   polls a job {mean['polls']:.3f}   "
              f"makespan / render bound {mean['ratio']:.3f}")


if __name__ == "__main__":
    main()
