"""Issue 30's night scenarios for bench/run.py: the breaker (one model of three failing 100 %
from minute 2; the others must finish as if nothing happened)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Callable

from common import PY, Sim, child  # noqa: F401

MODELS = ("grok-imagine-text-to-video", "happyhorse-1.0-text-to-video", "sora-2")
DURATION = {"grok-imagine-text-to-video": 5, "happyhorse-1.0-text-to-video": 5, "sora-2": 4}


def _manifest(path: Path, per_model: int) -> Path:
    """Rows interleaved model by model, so every model is rendering all night."""
    with open(path, "w") as f:
        f.write("name,model,prompt,duration\n")
        for i in range(per_model):
            for k, m in enumerate(MODELS):
                f.write(f"m{k}-{i:05d},{m},bench clip {i} of a harbour at dusk,{DURATION[m]}\n")
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
                fails = [at for (at,) in c.execute(
                    "SELECT e.at FROM events e JOIN jobs j ON j.id = e.job_id WHERE j.model = ? AND "
                    "e.to_state = 'failed' ORDER BY e.at", (broken,))]
                tripped = fails[4] if len(fails) >= 5 else None
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
