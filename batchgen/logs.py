"""Logging: operator messages to stderr, per-job events (every state change) to ``--log-file``,
as text or one JSON object per line (``--log-format json``). A filter masks the API key in
every record, as a second line of defence behind ``client.Secret``."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("batchgen")
events = logging.getLogger("batchgen.events")  # one record per job state change


class Redact(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def _clean(self, v: Any) -> Any:
        if isinstance(v, str):
            for s in self.secrets:
                v = v.replace(s, "***")
        return v

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._clean(record.getMessage())
        record.args = None
        ev = getattr(record, "event", None)
        if isinstance(ev, dict):
            record.event = {k: self._clean(v) for k, v in ev.items()}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        ev = getattr(record, "event", None)
        if isinstance(ev, dict):
            doc.update(ev)
        return json.dumps(doc, ensure_ascii=False, default=str)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a record arrives: while rich's live
    table runs it redirects stderr, so log lines print above the table instead of tearing it
    (and leaving stale copies of it on the terminal)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


FORMAT = "text"  # the format of the last setup(): the CLI writes its own errors and summary in it
VERBOSE = False  # batchgen -v: debug level and the per-job events on stderr too (kept across setup() calls)


def json_line(level: str, msg: str, **fields: Any) -> str:
    """One JSON log line, as JsonFormatter writes them (for output outside a logger)."""
    return json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level,
                       "logger": "batchgen", "msg": msg, **fields}, ensure_ascii=False, default=str)


class _NotEvents(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("batchgen.events")


def setup(*, fmt: str = "text", file: Path | None = None, quiet: bool = False, secrets: list[str] | None = None) -> None:
    """(Re)configure batchgen's loggers; safe to call more than once (tests)."""
    global FORMAT
    FORMAT = fmt
    redact = Redact(secrets or [])
    log.handlers.clear()
    level = logging.DEBUG if VERBOSE else logging.INFO
    log.setLevel(level)
    log.propagate = False
    # Per-job events only go to a log file (or stderr with -v); otherwise skip building them on the hot path.
    events.setLevel(level if file is not None or VERBOSE else logging.WARNING)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter("batchgen: %(message)s")
    err = _Stderr()
    err.setLevel(level if VERBOSE else logging.WARNING if quiet else logging.INFO)
    if not VERBOSE:
        err.addFilter(_NotEvents())
    err.addFilter(redact)
    err.setFormatter(formatter)
    log.addHandler(err)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(file, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.addFilter(redact)
        fh.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(fh)
