"""``run --notify URL``: one message when a run ends, through apprise (Slack, e-mail, Teams,
ntfy, Matrix, plain JSON webhooks ``json://host/path`` … one URL syntax for all of them).

The message says how the run ended (exit code and its meaning), the jobs per state, credits
spent against ``--max-credits``, credits at risk in in-doubt jobs, results still waiting to be
downloaded (their URLs expire 24 h after completion), clips that are not what was asked, the
delivery, the report, and the run id with the ledger (receivers drop duplicates by it).

A notification that cannot be sent is logged and never changes the run's outcome. Notification
URLs carry their service's tokens: they are never logged, only their scheme and host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from . import logs
from .errors import EXIT_DELIVERY, EXIT_FAILED, EXIT_MEANINGS, EXIT_OK


def shown(url: str) -> str:
    """A notification URL without its secrets: scheme and host only."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname or '…'}"


def compose(summary: dict[str, Any], *, ledger: str, report: str | None = None,
            max_credits: float | None = None) -> tuple[str, str, str]:
    """(title, body, level) of the message for a run summary (``RunResult.as_dict()``, or the
    ``error``/``exit_code`` pair of a run that could not start). level: success | warning | failure."""
    code = int(summary.get("exit_code", 1))
    meaning = EXIT_MEANINGS.get(code, "unknown exit code")
    run_id = summary.get("run_id")
    manifest = summary.get("manifest") or "?"
    level = "success" if code == EXIT_OK else "warning" if code in (EXIT_FAILED, EXIT_DELIVERY) else "failure"
    title = f"batchgen {'run ' + str(run_id) if run_id is not None else 'run'}: exit {code} — {meaning}"
    lines = [f"manifest: {manifest}", f"ledger: {ledger}" + (f" (run id {run_id})" if run_id is not None else "")]
    if summary.get("error"):
        lines.append(f"error: {summary['error']}")
    counts = summary.get("counts") or {}
    if counts:
        lines.append("jobs: " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if "credits_reserved" in summary:
        cap = f" of --max-credits {max_credits:g}" if max_credits is not None else ""
        lines.append(f"credits: {summary['credits_reserved']:g} reserved by the API, "
                     f"{summary.get('credits_estimated', 0):g} estimated{cap}")
    in_doubt = summary.get("in_doubt") or []
    if in_doubt:
        lines.append(f"IN DOUBT: {len(in_doubt)} job(s), {summary.get('credits_at_risk', 0):g} credits at risk "
                     "— batchgen resolve")
    if summary.get("expiring"):
        lines.append(f"results not downloaded yet: {summary['expiring']} (their URLs expire 24 h after "
                     "completion — re-run now)")
    wrong = summary.get("not_as_asked") or []
    if wrong:
        lines.append(f"not as asked: {len(wrong)} clip(s) — " + ", ".join(f"{j['name']} ({j['verify']})"
                                                                          for j in wrong[:5]))
    failed = summary.get("failed") or []
    if failed:
        lines.append(f"failed: {len(failed)} job(s) — " + ", ".join(f"{j['name']} ({j['error']})" for j in failed[:5]))
    d = summary.get("delivery") or {}
    if d:
        lines.append(f"delivered to {d['destination']}: {d['delivered']} clip(s), {d['undelivered']} not yet"
                     + (f" — {d['error']}" if d.get("error") else ""))
    if summary.get("reason"):
        lines.append(f"stopped: {summary['reason']}")
    if report:
        lines.append(f"report: {report}")
    return title, "\n".join(lines), level


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def send(urls: Sequence[str], title: str, body: str, level: str = "info") -> list[str]:
    """Send to every URL; returns what went wrong (already logged), empty when all were sent."""
    import apprise

    problems: list[str] = []
    alog = logging.getLogger("apprise")
    alog.propagate = False  # its lines could name a URL: collected and redacted below instead
    collect = _Collect()
    alog.addHandler(collect)
    try:
        for url in urls:
            a = apprise.Apprise()
            if not a.add(url):
                problems.append(f"{shown(url)}: not a notification URL apprise understands")
                continue
            try:
                ok = bool(a.notify(body=body, title=title, notify_type=getattr(apprise.NotifyType, level.upper(),
                                                                                apprise.NotifyType.INFO)))
            except Exception as e:  # noqa: BLE001 — a notification never fails the run
                ok, collect.messages = False, [*collect.messages, f"{type(e).__name__}"]
            if not ok:
                why = "; ".join(_redact(m, urls) for m in collect.messages[-2:]) or "not delivered"
                problems.append(f"{shown(url)}: {why}"[:300])
            collect.messages.clear()
    finally:
        alog.removeHandler(collect)
    for p in problems:
        logs.log.warning(f"notification failed: {p}")
    return problems


def _redact(message: str, urls: Sequence[str]) -> str:
    for u in urls:
        message = message.replace(u, shown(u))
    return message


__all__ = ["compose", "send", "shown"]
