"""How each command's result reads: one printer per result document, data on stdout, messages
and a run's summary on stderr, ``--json`` the document itself. Printers only format what the
library returned; they never read the ledger or decide an exit code. rich (tables) loads only
when ``status`` prints one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import logs
from ..failures import fix
from ..jobs import RunStatus, plain, short_key
from .handler import echo_err

if TYPE_CHECKING:
    from ..runner import RunResult

RECOVER_HINT = ("missing or changed files: `batchgen recover` fetches them again while their result URL is valid "
                "(free), or renders them again with --rerender (paid)")


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


def print_plan(doc: dict[str, Any], manifest: Path) -> None:
    for e in doc.get("explain", []):
        click.echo(f"{e['action']:<9} {e['output']} ({e['name']}, {e['key']}, {e['row']}): {e['reason']}")
    for w in doc["warnings"]:
        echo_err(f"warning: {w}")
    unit = doc["credits_unit"]
    click.echo(f"{manifest}: {doc['jobs']} job(s)")
    click.echo("  " + "  ".join(f"{k.replace('_', ' ')}={v}" for k, v in doc["states"].items()))
    unpriced = f", {doc['unpriced_to_submit']} without a price" if doc.get("unpriced_to_submit") else ""
    click.echo(f"  to submit: {doc['to_submit']} (~{plain(doc['credits_to_submit'])} {unit}{unpriced})")
    _print_retry(doc["retry"], unit)
    rt = doc.get("retakes") or {}
    if rt.get("queued") or rt.get("marked"):
        click.echo(f"  retakes: {rt['queued']} queued (included above, ~{plain(rt['credits'])} {doc['credits_unit']})"
                   + (f", {rt['marked']} marked and not queued yet (`batchgen retake`)" if rt.get("marked") else ""))
    for p in doc["video"]:
        est = "no price" if p["credits_estimated"] is None else f"~{plain(p['credits_estimated'])} {unit}"
        click.echo(f"  {p['model']:<34} {p['resolution']:>5}  {p['jobs']:>7} job(s)  {plain(p['seconds']):>9} s of video  {est}")
    click.echo(f"  estimated total: ~{plain(doc['credits_estimated_total'])} {unit} for all jobs ({doc['prices']})")
    for text in doc.get("forecast", {}).get("lines", []):
        click.echo(text)


def _print_retry(r: dict[str, Any], unit: str) -> None:
    """plan's line on the failed jobs `run --retry-failed` would resubmit, and those it would leave."""
    if not r["included"]:
        if r["resubmitted"]:
            click.echo(f"  failed: {r['resubmitted']} retryable, not in to submit (~{plain(r['credits'])} {unit}): "
                       "`plan --retry-failed` forecasts them, `run --retry-failed` resubmits them")
        return
    click.echo(f"  --retry-failed: {r['resubmitted']} failed job(s) resubmitted (included above, "
               f"~{plain(r['credits'])} {unit}, each a new paid task)")
    left = [f"{r['spent']} had their --max-attempts {r['max_attempts']} creates" if r["spent"] else "",
            f"{r['permanent']} failed for a reason a new task does not fix (change the request)"
            if r["permanent"] else ""]
    if r["spent"] or r["permanent"]:
        click.echo(f"  --retry-failed leaves {r['spent'] + r['permanent']} failed: " + "; ".join(x for x in left if x))


