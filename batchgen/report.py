"""One self-contained HTML report that scales: summary tiles, failures by error code, timing and
poll histograms, credits by model, and every job — rendered in the browser, a page at a time,
from compact data embedded in the page (string tables, one short array per job, gzipped), so
100,000 jobs make a page of a few MB that opens at once and filters without stalling.

Each delivered clip shows its poster frame (the player loads nothing until asked:
``preload="none"``), its contact sheet on demand (lazy image), what verification measured and
its outcome. ``compare=FIELD`` lays the same data out for A/B comparison: one row per base job
(its request without FIELD), one column per value of FIELD (a matrix field, ``model`` or
``take``). Paths are relative to the report, so keep it next to the videos' folder. Every value
from the ledger reaches the page as JSON data and is inserted as text, never as markup: prompts
and names are user text.
"""

from __future__ import annotations

import html
import json
import os
import statistics
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from . import files
from .jobs import UNFINISHED, JobRow, JobState, plain
from .media import PICTURES_DIR
from .reportdata import COMPARE_MAX_VALUES, CompareFields, Packed, json_bytes

S = JobState

PROMPT_CHARS = 160  # the table shows a prompt's start; the export has all of it
MESSAGE_CHARS = 160
# Row layout of the embedded data (see _JS: the same order).
_FIELDS = ("name", "key", "state", "model", "params", "prompt", "polls", "credits", "error", "message", "output",
           "verify", "detail", "duration", "width", "height", "poster", "sheet", "delivered", "pruned",
           "review", "pick")

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.muted{color:#667}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}.tile{background:#fff;border-radius:8px;padding:12px 16px;
min-width:120px;box-shadow:0 1px 2px #0002}.tile b{display:block;font-size:24px}.tile.done b{color:#18794e}
.tile.failed b{color:#c62828}.tile.in_doubt b{color:#b26a00}.tile.mismatch b{color:#8e24aa}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0002}
th,td{padding:6px 8px;border-bottom:1px solid #e4e6ea;text-align:left;vertical-align:top}
th{background:#eef0f3;position:sticky;top:0}td.prompt{max-width:340px}video{width:240px;max-height:240px;object-fit:contain;border-radius:4px;background:#111}
.state{font-weight:600}.s-done{color:#18794e}.s-failed{color:#c62828}.s-in_doubt{color:#b26a00}
.v{display:inline-block;border-radius:4px;padding:0 5px;font-size:12px;margin-top:4px}.v-ok{background:#e3f4ea;color:#18794e}
.v-mismatch,.v-undecodable,.v-missing,.v-changed{background:#f6e3f6;color:#8e24aa}
.r-approve{background:#e3f4ea;color:#18794e}.r-retake{background:#fff1d6;color:#8a5a00}.r-reject{background:#fbe4e4;color:#c62828}
.r-pending{background:#eef0f3;color:#556}
.controls{margin:8px 0;display:flex;gap:8px;flex-wrap:wrap;align-items:center}input,select,button{font:inherit;padding:4px 8px}
svg text{font:11px system-ui,sans-serif;fill:#445}svg text.axis{font-style:italic}.bar{fill:#4a6fd1}
a.path{font-size:12px;word-break:break-all}details img{width:240px;display:block;margin-top:4px}
td.cell{min-width:250px}.spec{font-size:12px;color:#556}
"""

_JS = r"""
(async function(){
  // The job data: JSON, gzipped and base64-encoded in the page (a 100k-job night is a few MB);
  // the browser's own DecompressionStream inflates it.
  const packed = document.getElementById('data').textContent.trim();
  const bytes = Uint8Array.from(atob(packed), c => c.charCodeAt(0));
  const D = JSON.parse(await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))).text());
  const S = D.strings, F = D.fields, rows = D.rows, col = {};
  F.forEach((f, i) => col[f] = i);
  const str = i => i === null || i === undefined ? '' : typeof i === 'string' ? i : S[i];  // a string itself past the table's size
  const get = (r, f) => r[col[f]];
  const $ = id => document.getElementById(id);
  const q = $('q'), st = $('state'), vf = $('verify'), rv = $('review'), cmp = $('compare'), PAGE = 50;
  let page = 0, shown = [];  // indexes into rows
  function el(tag, attrs, text){ const e = document.createElement(tag);
    for (const k in (attrs || {})) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; }
  function media(r){
    const box = el('div'), out = str(get(r, 'output')), dest = str(get(r, 'delivered'));
    if (!out) return box;
    const url = dest && (dest.endsWith('/') ? dest + out : dest);
    if (get(r, 'pruned')) { box.append(el('div', {class: 'muted'}, 'delivered; local copy removed'));
      box.append(el('div', {class: 'path'}, url)); return box; }
    const v = el('video', {controls: '', preload: 'none', src: D.base + out});
    if (get(r, 'poster')) v.setAttribute('poster', D.base + D.pictures + out + '.poster.jpg');
    box.append(v);
    if (get(r, 'sheet')) { const d = el('details'); d.append(el('summary', {}, 'contact sheet'));
      d.append(el('img', {loading: 'lazy', alt: 'contact sheet', src: D.base + D.pictures + out + '.sheet.jpg'})); box.append(d); }
    else if (get(r, 'poster')) box.append(el('div', {class: 'muted'}, 'contact sheet not drawn yet: batchgen verify --sheets-only draws it (so does batchgen review, or the next run)'));
    const a = el('a', {class: 'muted path', href: D.base + out}, out); box.append(el('br')); box.append(a);
    if (url) box.append(el('div', {class: 'muted path', title: 'delivered to object storage'}, '→ ' + url));
    return box;
  }
  function spec(r){
    const box = el('div', {class: 'spec'}), v = str(get(r, 'verify'));
    if (get(r, 'width')) box.append(el('div', {}, get(r, 'width') + '×' + get(r, 'height') + ' · ' + get(r, 'duration') + ' s'));
    if (v) { box.append(el('span', {class: 'v v-' + v}, v)); const d = str(get(r, 'detail')); if (d) box.append(el('div', {}, d)); }
    return box;
  }
  function matches(r, text, want, wantV, wantR){
    if (want && str(get(r, 'state')) !== want) return false;
    if (wantR && str(get(r, 'review')) !== wantR) return false;
    if (wantV && str(get(r, 'verify')) !== wantV) return false;
    if (!text) return true;
    return [get(r, 'name'), get(r, 'key'), str(get(r, 'prompt')), str(get(r, 'error')), str(get(r, 'message')),
            str(get(r, 'output'))].some(s => (s || '').toLowerCase().includes(text));
  }
  function renderRows(){
    const tb = $('rows'); tb.textContent = '';
    for (const i of shown.slice(page * PAGE, (page + 1) * PAGE)) {
      const r = rows[i], tr = el('tr', {'data-state': str(get(r, 'state'))});
      const n = el('td'); n.append(el('div', {}, get(r, 'name'))); n.append(el('span', {class: 'muted'}, get(r, 'key')));
      tr.append(n);
      const s = el('td', {class: 'state s-' + str(get(r, 'state'))}, str(get(r, 'state')));
      if (get(r, 'review')) s.append(el('div', {class: 'v r-' + str(get(r, 'review'))},
                                        str(get(r, 'review')) + (get(r, 'pick') ? ' · pick' : '')));
      tr.append(s);
      const m = el('td'); m.append(el('div', {}, str(get(r, 'model')))); m.append(el('span', {class: 'muted'}, str(get(r, 'params'))));
      tr.append(m);
      tr.append(el('td', {class: 'prompt'}, str(get(r, 'prompt'))));
      tr.append(el('td', {}, get(r, 'polls'))); tr.append(el('td', {}, get(r, 'credits') === null ? '' : get(r, 'credits')));
      const e = str(get(r, 'error')); tr.append(el('td', {}, e ? e + ': ' + str(get(r, 'message')) : ''));
      const c = el('td'); c.append(spec(r)); tr.append(c);
      const v = el('td'); v.append(media(r)); tr.append(v);
      tb.append(tr);
    }
  }
  function renderCompare(field){
    const C = D.columns[field], groups = new Map(), values = [];
    if (!C) return 0;
    for (const i of shown) {
      const g = C.g[i], val = str(C.v[i]);
      if (g === null || g === undefined) continue;
      if (!groups.has(g)) groups.set(g, {});
      groups.get(g)[val] = rows[i];
      if (!values.includes(val)) values.push(val);
    }
    values.sort();
    const head = $('cmp-head'); head.textContent = '';
    const hr = el('tr'); hr.append(el('th', {}, 'job')); values.forEach(v => hr.append(el('th', {}, field + ' = ' + v)));
    head.append(hr);
    const tb = $('cmp-rows'); tb.textContent = '';
    const keys = [...groups.keys()];
    for (const g of keys.slice(page * PAGE, (page + 1) * PAGE)) {
      const cells = groups.get(g), any = cells[Object.keys(cells)[0]];
      const tr = el('tr'); const n = el('td'); n.append(el('div', {}, get(any, 'name')));
      n.append(el('div', {class: 'muted prompt'}, str(get(any, 'prompt')))); tr.append(n);
      for (const v of values) {
        const td = el('td', {class: 'cell'}); const r = cells[v];
        if (r) { td.append(media(r)); td.append(spec(r)); td.append(el('div', {class: 'spec'},
                 str(get(r, 'state')) + (get(r, 'review') ? ' · ' + str(get(r, 'review')) + (get(r, 'pick') ? ' (pick)' : '') : '')
                 + (get(r, 'credits') === null ? '' : ' · ' + get(r, 'credits') + ' credits'))); }
        else td.append(el('span', {class: 'muted'}, '—'));
        tr.append(td);
      }
      tb.append(tr);
    }
    return keys.length;
  }
  function apply(keepPage){
    const t0 = performance.now();
    const text = q.value.toLowerCase(), want = st.value, wantV = vf.value, wantR = rv.value, field = cmp.value;
    shown = [];
    for (let i = 0; i < rows.length; i++) if (matches(rows[i], text, want, wantV, wantR)) shown.push(i);
    if (!keepPage) page = 0;
    $('jobs').hidden = !!field; $('comparison').hidden = !field;
    const total = field ? renderCompare(field) : (renderRows(), shown.length);
    const pages = Math.max(1, Math.ceil(total / PAGE));
    if (page >= pages) { page = pages - 1; return apply(true); }
    $('shown').textContent = shown.length;
    $('page').textContent = 'page ' + (page + 1) + ' of ' + pages;
    $('prev').disabled = page === 0; $('next').disabled = page >= pages - 1;
    const h = new URLSearchParams();
    if (want) h.set('state', want); if (text) h.set('q', q.value); if (wantV) h.set('verify', wantV); if (wantR) h.set('review', wantR); if (field) h.set('compare', field);
    history.replaceState(null, '', h.toString() ? '#' + h.toString() : location.pathname);
    document.body.setAttribute('data-apply-ms', Math.round(performance.now() - t0));
  }
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.get('state')) st.value = h.get('state'); if (h.get('q')) q.value = h.get('q');
  if (h.get('verify')) vf.value = h.get('verify'); if (h.get('review')) rv.value = h.get('review');
  if (h.get('compare')) cmp.value = h.get('compare');
  else if (D.compare) cmp.value = D.compare;
  let timer = null;
  q.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => apply(false), 120); });
  [st, vf, rv, cmp].forEach(x => x.addEventListener('change', () => apply(false)));
  $('prev').addEventListener('click', () => { page--; apply(true); });
  $('next').addEventListener('click', () => { page++; apply(true); });
  apply(false);
  if (cmp.value) $('controls').scrollIntoView();  // asked for a comparison: the grid first, not below the fold
  document.body.setAttribute('data-ready-ms', Math.round(performance.now()));  // since navigation start
})();
"""


_BLOB = "\ue000data\ue000"  # where the packed data goes in the page (see render)


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _histogram(values: Sequence[float], *, bins: int = 12, unit: str = "s", title: str, x_label: str) -> str:
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


class _Strings:
    """A string table: each distinct string once in the page, rows carry its index. Past
    ``limit`` distinct strings (a million jobs' prompts and file names) a new string is carried
    by the row itself: the table, and the memory it takes to build it, stay bounded."""

    def __init__(self, limit: int = 50_000) -> None:
        self.index: dict[str, int] = {}
        self.items: list[str] = []
        self.limit = limit

    def __call__(self, s: str | None) -> int | str | None:
        if s is None or s == "":
            return None
        i = self.index.get(s)
        if i is None:
            if len(self.items) >= self.limit:
                return s
            i = self.index[s] = len(self.items)
            self.items.append(s)
        return i


def _delivered_prefix(url: str | None, output: str | None) -> str | None:
    if url and output and url.endswith("/" + output):
        return url[: -len(output)]
    return url


def _cut(s: str | None, n: int) -> str | None:
    return s if s is None or len(s) <= n else s[: n - 1] + "…"


def _covers(total: int, run_ids: set[int], manifests: Counter[str], run: dict[str, Any] | None,
            scope: str | None) -> str:
    """The header line: what the page covers (its jobs, manifests and runs), then the run named
    (``--run``) or the latest one — never the latest run alone as if it were the whole page."""
    shown = sorted(manifests, key=lambda m: (-manifests[m], m))
    names = ", ".join(_e(os.path.basename(m) or m) for m in shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    ids = sorted(run_ids)
    runs_text = ("no run" if not ids else f"run {ids[0]}" if len(ids) == 1
                 else f"runs {ids[0]}–{ids[-1]} ({len(ids)})")
    parts = [f"{total:,} job(s)" + (f" of manifest {_e(scope)}" if scope else
                                    f" from {len(shown)} manifest(s): {names}" if shown else ""), runs_text]
    if run and not (len(ids) == 1 and ids[0] == run["id"] and len(shown) <= 1):
        parts.append(f"latest run {run['id']} ({_e(os.path.basename(run['manifest']))}, "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run['started_at']))}, {_e(run['status'])})")
    elif run:
        parts.append(f"{_e(run['manifest'])} · started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run['started_at']))} · {_e(run['status'])}")
    return " · ".join(parts)


def render(rows: Iterable[JobRow], report_path: Path, *, title: str = "batchgen report",
           run: dict[str, Any] | None = None, compare: str | None = None,
           delivery: dict[str, int] | None = None, scope: str | None = None) -> dict[str, Any]:
    """Write the report (``-``: stdout, links relative to the current folder; see
    ``files.atomic_output`` for what is refused); return the summary figures it shows.
    ``delivery``: the ledger's delivered / not yet delivered counts (``Ledger.delivery_counts``,
    what status shows). ``scope``: the manifest the rows were limited to (``report --manifest``).
    The header says what the page covers: its runs and manifests, counted from the rows."""
    # Refused before the page is built (a device, FIFO, folder, symlink loop, missing folder).
    files.ensure_output_target(report_path, what="the report")
    base_dir = Path.cwd() if str(report_path) == "-" else report_path.resolve().parent
    strings = _Strings()
    states: Counter[str] = Counter()
    verified: Counter[str] = Counter()
    reviewed: Counter[str] = Counter()  # finished clips by their latest verdict (pending: none yet)
    failures: Counter[str] = Counter()
    failed_names: dict[str, list[str]] = defaultdict(list)  # the first few of each code (the page lists 8)
    failure_msg: dict[str, str] = {}
    timings = array("d")
    polls = array("d")
    credits = 0.0
    by_model: Counter[str] = Counter()
    by_model_done: Counter[str] = Counter()
    by_model_credits: dict[str, float] = defaultdict(float)
    seconds_done = 0.0
    out_root: str | None = None
    # comparison: per field, each job's request without that field (hashed) and the field's
    # value (an id into the field's own values; -1: the job has no such field). A field with more
    # values than can be compared is dropped as soon as it has them (unless it is ``compare``).
    fields = CompareFields(compare)
    run_ids: set[int] = set()
    manifests: Counter[str] = Counter()
    n = 0
    # The rows are written as they come (JSON, to a temporary file), never held: a million jobs
    # make a page of tens of MB but need no more memory than a few.
    spool = tempfile.TemporaryFile()
    for j in rows:
        run_ids.add(j["run_id"])
        if m := cast(dict[str, Any], j).get("manifest"):  # operations.outputs adds it
            manifests[m] += 1
        req = json.loads(j["request"])
        state = j["state"]
        states[state] += 1
        by_model[j["model"]] += 1
        by_model_done[j["model"]] += state == S.DONE
        if j["credits"]:
            credits += float(j["credits"])
            by_model_credits[j["model"]] += float(j["credits"])
        if j["submitted_at"] and j["completed_at"]:
            timings.append(j["completed_at"] - j["submitted_at"])
        if j["task_id"]:
            polls.append(float(j["polls"] or 0))
        if state in (S.FAILED, S.IN_DOUBT) and j["error_code"]:
            failures[j["error_code"]] += 1
            if len(failed_names[j["error_code"]]) <= 8:
                failed_names[j["error_code"]].append(j["name"])
            failure_msg.setdefault(j["error_code"], j["error_message"] or "")
        if j["verify"]:
            verified[j["verify"]] += 1
        verdict = j.get("review") or ("pending" if state == S.DONE else None)
        if verdict:
            reviewed[verdict] += 1
        output = None
        if state == S.DONE and j["output_path"]:
            if isinstance(req.get("duration"), int):
                seconds_done += req["duration"]
            if out_root is None and j["output_path"].endswith(j["output"]):
                out_root = j["output_path"][: -len(j["output"])]
            output = j["output"] if out_root and j["output_path"] == out_root + j["output"] else \
                os.path.relpath(j["output_path"], out_root or base_dir)
        prompt = req.pop("prompt", None)
        model = req.pop("model", None)
        params = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in req.items()
                           if k != "reference_image_urls")  # JSON spelling: true, not True
        full = {**req, "prompt": prompt, "model": model, "take": j["take"]}
        items = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in full.items()))
        for f in [*req, "model", "take"]:
            if f == "model":
                # Models take different fields (per_model: resolution, audio…), so "the same
                # shot on another model" is the same row, take, prompt and aspect ratio.
                h = hash((j["source"], j["take"], prompt, full.get("aspect_ratio", full.get("ratio"))))
            else:
                h = hash(tuple(kv for kv in items if kv[0] != f))
            fields.add(f, n, h, "" if full.get(f) is None else str(full[f]))
        n += 1
        fields.pad(n)
        spool.write(b"," if n > 1 else b"")
        spool.write(json_bytes([
            j["name"], j["key"][:12], strings(state), strings(j["model"]), strings(params),
            strings(_cut(prompt, PROMPT_CHARS)), j["polls"] or 0, j["credits"], strings(j["error_code"]),
            strings(_cut(j["error_message"], MESSAGE_CHARS)), strings(output), strings(j["verify"]),
            strings(_cut(j["verify_detail"], MESSAGE_CHARS)),
            None if j["m_duration"] is None else round(j["m_duration"], 2), j["m_width"], j["m_height"],
            1 if j["poster"] else 0, 1 if j["sheet"] else 0,
            # the object URL (--deliver); its common prefix when it ends with the output name, so
            # that 100k delivered clips share one string
            strings(_delivered_prefix(j["delivered_url"], output)), 1 if j["pruned_at"] else 0,
            strings(verdict), 1 if j.get("pick") else 0,
        ]))
    if compare is not None and compare not in fields.distinct and n:
        # an unknown field is an error, not the plain view in silence
        import difflib

        from .errors import UsageError

        spool.close()
        known = sorted(fields.distinct)
        near = difflib.get_close_matches(compare, known, n=1)
        raise UsageError(f"--compare {compare}: no job has this field" + (f"; did you mean {near[0]}?" if near else "")
                         + f" (fields: {', '.join(known)})")
    comparable = fields.comparable()
    columns = tempfile.TemporaryFile()  # small group ids and string-table values, one column per field
    columns.write(b"{")
    for i, f in enumerate(comparable):
        columns.write(b"," if i else b"")
        fields.write_column(f, strings, columns)
    columns.write(b"}")
    base = ""
    if out_root is not None:
        rel = os.path.relpath(out_root, base_dir)
        base = "" if rel == "." else "/".join(Path(rel).parts) + "/"
    # gzip + base64: a fifth of the size, and no user text can reach the HTML parser at all.
    # The same bytes as one JSON document {fields, strings, rows, base, pictures, compare, columns}.
    blob = Packed(tempfile.TemporaryFile())
    blob.write(b'{"fields":' + json_bytes(list(_FIELDS)) + b',"strings":' + json_bytes(strings.items) + b',"rows":[')
    blob.copy(spool)
    blob.write(b'],"base":' + json_bytes(base) + b',"pictures":' + json_bytes(PICTURES_DIR + "/") + b',"compare":'
               + json_bytes(compare) + b',"columns":')
    blob.copy(columns)
    blob.write(b"}")
    blob.finish()
    total = sum(states.values())
    med = statistics.median(timings) if timings else None
    not_as_asked = sum(n for v, n in verified.items() if v not in ("ok", "unchecked"))
    tiles = [("jobs", total, ""), ("done", states[S.DONE], S.DONE), ("failed", states[S.FAILED], S.FAILED),
             ("in doubt", states[S.IN_DOUBT], S.IN_DOUBT),
             ("unfinished", sum(states[s] for s in UNFINISHED), ""),
             ("cancelled", states[S.CANCELLED], ""), ("not as asked", not_as_asked, "mismatch"),
             ("credits", plain(credits), ""), ("video seconds", plain(seconds_done), ""),
             ("median submit→complete", f"{med:.1f}s" if med is not None else "—", "")]
    if delivery and (delivery["delivered"] or delivery["undelivered"]):
        tiles.insert(3, ("delivered", delivery["delivered"], ""))
        tiles.insert(4, ("not yet delivered", delivery["undelivered"], S.FAILED if delivery["undelivered"] else ""))
    tile_html = "".join(f"<div class='tile {c}'><b>{_e(v)}</b>{_e(k)}</div>" for k, v, c in tiles)
    fail_html = "".join(
        f"<tr><td>{_e(code)}</td><td>{failures[code]}</td><td>{_e(failure_msg[code])}</td>"
        f"<td>{_e(', '.join(names[:8]))}{' …' if len(names) > 8 else ''}</td></tr>"
        for code, names in sorted(failed_names.items(), key=lambda kv: -failures[kv[0]]))
    options = "".join(f"<option value='{_e(s)}'>{_e(s)} ({n})</option>" for s, n in sorted(states.items()))
    v_options = "".join(f"<option value='{_e(s)}'>{_e(s)} ({n})</option>" for s, n in sorted(verified.items()))
    r_options = "".join(f"<option value='{_e(s)}'>{_e(s)} ({n})</option>" for s, n in sorted(reviewed.items()))
    c_options = "".join(f"<option value='{_e(f)}'>{_e(f)}</option>" for f in comparable)
    run_line = _covers(total, run_ids, manifests, run, scope)
    by_model_html = "".join(f"<tr><td>{_e(mo)}</td><td>{n}</td><td>{by_model_done[mo]}</td>"
                            f"<td>{plain(by_model_credits[mo])}</td></tr>" for mo, n in sorted(by_model.items()))
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
{by_model_html}</tbody></table>
<h2>Jobs (<span id="shown">{total}</span> shown)</h2>
<div class="controls" id="controls"><input id="q" type="search" placeholder="filter: name, prompt, error, key…" aria-label="filter">
<select id="state" aria-label="state"><option value="">all states</option>{options}</select>
<select id="verify" aria-label="verification"><option value="">any verification</option>{v_options}</select>
<select id="review" aria-label="review"><option value="">any review</option>{r_options}</select>
<label>compare by <select id="compare" aria-label="compare by"><option value="">— (one row per job)</option>{c_options}</select></label>
<button id="prev" type="button">‹ previous</button><span id="page" class="muted"></span><button id="next" type="button">next ›</button></div>
<table id="jobs"><thead><tr><th>name</th><th>state</th><th>model / params</th><th>prompt</th><th>polls</th>
<th>credits</th><th>error</th><th>measured</th><th>video</th></tr></thead><tbody id="rows"></tbody></table>
<table id="comparison" hidden><thead id="cmp-head"></thead><tbody id="cmp-rows"></tbody></table>
<script type="application/octet-stream" id="data" data-encoding="gzip+base64">{_BLOB}</script>
<script>{_JS}</script></body></html>
"""
    # Only constant text follows the blob: the page's user text is all before it.
    head, _, tail = doc.rpartition(_BLOB)
    with files.atomic_output(report_path, what="the report", allow_stdout=True) as f:
        f.write(head)
        size = len(head.encode()) + blob.write_base64(f)
        f.write(tail)
    return {"jobs": total, "runs": sorted(run_ids), "manifests": sorted(manifests), "states": dict(states),
            "credits": credits,
            "failures": dict(failures), "verified": dict(verified), "review": dict(reviewed),
            "median_submit_to_complete_s": med, "bytes": size + len(tail.encode()), "delivery": delivery}
