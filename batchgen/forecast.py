"""How long tonight takes, before anything is paid (issue 30): from the ledger's own history of
each model (observed render time — result ready minus create answered — its mean and spread;
polls per task; result ready → file in place), the jobs to submit per model, the run's
``--concurrency`` and request budget. Without history of a model, a plainly labelled guess.

The night is bounded by whichever binds: the render slots (every clip's render time spread over
``concurrency`` slots, plus the tail of the last clips, and never less than the slowest model's
typical clip) or the request budget (a create and its polls per clip, at ``rpm``); then the
last clips' download.

A model the ledger has never rendered (fewer than ``MIN_HISTORY`` clips) is estimated from the
catalog's typical render time of that model (``typical_render_s`` in models.yaml: a labelled
guess, since foxapi states none), or failing that from ``GUESS_RENDER_S``; either is said as a
guess. With history, the forecast also says how sure it is: one standard deviation of the
night's length from the sampling error of each model's mean (its history's spread over its
size) and from tonight's own draw (the spread over tonight's clips), which for a skewed model
and a short history is most of the difference between a forecast and the night it forecast."""

from __future__ import annotations

import math
import statistics
import time
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from dataclasses import dataclass
from typing import Any

GUESS_RENDER_S = 120.0  # a model never seen and without a typical time in the catalog: a guess, said as one
GUESS_POLLS = 2.0
MIN_HISTORY = 5  # fewer observed clips than this: not history


@dataclass
class ModelForecast:
    model: str
    jobs: int
    history: int  # clips of this model the estimate comes from (0: a guess)
    mean_s: float
    p10_s: float
    p90_s: float
    polls: float
    square_s2: float  # mean of the squared render times (the tail term below)
    # Where mean_s comes from: "history" (the ledger's clips of this model), "catalog" (the
    # catalog's typical render time of the model: a guess) or "guess" (GUESS_RENDER_S).
    source: str = "history"
    median_s: float = 0.0
    var_s2: float = 0.0  # the history's variance of render times (0 for a guess)
    renders: Sequence[float] = ()  # the history's render times, sorted (a guess: the one guessed figure)
    # A guess's clips the ledger does hold (fewer than MIN_HISTORY): said, so that a model rendered
    # twice last night is not called "never rendered here".
    seen: int = 0


@dataclass
class Forecast:
    models: list[ModelForecast]
    concurrency: int
    rpm: float | None
    seconds: float
    bound: str  # "render slots" | "request budget"
    fetch_s: float
    # One standard deviation of `seconds` from the sampling error of the history's means and
    # tonight's own draw of render times (0 when bound by the budget, in one wave, or when a model
    # of tonight's is a guess: how far off a guess is, nothing here knows).
    sd_s: float = 0.0

    @property
    def guessed(self) -> list[str]:
        return [m.model for m in self.models if not m.history]

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds), "sd_seconds": round(self.sd_s, 1), "concurrency": self.concurrency,
                "rpm": self.rpm, "bound": self.bound, "guessed_models": self.guessed,
                "models": [{"model": m.model, "jobs": m.jobs, "history": m.history, "seen": m.seen, "source": m.source,
                            "render_mean_s": round(m.mean_s, 1), "render_median_s": round(m.median_s, 1),
                            "render_p10_s": round(m.p10_s, 1), "render_p90_s": round(m.p90_s, 1)}
                           for m in self.models]}


def per_model(jobs: dict[str, int], history: dict[str, dict[str, Any]],
              typical: Mapping[str, float | None] | None = None) -> list[ModelForecast]:
    """Each model's render time: its history's mean and spread when the ledger has seen at least
    ``MIN_HISTORY`` clips of it; else ``typical`` (model → the catalog's typical render time), else
    ``GUESS_RENDER_S``. The mean, not the median, is what a night adds up: a skewed model's long
    renders take their slots for as long as they last."""
    out = []
    for model, n in sorted(jobs.items()):
        h = history.get(model) or {}
        renders = sorted(h.get("renders") or [])
        if len(renders) >= MIN_HISTORY:
            deciles = statistics.quantiles(renders, n=10)
            out.append(ModelForecast(model, n, len(renders), statistics.fmean(renders), deciles[0], deciles[-1],
                                     float(h.get("polls") or GUESS_POLLS), statistics.fmean(r * r for r in renders),
                                     "history", statistics.median(renders), statistics.variance(renders), renders))
        else:
            known = (typical or {}).get(model)
            guess = float(known) if known else GUESS_RENDER_S
            out.append(ModelForecast(model, n, 0, guess, guess, guess, GUESS_POLLS, guess ** 2,
                                     "catalog" if known else "guess", guess, 0.0, (guess,), len(renders)))
    return out