def print_diff(doc: dict[str, Any], manifest: Path, as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    for w in doc["warnings"]:
        echo_err(f"warning: {w}")
    last = doc["last_run"]
    against = (f"run {last['id']} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(last['started_at']))}, "
               f"{last['status']})" if last else "an empty ledger (never run)")
    done = f" ({doc['unchanged_done']} done)" if doc["unchanged"] else ""
    click.echo(f"{manifest} against {against}: {len(doc['added'])} added, {len(doc['removed'])} removed, "
               f"{len(doc['changed'])} changed, {doc['unchanged']} unchanged{done}")
    c = doc["credits"]

    def cr(v: float | None) -> str:
        return "no price" if v is None else f"{plain(v)} {c['unit']}"

    for j in doc["added"]:
        click.echo(f"  + {j['output']}  ({j['name']}, {j['model']})  {cr(j['credits'])}")
    for j in doc["removed"]:
        click.echo(f"  - {j['output']}  ({j['name']}, was {j['state']})  {cr(j['credits'])}")
    for j in doc["changed"]:
        click.echo(f"  ~ {j['output']}  ({j['name']}): {', '.join(j['fields'])}  "
                   f"{cr(j['credits_before'])} → {cr(j['credits'])}")
    rt = doc.get("retakes") or {}
    if rt.get("queued") or rt.get("marked"):
        click.echo(f"retakes: {rt['queued']} queued (~{plain(rt['credits'])} {c['unit']}, in tonight's spend)"
                   + (f", {rt['marked']} marked and not queued yet (`batchgen retake`)" if rt.get("marked") else ""))
    click.echo(f"credits (estimated): last {plain(c['last'])} → now {plain(c['now'])} ({plain(c['delta'], sign=True)} "
               f"{c['unit']}); tonight's spend ~{plain(c['tonight'])} {c['unit']} for the jobs a run would submit"
               + (f" ({c['unpriced_jobs']} without a price)" if c["unpriced_jobs"] else ""))
    for text in doc.get("forecast", {}).get("lines", []):
        click.echo(text)


def print_models(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        audio = {True: "audio", False: "no audio", None: "audio not documented"}.get(d["audio"], f"audio if {d['audio']}")
        out = {"duration": "output = duration", "input": "output follows the input"}.get(
            str(d["output_seconds"]), f"output {d['output_seconds']} s")
        click.echo(f"{d['model']}  ({out}; {audio}{'; open: unlisted fields pass with a warning' if d['open'] else ''})")
        for f in d["fields"]:
            bits = [f["type"] + (" required" if f["required"] else "")]
            if f["default"] is not None:
                bits.append(f"default {f['default']}")
            if f["allowed"] is not None:
                bits.append("one of " + ", ".join(map(str, f["allowed"])) if isinstance(f["allowed"], list)
                            else str(f["allowed"]))
            if f["auto"] is not None:
                bits.append(f"{f['auto']} = the model decides")
            if f["max_len"]:
                bits.append(f"≤ {f['max_len']} chars")
            click.echo(f"    {f['name']:<22} {'; '.join(bits)}")
        for r in d["rules"]:
            click.echo(f"    rule: {r}")
        for url in d["sources"] or ([d["doc"]] if d["doc"] else []):
            click.echo(f"    source: {url}")
        if d["read_on"]:
            click.echo(f"    read on: {d['read_on']}")
        if d.get("typical_render_s"):
            click.echo(f"    typical render: {d['typical_render_s']:g} s (a guess; plan's forecast without history)")


def print_result(r: RunResult, as_json: bool) -> None:
    """A run's summary: JSON on stdout with --json, else on stderr (one JSON line with --log-format json)."""
    if as_json:
        print_json(r.as_dict())
        return
    if logs.FORMAT == "json":
        echo_err(logs.json_line("info", f"run {r.run_id} finished", event="summary", **r.as_dict()))
        return
    counts = "  ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))
    echo_err(f"run {r.run_id} finished in {r.elapsed:.1f}s: {counts}")
    echo_err(f"  requests={r.requests} polls={r.polls} throttled(429)={r.throttled} ledger commits={r.commits} "
             f"credits reserved={plain(r.credits_reserved)} (estimated {plain(r.credits_estimated)})")
    for j in r.failed[:20]:
        change = fix(j["error_code"], j["request"])
        echo_err(f"  FAILED   {j['name']} ({short_key(j['key'])}): {j['error_code']}: {j['error_message']}"
                 + (f" — permanent: {change}" if change else ""))
    if len(r.failed) > 20:
        echo_err(f"  … {len(r.failed) - 20} more failed (batchgen export)")
    for model, why in r.breakers.items():
        # Said of any job left, not of "its queued jobs": a night may end with none queued (each
        # failed with its render retries spent) and the breaker open all the same.
        echo_err(f"  BREAKER OPEN {model}: {why} — any job of it not rendered yet waits for the next run, "
                 "whose first task of it is the probe")
    if r.deadline:
        from ..deadline import verdict

        for text in verdict(r.deadline, show=20):
            echo_err(f"  {text}")
    if r.verified:
        echo_err("  verified clips: " + "  ".join(f"{k}={v}" for k, v in sorted(r.verified.items())))
    if r.unverified:
        echo_err(f"  NOT VERIFIED {r.unverified} clip(s): their verification could not run (see above) — "
                 "the next run or `batchgen verify` checks them")
    if r.sheets_left:
        echo_err(f"  {r.sheets_left} contact sheet(s) not drawn (the run does not wait for pictures) — "
                 "`batchgen verify --sheets-only` (or the next run, or `batchgen review`) draws them")
    for j in r.not_as_asked[:20]:
        echo_err(f"  NOT AS ASKED {j['name']} ({short_key(j['key'])}): {j['verify']}: {j['verify_detail']} "
                 f"— {j['output_path']}")
    if any(j["verify"] in ("missing", "changed") for j in r.not_as_asked):
        echo_err(f"  {RECOVER_HINT}")
    for j in r.in_doubt:
        k = short_key(j["key"])
        echo_err(f"  IN DOUBT {j['name']} ({k}): {j['error_code']} — "
                 f"batchgen resolve {k} --adopt TASK_ID | --resubmit | --abandon")
    if r.delivery:
        d = r.delivery
        echo_err(f"  delivered to {d['destination']}: {d['delivered']} clip(s) ({d['delivered_now']} by this run), "
                 f"{d['undelivered']} not yet" + (f" — {d['error']}" if d.get("error") else ""))
    if r.reason:  # said once: "stopped by signal", not "stopped: stopped by signal"
        echo_err(f"  {r.reason}" if r.reason.startswith("stopped") else f"  stopped: {r.reason}")


def print_status(doc: dict[str, Any], hours: float) -> None:
    from rich.table import Table

    from ..progress import console

    con = console()  # without a terminal (cron), never cut to 80 columns
    t = Table(title="runs", title_justify="left")
    for col in ("run", "status", "started", "worker", "jobs", "counts", "manifest"):
        t.add_column(col)
    for r in doc["runs"]:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"]))
        st = r["status"] + (" (stop requested)" if r["stop_requested"] and r["status"] == RunStatus.RUNNING else "")
        worker = f"{r['host']}:{r['pid']}"
        if r["status"] == RunStatus.RUNNING and r["heartbeat_age_s"] is not None:
            worker += f" ♥ {r['heartbeat_age_s']:g}s ago, holds {r['held']}"
        t.add_row(str(r["id"]), st, started, worker, str(r["jobs"]),
                  " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items())), r["manifest"])
    con.print(t)
    for r in doc["runs"]:
        if r.get("deadline"):
            con.print(f"run {r['id']}: {r['deadline']}", markup=False)
    if doc["verified"]:
        con.print("verified clips: " + "  ".join(f"{k}={v}" for k, v in sorted(doc["verified"].items())))
    review = doc.get("review") or {}
    if any(review.values()):
        con.print("review: " + "  ".join(f"{k}={review[k]}" for k in ("pending", "approve", "retake", "reject"))
                  + ("  (batchgen review)" if review.get("pending") else ""))
    for j in doc["not_as_asked"]:
        con.print(f"  not as asked: {j['name']} ({j['key']}): {j['verify']}: {j['detail']}")
    if doc["delivered"] or doc["undelivered"]:
        con.print(f"delivered to object storage: {doc['delivered']} clip(s), {doc['undelivered']} not yet"
                  + (" (`batchgen deliver`, or the next run of a manifest containing them, delivers them)"
                     if doc["undelivered"] else ""), markup=False)
    for j in doc["not_delivered"]:
        con.print(f"  not delivered: {j['name']} ({j['key']}) to {j['destination']}: {j['error']} — kept at "
                  f"{j['output_path']}", markup=False)
    for model, b in doc.get("breakers", {}).items():
        con.print(f"BREAKER OPEN {model}: {b['why']} — no new task but a probe "
                  + (f"in {b['probe_in_s']} s" if b["probe_in_s"] else "at the next run's first task of it"), markup=False)
    for title, rows, extra in (("oldest unfinished jobs", doc["oldest_unfinished"], "age_s"),
                               (f"in doubt (credits at risk ≈ {plain(doc['credits_at_risk'])})", doc["in_doubt"], "credits_at_risk"),
                               (f"results expiring within {hours:g} h, not downloaded", doc["expiring"], "expires_in_s")):
        if not rows:
            con.print(f"{title}: none")
            continue
        t = Table(title=title, title_justify="left")
        for col in ("id", "key", "name", "state", "task id", "error", extra):
            t.add_column(col)
        for j in rows:
            t.add_row(*(str(j[k] if j[k] is not None else "") for k in ("id", "key", "name", "state", "task_id", "error", extra)))
        con.print(t)


def print_verify(doc: dict[str, Any]) -> None:
    click.echo(f"{doc['checked']} clip(s): " + ("  ".join(f"{k}={v}" for k, v in sorted(doc["counts"].items()))
                                                or "nothing delivered yet"))
    if doc["pruned"]:
        click.echo(f"  {doc['pruned']} clip(s) not checked: removed locally after delivery (--prune-local)")
    for j in doc["not_as_asked"]:
        click.echo(f"  {j['verify'].upper():<12} {j['name']} ({j['key']}): {j['detail']} — {j['output_path']}")
    if any(j["verify"] in ("missing", "changed") for j in doc["not_as_asked"]):
        click.echo(f"  {RECOVER_HINT}")


def print_deliver(doc: dict[str, Any]) -> None:
    for dest, n in sorted(doc["delivered_now"].items()):
        click.echo(f"delivered {n} clip(s) to {dest}")
    for dest, n in sorted(doc["already_there"].items()):
        click.echo(f"{n} clip(s) already in {dest}: recorded, not uploaded again")
    for j in doc["failed"] + doc["skipped"]:
        click.echo(f"  not delivered: {j['name']} ({j['key']}): {j['error']}")
    for j in doc.get("delivered_not_approved", []):
        click.echo(f"  kept in the store: {j['name']} ({j['key']}): {j['error']}")
    click.echo(f"the ledger: {doc['delivered']} clip(s) delivered, {doc['undelivered']} not yet")


def print_recover(doc: dict[str, Any], quiet: bool) -> None:
    sent = doc["sent_back"]
    if not (doc["refetch"] or doc["rerender"] or doc["in_store"]):
        if not quiet:
            echo_err("no lost clip: every done clip is on disk as downloaded (or delivered and pruned)")
        return
    if sent["refetch"]:
        click.echo(f"{sent['refetch']} clip(s) will be fetched again by the next `batchgen run` (free: URL still valid)")
    for j in doc["in_store"]:
        click.echo(f"  {j['name']} ({j['key']}): lost locally, delivered at {j['delivered_url']}")
    if doc["rerender"]:
        verb = "queued to render again by the next run (paid)" if sent["rerender"] else \
            "can only be rendered again (paid): `batchgen recover --rerender`"
        click.echo(f"{len(doc['rerender'])} clip(s) whose result URL expired {verb}, ≈ {doc['credits']:,.2f} credits")
        for j in doc["rerender"][:20]:
            click.echo(f"  {j['name']} ({j['key']}): {j['verify'] or 'missing'} — {j['output_path']}")
