"""Issue 30's night scenarios for bench/run.py: the breaker (one model of three failing 100 %
from minute 2; the others must finish as if nothing happened) and the forecast (`plan`'s forecast
against the night it forecast, for four distributions of render times and several seeds)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Callable

from common import PY, Sim, child  # noqa: F401

MODELS = ("grok-imagine-text-to-video", "happyhorse-1.0-text-to-video", "sora-2")
DURATION = {"grok-imagine-text-to-video": 5, "happyhorse-1.0-text-to-video": 5, "sora-2": 4}


def _manifest(path: Path, per_model: int, prefix: str = "m",
              prompt: str = "bench clip {i} of a harbour at dusk") -> Path:
    """Rows interleaved model by model, so every model is rendering all night: names
    ``{prefix}{model's index}-{i}``, ``prompt`` with ``{i}`` filled in (distinct prompts keep
    two nights in one ledger apart)."""
    with open(path, "w") as f:
        f.write("name,model,prompt,duration\n")
        for i in range(per_model):
            for k, m in enumerate(MODELS):
                f.write(f"{prefix}{k}-{i:05d},{m},{prompt.format(i=i)},{DURATION[m]}\n")
    return path


def _per_model(db: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(db) as c:
        out: dict[str, dict[str, Any]] = {}
        for model, state, n in c.execute("SELECT model, state, count(*) FROM jobs GROUP BY model, state"):
            out.setdefault(model, {})[state] = n
        for model, last in c.execute("SELECT j.model, max(e.at) FROM events e JOIN jobs j ON j.id = e.job_id "
                                     "WHERE e.to_state = 'done' GROUP BY j.model"):
            out.setdefault(model, {})["last_done_at"] = last
        out["_start"] = {"at": c.execute("SELECT min(at) FROM events").fetchone()[0]}
    return out


def breaker(run: Callable[..., dict[str, Any]], row: Callable[..., None], per_model: int, fault_at: float,
            render: tuple[float, float], cooloff: float) -> None:
    broken = MODELS[0]
    print(f"\n[b] breaker: {len(MODELS)} models × {per_model} jobs, renders {render[0]:g}-{render[1]:g} s, "
          f"{broken} failing 100 % from {fault_at:g} s, --breaker-cooloff {cooloff:g}")
    results = {}
    for label, faults in (("control", ""), ("faulted", f"{broken}=1@{fault_at:g}")):
        with tempfile.TemporaryDirectory() as d, Sim(render_min=render[0], render_max=render[1],
                                                     **({"model_faults": faults} if faults else {})) as sim:
            tmp = Path(d)
            m = _manifest(tmp / "m.csv", per_model)
            r = run(sim, m, tmp, "--concurrency", "12", "--rpm", "0", "--poll-min", "0.2",
                    "--breaker-cooloff", str(cooloff))
            stats = _per_model(tmp / "l.db")
            with sqlite3.connect(tmp / "l.db") as c:
                # When the breaker opened, as the run recorded it (the ledger's breakers table).
                opened = c.execute("SELECT opened_at FROM breakers WHERE model = ?", (broken,)).fetchone()
                tripped = opened[0] if opened else None
                after = c.execute("SELECT count(*) FROM events e JOIN jobs j ON j.id = e.job_id WHERE j.model = ? "
                                  "AND e.to_state = 'submitting' AND e.at > ?", (broken, tripped or 1e18)).fetchone()[0]
            results[label] = (r, stats, tripped, after)
    (rc, sc, _, _), (rf, sf, tripped, after) = results["control"], results["faulted"]
    row("breaker: exit code of the faulted night", str(rf["rc"]), "1", rf["rc"] == 1)
    why = (rf["summary"].get("breakers") or {}).get(broken, "")
    row("breaker: summary names the model and why", why[:40] or "—", "named", bool(why))
    row("breaker: tasks created on it after it opened", str(after), "<= 3", tripped is not None and after <= 3)
    if tripped is not None:
        row("breaker: opened, seconds after the start", f"{tripped - sf['_start']['at']:.0f}", f">= {fault_at:g}",
            None)
    for model in MODELS[1:]:
        done_c, done_f = sc.get(model, {}).get("done", 0), sf.get(model, {}).get("done", 0)
        span_c = sc[model]["last_done_at"] - sc["_start"]["at"]
        span_f = sf[model]["last_done_at"] - sf["_start"]["at"]
        row(f"breaker: {model} done (control / faulted)", f"{done_c} / {done_f}", f"{per_model} / {per_model}",
            done_c == done_f == per_model)
        row(f"breaker: {model} finished at s (control / faulted)", f"{span_c:.0f} / {span_f:.0f}",
            "faulted <= control", span_f <= span_c * 1.05)
    row("breaker: whole night wall s (control / faulted)", f"{rc['wall']:.0f} / {rf['wall']:.0f}", "", None)


def _tonight(path: Path, per_model: int, prefix: str) -> Path:
    return _manifest(path, per_model, prefix, prefix + " clip {i} of a lighthouse")


DISTRIBUTIONS = {
    "the simulator's own (uniform 2-6 s, every model)": "",
    "skewed (lognormal, median 4 s, σ 0.6)": ",".join(f"{m}=lognormal:4:0.6" for m in MODELS),
    "bimodal (3 s or 12 s, 30 % slow)": ",".join(f"{m}=bimodal:3:12:0.3" for m in MODELS),
    "one slow model (3-5 s, 3-5 s, 14-18 s)": f"{MODELS[0]}=uniform:3:5,{MODELS[1]}=uniform:3:5,"
                                              f"{MODELS[2]}=uniform:14:18",
}


def _night(db: Path, prefix: str) -> tuple[float, dict[str, dict[str, Any]]]:
    """A night's length (its first create to its last clip in place, from the ledger's events)
    and what the ledger recorded of its clips, in the shape of Ledger.render_history: each
    model's render times (result seen − create answered), polls per task, median download."""
    with sqlite3.connect(db) as c:
        first, last = c.execute(
            "SELECT min(e.at), max(CASE WHEN e.to_state = 'done' THEN e.at END) FROM events e "
            "JOIN jobs j ON j.id = e.job_id WHERE j.name LIKE ?", (prefix + "%",)).fetchone()
        rows = c.execute("SELECT model, completed_at - submitted_at, polls, done_at - completed_at FROM jobs "
                         "WHERE name LIKE ? AND state = 'done'", (prefix + "%",)).fetchall()
    seen: dict[str, dict[str, Any]] = {}
    for model, render, polls, fetch in rows:
        h = seen.setdefault(model, {"renders": [], "polls": [], "fetches": []})
        h["renders"].append(render)
        h["polls"].append(polls)
        h["fetches"].append(fetch)
    for h in seen.values():
        h["polls"] = sum(h["polls"]) / len(h["polls"])
        h["fetch"] = sorted(h.pop("fetches"))[len(h["renders"]) // 2]
    return last - first, seen


def forecast(run: Callable[..., dict[str, Any]], row: Callable[..., None], history: int, tonight: int,
             concurrency: int, seeds: tuple[int, ...] = (0,), only: str = "") -> None:
    """A night of history, then `plan`'s forecast of the next night against that night's actual
    length (first create to last clip in place, from the ledger's events), for each distribution
    of render times and each simulator seed (one seed is one draw of render times: the history's
    mean and tonight's differ by chance, the more so for a skewed model and a short history).
    Beside it, the model alone: the same forecast computed from tonight's own recorded clips as
    if they had been the history (no sampling error left: what remains is the model's)."""
    import json

    from batchgen.forecast import estimate

    print(f"\n[f] forecast: {len(MODELS)} models, {history} clips each of history, then {tonight} each tonight, "
          f"--concurrency {concurrency} --rpm 0, seeds {', '.join(map(str, seeds))}")
    for label, dist in DISTRIBUTIONS.items():
        if only not in label:
            continue
        ratios = []
        for seed in seeds:
            knobs: dict[str, Any] = {"seed": seed, **({"model_render": dist} if dist else {})}
            with tempfile.TemporaryDirectory() as d, Sim(**knobs) as sim:
                tmp = Path(d)
                run(sim, _tonight(tmp / "history.csv", history, "h"), tmp, "--concurrency", str(concurrency),
                    "--rpm", "0", "--poll-min", "0.2")
                m = _tonight(tmp / "tonight.csv", tonight, "t")
                p = child([PY, "-m", "batchgen", "plan", str(m), "--ledger", str(tmp / "l.db"), "--concurrency",
                           str(concurrency), "--rpm", "0", "--json"])
                fc = json.loads(p["stdout"])["forecast"]
                r = run(sim, m, tmp, "--concurrency", str(concurrency), "--rpm", "0", "--poll-min", "0.2")
                actual, seen = _night(tmp / "l.db", "t")
            predicted, sd = fc["seconds"], fc.get("sd_seconds") or 0.0
            alone = estimate({mo: tonight for mo in seen}, seen, concurrency, None,
                             max(h["fetch"] for h in seen.values())).seconds
            ratio = actual / predicted if predicted else float("inf")
            ratios.append(ratio)
            means = " ".join(f"{mm['render_mean_s']:.1f}" for mm in fc["models"])
            tonight_means = " ".join(f"{sum(seen[mo]['renders']) / len(seen[mo]['renders']):.1f}" for mo in sorted(seen))
            row(f"forecast {label}, seed {seed}: forecast ± 1 sd / actual s", f"{predicted:.0f} ± {sd:.0f} / {actual:.0f}",
                "", None)
            row(f"forecast {label}, seed {seed}: mean render s, history → tonight", f"{means} → {tonight_means}", "",
                None)
            row(f"forecast {label}, seed {seed}: actual ÷ forecast", f"{ratio:.3f}", "0.85-1.15",
                0.85 <= ratio <= 1.15 and r["rc"] == 0)
            row(f"forecast {label}, seed {seed}: actual ÷ model alone", f"{actual / alone:.3f}", "", None)
        if len(ratios) > 1:
            inside = sum(0.85 <= x <= 1.15 for x in ratios)
            row(f"forecast {label}: mean actual ÷ forecast, within ±15 %", f"{sum(ratios) / len(ratios):.3f}, "
                f"{inside} of {len(ratios)}", "", None)