def estimate(jobs: dict[str, int], history: dict[str, dict[str, Any]], concurrency: int, rpm: float | None,
             fetch_s: float | None = None, typical: Mapping[str, float | None] | None = None) -> Forecast:
    """The night's length for ``jobs`` (model → clips to submit); ``typical``: the catalog's
    typical render time of each model (used for a model without history, as a guess)."""
    models = per_model(jobs, history, typical)
    work = sum(m.jobs * m.mean_s for m in models)
    longest = max((m.mean_s for m in models if m.jobs), default=0.0)
    # One wave (no more clips than slots): every clip renders at once, the slowest model decides.
    one_wave = sum(m.jobs for m in models) <= concurrency
    slots = longest if one_wave else max(work / concurrency + end_excess(models, concurrency), longest)
    requests = sum(m.jobs * (1 + m.polls) for m in models)
    budget = requests / (rpm / 60.0) if rpm else 0.0
    fetch = fetch_s if fetch_s is not None else 1.0
    # How sure: the total render work is a sum of tonight's clips, each drawn from its model's
    # distribution (variance n·σ²), estimated from a mean over h clips of history (variance
    # n²·σ²/h); spread over the slots. A guessed model adds nothing here: it is not a measurement.
    # With a guessed model in the night nothing is known of how far off it is: no ± claimed.
    var = sum(m.jobs * m.var_s2 + m.jobs ** 2 * m.var_s2 / m.history for m in models if m.history)
    guessed = any(m.jobs and not m.history for m in models)
    sd = math.sqrt(var) / concurrency if not (one_wave or guessed) and slots >= budget else 0.0
    return Forecast(models, concurrency, rpm, max(slots, budget) + fetch,
                    "request budget" if budget > slots else "render slots", fetch, sd)


def end_excess(models: Sequence[ModelForecast], concurrency: int) -> float:
    """How long the night runs past ``work / concurrency`` once the queue is empty.

    Every slot is busy until the last clip starts (at t0); each slot then holds what is left of
    its clip, R_i, and the night ends with the longest. All the work is done by then, so
    ``work = concurrency·t0 + ΣR_i`` and the end is ``work/concurrency − mean(R) + max(R)``. The
    slot that took the last clip holds a whole clip X; the others a residual life (renewal
    theory: P(R ≤ x) = E[min(X, x)] / E[X], mean E[X²] / 2E[X]). With the clips' mix of models
    (weighted by tonight's jobs) and each model's observed render times, E[max(X, R_1..R_c-1)]
    is integrated exactly: between two observed render times P(X ≤ x) is flat and P(R ≤ x)
    linear. A slow model or a long tail makes the excess large — the last slow clip started
    outlasts everything else, which a mean residual alone (E[X²] / 2E[X]) under-forecast."""
    live = [m for m in models if m.jobs and m.renders]
    clips = sum(m.jobs for m in live)
    work = sum(m.jobs * m.mean_s for m in live)
    if not live or work <= 0:
        return 0.0
    sums = [list(accumulate(m.renders)) for m in live]
    # Weights: a model's share of the clips (which clip is last) and its mean (its share of the work).
    cut = sorted({0.0, *(x for m in live for x in m.renders)})

    def at(x: float) -> tuple[float, float]:
        """(P(last clip ≤ x), P(residual ≤ x)) over the mix; right-continuous at x."""
        done = left = 0.0
        for m, pre in zip(live, sums):
            k = bisect_right(m.renders, x)
            n = len(m.renders)
            done += m.jobs * k / n
            left += m.jobs * ((pre[k - 1] if k else 0.0) + x * (n - k)) / n  # jobs × E[min(X, x)]
        return done / clips, left / work

    power = concurrency - 1
    longest = 0.0  # E[max(X, R_1..R_c-1)] = ∫ 1 − P(X ≤ x)·P(R ≤ x)^(c−1) dx
    for x0, x1 in zip(cut, cut[1:]):
        f, g0 = at(x0)
        g1 = at(x1)[1]
        span = x1 - x0
        if g1 > g0:
            longest += span - f * (g1 ** (power + 1) - g0 ** (power + 1)) / ((g1 - g0) / span * (power + 1))
        else:
            longest += span - f * g0 ** power * span
    mean_residual = sum(m.jobs * m.square_s2 for m in live) / (2 * work)
    return longest - ((concurrency - 1) * mean_residual + work / clips) / concurrency


