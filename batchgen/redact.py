"""One redaction for every URL batchgen prints, logs, stores or sends: notification URLs
(``--notify``), the delivery destination and endpoint (``--deliver``, ``--deliver-endpoint``).

A URL may carry a secret in any slot: a password (``http://user:PASS@host``), a user name that
is an API key (``pover://USERKEY@TOKEN``), a host that is a token (``prowl://APIKEY``,
``slack://TokenA/TokenB/TokenC``), a path (``json://host/secret-token``) or a query
(``?token=…``, apprise's ``+Header=value``). What is shown is only what says *where* a URL
points and can never be a secret: the scheme, a host that is a dotted DNS name, ``localhost``
or an IP address (with its port), and for ``s3://`` the bucket and prefix (credentials are
refused there, see ``deliver.Destination``). Anything else becomes ``…``; credentials become
``***@``. Imports nothing (the CLI and the library call it before anything heavy is loaded).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_DNS_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}\.?")
_KEEP_PATH = frozenset({"s3"})  # a bucket's prefix is where clips go, never a secret


def _a_place(host: str) -> bool:
    """A host that names a machine (not a token standing in the host slot)."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_DNS_NAME.fullmatch(host))


def url(text: str) -> str:
    """``text`` (a URL, or what was meant to be one) as it may be printed, logged, stored or sent."""
    m = _SCHEME.match(text)
    if m is None:
        return "…"  # not a URL at all: it may be a bare token
    scheme = m[1].lower()
    try:
        u = urlsplit(text.strip())
        host, port = u.hostname or "", u.port
    except ValueError:  # "[::1/hook", a port that is not a number ("123:TOKEN")
        return f"{scheme}://…"
    creds = "***@" if "@" in u.netloc else ""
    if scheme in _KEEP_PATH:
        shown_host = host
    else:
        shown_host = host if host and _a_place(host) else "…"
    where = shown_host + (f":{port}" if port is not None and shown_host != "…" else "")
    if scheme in _KEEP_PATH:
        path = u.path
    else:
        path = "/…" if u.path.strip("/") and where != "…" else ""
    rest = "?…" if (u.query or u.fragment) and where != "…" else ""
    return printable(f"{scheme}://{creds}{where}{path}{rest}")


def printable(s: str) -> str:
    """Control characters (a newline, a terminal escape sequence) shown as escapes: a message
    stays one line and cannot drive the terminal it is printed on."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in s)


def scrub(message: str, urls: Iterable[str]) -> str:
    """``message`` with every one of ``urls`` — and every secret-looking part of them (password,
    user, host, path and query pieces) — replaced by its redacted form. For messages written by
    libraries that quote the URL they were given (apprise, botocore)."""
    for raw in sorted({u for u in urls if u}, key=len, reverse=True):
        message = message.replace(raw, url(raw))
        for piece in _pieces(raw):
            message = message.replace(piece, "…")
    return message


def _pieces(raw: str) -> list[str]:
    """The parts of a URL that could be secrets, longest first (only ones long enough that
    replacing them cannot garble ordinary words)."""
    m = _SCHEME.match(raw)
    body = raw[m.end():] if m else raw
    parts = set(re.split(r"[/@:?&=#+,;]", body))
    try:
        host = urlsplit(raw.strip()).hostname or ""
    except ValueError:
        host = ""
    keep = {host} if host and _a_place(host) else set()
    return sorted((p for p in parts if len(p) >= 6 and p not in keep), key=len, reverse=True)


__all__ = ["printable", "scrub", "url"]
