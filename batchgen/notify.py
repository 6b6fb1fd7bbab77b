"""``run --notify URL``: one message when a run ends, through apprise (Slack, e-mail, Teams,
ntfy, Matrix, plain JSON webhooks ``json://host/path`` … one URL syntax for all of them).

The message says how the run ended (exit code and its meaning), the jobs per state, credits
spent against ``--max-credits``, credits at risk in in-doubt jobs, results still waiting to be
downloaded (their URLs expire 24 h after completion), clips that are not what was asked, the
breakers, the deadline (``run --finish-by``: in time or not, the jobs left for the next night),
the delivery, the report, and the run id with the ledger (receivers drop duplicates by it).

A notification that cannot be sent is logged and never changes the run's outcome (``send``
never raises). Notification URLs carry their service's tokens: they are never printed, logged
or sent, only their redacted form (``redact.url``: the scheme and a host that names a machine).
``check`` lets a run refuse a URL apprise cannot parse before anything is paid for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from contextlib import contextmanager
from collections.abc import Iterator

from . import logs, redact
from .deadline import verdict
from .errors import EXIT_DELIVERY, EXIT_FAILED, EXIT_MEANINGS, EXIT_OK
from .jobs import plain


def shown(url: str) -> str:
    """A notification URL without its secrets (``redact.url``)."""
    return redact.url(url)


def compose(summary: dict[str, Any], *, ledger: str, report: str | None = None,
            max_credits: float | None = None) -> tuple[str, str, str]:
    """(title, body, level) of the message for a run summary (``RunResult.as_dict()``, or the
    ``error``/``exit_code`` pair of a run that could not start). level: success | warning | failure."""
    code = int(summary.get("exit_code", 1))
    meaning = EXIT_MEANINGS.get(code, "unknown exit code")
    if summary.get("started") is False:  # refused before its first create: nothing ran
        meaning = "the run could not start; nothing was submitted"
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
        cap = f" of --max-credits {plain(max_credits)}" if max_credits is not None else ""
        lines.append(f"credits: {plain(summary['credits_reserved'])} reserved by the API, "
                     f"{plain(summary.get('credits_estimated', 0))} estimated{cap}")
    in_doubt = summary.get("in_doubt") or []
    if in_doubt:
        lines.append(f"IN DOUBT: {len(in_doubt)} job(s), {plain(summary.get('credits_at_risk', 0))} credits at risk "
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
        permanent = [j for j in failed if j.get("fix")]
        for j in permanent[:5]:  # rendering them again unchanged only pays again: say what to change
            lines.append(f"  permanent: {j['name']} ({j['error']}) — {j['fix']}")
        if len(permanent) > 5:
            lines.append(f"  … {len(permanent) - 5} more permanent failures (batchgen export)")
    for model, why in (summary.get("breakers") or {}).items():
        lines.append(f"BREAKER OPEN for {model}: {why} — its new tasks stopped (one probe after each cool-off); "
                     "any job of it not rendered yet waits")
    if summary.get("deadline"):
        lines += verdict(summary["deadline"])
    d = summary.get("delivery") or {}
    if d:
        lines.append(f"delivered to {d['destination']}: {d['delivered']} clip(s), {d['undelivered']} not yet"
                     + (f" — {d['error']}" if d.get("error") else ""))
    if summary.get("awaiting_review"):
        led = f" --ledger {ledger}" if ledger else ""
        lines.append(f"awaiting review: {summary['awaiting_review']} clip(s) — open them with "
                     f"`batchgen review{led}" + (f" --run {run_id}`" if run_id is not None else "`")
                     + " (it prints the page's URL)")
    if summary.get("reason"):
        reason = str(summary["reason"])
        lines.append(reason if reason.startswith("stopped") else f"stopped: {reason}")
    if report:
        lines.append(f"report: {report}")
    return title, "\n".join(lines), level


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 — a badly formatted library record is not worth a failure
            self.messages.append(str(record.msg))


@contextmanager
def _apprise_lines() -> Iterator[_Collect]:
    """apprise's log lines quote the URLs they were given: collected here (and redacted by the
    caller) instead of reaching the run's log."""
    alog = logging.getLogger("apprise")
    propagate, alog.propagate = alog.propagate, False
    collect = _Collect()
    alog.addHandler(collect)
    try:
        yield collect
    finally:
        alog.removeHandler(collect)
        alog.propagate = propagate


def _why_not(url: str) -> str | None:
    """Why apprise cannot use ``url`` (redacted), or None when it parses."""
    if redact.url(url) == "…":
        return "not a URL (expected SERVICE://…, such as json://HOST/PATH or mailto://USER@DOMAIN)"
    import apprise

    with _apprise_lines():
        try:
            ok = bool(apprise.Apprise().add(url))
        except Exception:  # noqa: BLE001 — apprise raises for some malformed URLs instead of refusing them
            ok = False
    return None if ok else "not a notification URL apprise understands (https://github.com/caronc/apprise/wiki)"


def check(urls: Sequence[str]) -> list[str]:
    """For a preflight: one line per ``--notify`` URL apprise cannot use (redacted), empty when
    every one parses. Sends nothing."""
    problems = []
    for url in urls:
        why = _why_not(url)
        if why is not None:
            problems.append(f"--notify {redact.url(url)}: {why}")
    return problems


def send(urls: Sequence[str], title: str, body: str, level: str = "info") -> list[str]:
    """Send to every URL; returns what went wrong (already logged, redacted), empty when all
    were sent. Never raises: a notification cannot change how a run ended."""
    problems: list[str] = []
    for url in urls:
        try:
            why = _send_one(url, title, body, level)
        except Exception as e:  # noqa: BLE001 — a notification never fails the run
            why = f"{type(e).__name__}"
        if why is not None:
            problems.append(f"{redact.url(url)}: {redact.scrub(why, urls)}"[:300])
    for p in problems:
        logs.log.warning(f"notification failed: {p}")
    return problems


def run_ended(urls: Sequence[str], summary: dict[str, Any], *, ledger: str, report: str | None = None,
              max_credits: float | None = None) -> list[str]:
    """``compose`` and ``send`` the message for a run that ended (or could not start); never
    raises, whatever the summary or the URLs hold. Returns the problems, as ``send``."""
    if not urls:
        return []
    try:
        title, body, level = compose(summary, ledger=ledger, report=report, max_credits=max_credits)
    except Exception as e:  # noqa: BLE001 — a notification never fails the run
        logs.log.warning(f"notification not sent: the message could not be composed ({type(e).__name__})")
        return [f"compose: {type(e).__name__}"]
    return send(urls, title, body, level)


def _send_one(url: str, title: str, body: str, level: str) -> str | None:
    """Why the message did not reach ``url``, or None. Each URL gets its own collector, so one
    URL's complaint never shows up in another's failure line."""
    why = _why_not(url)
    if why is not None:
        return why
    import apprise

    with _apprise_lines() as collect:
        a = apprise.Apprise()
        if not a.add(url):
            return "not a notification URL apprise understands"
        kind = getattr(apprise.NotifyType, level.upper(), apprise.NotifyType.INFO)
        try:
            ok = bool(a.notify(body=body, title=title, notify_type=kind))
        except Exception as e:  # noqa: BLE001 — a notification never fails the run
            ok = False
            collect.messages.append(type(e).__name__)
        if ok:
            return None
        return "; ".join(collect.messages[-2:]) or "not delivered"


__all__ = ["check", "compose", "run_ended", "send", "shown"]