def _s(x: float) -> str:
    """A render time in seconds: a tenth below 10 s (a fast model's 1.4 s is not "1 s")."""
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min" if s >= 120 else f"{s} s"


def lines(f: Forecast, jobs: dict[str, int], history: dict[str, dict[str, Any]], start: float | None = None,
          typical: Mapping[str, float | None] | None = None) -> list[str]:
    """What `plan` prints: tonight's length at these settings and at twice the concurrency, when
    it ends, where the figures come from (per model: its history, or the catalog's typical time
    or a plain guess, said as guesses)."""
    if not f.models:
        return ["forecast: nothing to submit"]
    rpm = f"--rpm {f.rpm:g}" if f.rpm else "--rpm 0"
    seen = sum(m.history for m in f.models)
    few = "NOT ENOUGH" if any(m.seen for m in f.models) else "NO"  # some clips, fewer than MIN_HISTORY
    source = (f"history: {seen:,} clips of {'this model' if len(f.models) == 1 else 'these models'}"
              if not f.guessed else
              f"{few} HISTORY of {', '.join(f.guessed)}: a guess from "
              + ("the catalog's typical render time" if all(m.source == "catalog" for m in f.models if not m.history)
                 else f"{GUESS_RENDER_S:g} s a clip" if all(m.source == "guess" for m in f.models if not m.history)
                 else "the catalog's typical render times, or " + f"{GUESS_RENDER_S:g} s a clip")
              + (f"; history: {seen:,} clips of the others" if seen else ""))
    twice = estimate(jobs, history, f.concurrency * 2, f.rpm, f.fetch_s, typical)
    sure = f" ± {max(0.01, f.sd_s / f.seconds):.0%}" if f.sd_s and f.seconds else ""
    out = [f"forecast: ≈ {duration(f.seconds)}{sure} at --concurrency {f.concurrency} {rpm} ({source}; "
           f"bound by the {f.bound}); at --concurrency {twice.concurrency}: ≈ {duration(twice.seconds)}"]
    when = start if start is not None else time.time()
    out.append(f"  ends ≈ {time.strftime('%H:%M', time.localtime(when + f.seconds))} if started at "
               f"{time.strftime('%H:%M', time.localtime(when))}")
    if sure:
        out.append(f"  ± is one standard deviation: the history's spread and size, and tonight's own draw of "
                   f"render times")
    for m in f.models:
        if m.history:
            spread = (f"history: render {_s(m.mean_s)} s on average (median {_s(m.median_s)} s), "
                      f"10–90 % {_s(m.p10_s)}–{_s(m.p90_s)} s, {m.history:,} clips seen")
        else:
            where = (f"only {m.seen} clip{'s' if m.seen > 1 else ''} rendered here ({MIN_HISTORY} make a history)"
                     if m.seen else "never rendered here")
            spread = (f"{where}: the catalog's typical render time, {m.mean_s:g} s (a guess)" if m.source == "catalog"
                      else f"{where}, no typical time in the catalog: {m.mean_s:g} s (a guess)")
        out.append(f"  {m.model:<34} {m.jobs:>7} job(s)  {spread}")
    return out


def clip_seconds(model: str, history: dict[str, dict[str, Any]],
                 typical: Mapping[str, float | None] | None = None) -> tuple[float, bool]:
    """How long one clip of ``model`` takes from its create to its file in place, for a
    deadline (``run --finish-by``): 9 clips in 10 of this model rendered within the first
    figure (render time as observed — create answered → result seen, so the poll's lag is in
    it), plus the usual result → file in place (download) and file → verified (its check, when
    the ledger saw one). The second value says whether it comes from history (False: the same
    guess as the forecast's: the catalog's typical render time from ``typical``, else
    GUESS_RENDER_S)."""
    m = per_model({model: 1}, history, typical)[0]
    h = history.get(model) or {}
    fetch, check = h.get("fetch"), h.get("check")
    return (m.p90_s + (float(fetch) if fetch is not None else 1.0) + (float(check) if check is not None else 0.0),
            bool(m.history))
