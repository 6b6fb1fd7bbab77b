"""One self-contained HTML report: summary tiles, failures by error code, timing and poll
histograms, and a filterable job table with an inline player per downloaded clip (relative
paths, so the report can be moved together with the videos). Every value from the ledger is
HTML-escaped: prompts and names are user text."""

from __future__ import annotations

import html
import json
import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .jobs import JobRow

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.muted{color:#667}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}.tile{background:#fff;border-radius:8px;padding:12px 16px;
min-width:120px;box-shadow:0 1px 2px #0002}.tile b{display:block;font-size:24px}.tile.done b{color:#18794e}
.tile.failed b{color:#c62828}.tile.in_doubt b{color:#b26a00}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0002}
th,td{padding:6px 8px;border-bottom:1px solid #e4e6ea;text-align:left;vertical-align:top}
th{background:#eef0f3;position:sticky;top:0}td.prompt{max-width:360px}video{width:220px;border-radius:4px}
.state{font-weight:600}.s-done{color:#18794e}.s-failed{color:#c62828}.s-in_doubt{color:#b26a00}
.controls{margin:8px 0;display:flex;gap:8px}input,select{font:inherit;padding:4px 8px}
svg text{font:11px system-ui,sans-serif;fill:#445}svg text.axis{font-style:italic}.bar{fill:#4a6fd1}
a.path{font-size:12px;word-break:break-all}
"""

_JS = """
(function(){
  const q=document.getElementById('q'), st=document.getElementById('state');
  const rows=[...document.querySelectorAll('#jobs tbody tr')];
  function apply(){
    const text=q.value.toLowerCase(), want=st.value; let shown=0;
    for(const r of rows){
      const ok=(!want||r.dataset.state===want)&&(!text||r.textContent.toLowerCase().includes(text));
      r.style.display=ok?'':'none'; if(ok) shown++;
    }
    document.getElementById('shown').textContent=shown;
  }
  const h=new URLSearchParams(location.hash.slice(1));
  if(h.get('state')) st.value=h.get('state'); if(h.get('q')) q.value=h.get('q');
  q.addEventListener('input',apply); st.addEventListener('change',apply); apply();
})();
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _histogram(values: list[float], *, bins: int = 12, unit: str = "s", title: str, x_label: str) -> str:
    if not values:
        return f"<p class='muted'>{_e(title)}: no data yet.</p>"
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    top = max(counts)
    w, h, pad = 560, 180, 30
    bw = (w - 2 * pad) / bins
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * c / top if top else 0
        x, y = pad + i * bw, h - pad - bh
        bars.append(f"<rect class='bar' x='{x:.1f}' y='{y:.1f}' width='{bw - 2:.1f}' height='{bh:.1f}'>"
                    f"<title>{lo + i * width:.1f}–{lo + (i + 1) * width:.1f}{unit}: {c}</title></rect>")
        if c:
            bars.append(f"<text x='{x + bw / 2 - 4:.1f}' y='{y - 3:.1f}'>{c}</text>")
    axis = (f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#889'/>"
            f"<text x='{pad}' y='{h - pad + 14}'>{lo:.1f}{unit}</text>"
            f"<text x='{w - pad}' y='{h - pad + 14}' text-anchor='end'>{hi:.1f}{unit}</text>"
            f"<text x='{w / 2:.0f}' y='{h - 2}' text-anchor='middle' class='axis'>{_e(x_label)}</text>"
            f"<text x='10' y='{h / 2:.0f}' text-anchor='middle' class='axis' "
            f"transform='rotate(-90 10 {h / 2:.0f})'>jobs</text>")
    return (f"<figure><figcaption>{_e(title)}</figcaption><svg role='img' aria-label='{_e(title)}' width='{w}' "
            f"height='{h}' viewBox='0 0 {w} {h}'>{''.join(bars)}{axis}</svg></figure>")


def render(rows: Iterable[JobRow], report_path: Path, *, title: str = "batchgen report",
           run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the report; return the summary figures it shows."""
    base = report_path.resolve().parent
    states: Counter[str] = Counter()
    failures: dict[str, list[JobRow]] = defaultdict(list)
    timings: list[float] = []
    polls: list[float] = []
    credits = 0.0
    by_model: Counter[str] = Counter()
    by_model_done: Counter[str] = Counter()
    by_model_credits: dict[str, float] = defaultdict(float)
    seconds_done = 0.0
    body_rows: list[str] = []
    for j in rows:
        req = json.loads(j["request"])
        states[j["state"]] += 1
        by_model[j["model"]] += 1
        by_model_done[j["model"]] += j["state"] == "done"
        if j["credits"]:
            credits += float(j["credits"])
            by_model_credits[j["model"]] += float(j["credits"])
        if j["submitted_at"] and j["completed_at"]:
            timings.append(j["completed_at"] - j["submitted_at"])
        if j["task_id"]:
            polls.append(float(j["polls"] or 0))
        if j["state"] in ("failed", "in_doubt") and j["error_code"]:
            failures[j["error_code"]].append(j)
        video = ""
        if j["state"] == "done" and j["output_path"]:
            if isinstance(req.get("duration"), int):
                seconds_done += req["duration"]
            rel = os.path.relpath(j["output_path"], base)
            src = "/".join(quote(part) for part in Path(rel).parts)
            video = (f"<video controls preload='metadata' src='{_e(src)}'></video>"
                     f"<br><a class='muted path' href='{_e(src)}'>{_e(rel)}</a>")
        params = ", ".join(f"{k}={v}" for k, v in req.items() if k not in ("model", "prompt", "reference_image_urls"))
        err = f"{j['error_code']}: {j['error_message']}" if j["error_code"] else ""
        body_rows.append(
            f"<tr data-state='{_e(j['state'])}'><td>{_e(j['name'])}<br><span class='muted'>{_e(j['key'][:12])}</span></td>"
            f"<td class='state s-{_e(j['state'])}'>{_e(j['state'])}</td><td>{_e(j['model'])}<br>"
            f"<span class='muted'>{_e(params)}</span></td><td class='prompt'>{_e(req.get('prompt'))}</td>"
            f"<td>{_e(j['polls'])}</td><td>{_e(j['credits'])}</td><td>{_e(err)}</td><td>{video}</td></tr>")
    total = sum(states.values())
    med = statistics.median(timings) if timings else None
    tiles = [("jobs", total, ""), ("done", states["done"], "done"), ("failed", states["failed"], "failed"),
             ("in doubt", states["in_doubt"], "in_doubt"),
             ("unfinished", sum(states[s] for s in ("queued", "submitting", "submitted", "rendering", "completed")), ""),
             ("cancelled", states["cancelled"], ""), ("credits", f"{credits:g}", ""),
             ("video seconds", f"{seconds_done:g}", ""),
             ("median submit→complete", f"{med:.1f}s" if med is not None else "—", "")]
    tile_html = "".join(f"<div class='tile {c}'><b>{_e(v)}</b>{_e(k)}</div>" for k, v, c in tiles)
    fail_html = "".join(
        f"<tr><td>{_e(code)}</td><td>{len(js)}</td><td>{_e(js[0]['error_message'])}</td>"
        f"<td>{_e(', '.join(x['name'] for x in js[:8]))}{' …' if len(js) > 8 else ''}</td></tr>"
        for code, js in sorted(failures.items(), key=lambda kv: -len(kv[1])))
    options = "".join(f"<option value='{_e(s)}'>{_e(s)} ({n})</option>" for s, n in sorted(states.items()))
    run_line = ""
    if run:
        run_line = (f"run {run['id']} · {_e(run['manifest'])} · started "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run['started_at']))} · {_e(run['status'])}")
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1><div class="muted">{run_line} · generated {time.strftime('%Y-%m-%d %H:%M:%S')}</div>
<div class="tiles" id="tiles">{tile_html}</div>
<h2>Failures by error code</h2>
{"<table id='failures'><thead><tr><th>code</th><th>jobs</th><th>message (first)</th><th>jobs</th></tr></thead><tbody>" + fail_html + "</tbody></table>" if failures else "<p class='muted' id='failures'>No failures.</p>"}
<h2>Timings</h2>
{_histogram(timings, title="submit → complete (seconds)", x_label="seconds from create to completed")}
{_histogram(polls, unit="", title="polls per job", bins=max(1, min(12, int(max(polls or [1])))), x_label="polls of one task")}
<h2>Credits by model</h2>
<table id='by-model'><thead><tr><th>model</th><th>jobs</th><th>done</th><th>credits</th></tr></thead><tbody>
{"".join(f"<tr><td>{_e(mo)}</td><td>{n}</td><td>{by_model_done[mo]}</td><td>{by_model_credits[mo]:g}</td></tr>" for mo, n in sorted(by_model.items()))}
</tbody></table>
<h2>Jobs (<span id="shown">{total}</span> shown)</h2>
<div class="controls"><input id="q" type="search" placeholder="filter: name, prompt, error…" aria-label="filter">
<select id="state" aria-label="state"><option value="">all states</option>{options}</select></div>
<table id="jobs"><thead><tr><th>name</th><th>state</th><th>model / params</th><th>prompt</th><th>polls</th>
<th>credits</th><th>error</th><th>video</th></tr></thead><tbody>
{"".join(body_rows)}
</tbody></table>
<script>{_JS}</script></body></html>
"""
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, report_path)
    return {"jobs": total, "states": dict(states), "credits": credits, "failures": {k: len(v) for k, v in failures.items()},
            "median_submit_to_complete_s": med}
