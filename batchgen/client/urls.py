"""Which URLs batchgen talks to: ``check_api_base`` (a usable ``--api-base``, checked before
anything is recorded or sent), ``check_result_url`` (result downloads: https, or http to loopback
for the simulator; never a private address) and ``PublicOnlyResolver`` (the same rule for the
names the download session resolves). Decides only; sends nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import yarl

from ..errors import DownloadError


def check_api_base(url: str) -> str | None:
    """What is wrong with ``url`` as the API base (``--api-base``), or None: an http(s) URL with
    a host and a valid port, nothing after the path. Pure: run before anything is recorded or
    sent, so a typo is a usage error (exit 2) instead of a failure of every job."""
    text = url.strip()
    shown = repr(url)
    try:
        if urlsplit(text).password is not None or "@" in urlsplit(text).netloc:
            # The key goes in a Bearer header from BATCHGEN_API_KEY; a user:password here would
            # be printed, recorded, and fight that header on every request.
            return ("--api-base must not carry credentials (user:password@): the API key comes from "
                    "BATCHGEN_API_KEY only")
    except ValueError:
        pass
    if not text:
        return "--api-base is empty; give an http(s) URL such as https://api.foxapi.cc"
    if any(c.isspace() for c in text):
        return f"--api-base {shown} contains white space"
    try:
        parts = urlsplit(text)
    except ValueError as e:  # e.g. an unclosed [IPv6 bracket
        return f"--api-base {shown} is not a valid URL ({e})"
    if parts.scheme.lower() not in ("http", "https"):
        hint = f" (did you mean http://{text} ?)" if "://" not in text else ""
        return f"--api-base {shown} is not an http(s) URL{hint}"
    if not parts.hostname:
        return f"--api-base {shown} has no host"
    try:
        parts.port
        parts.hostname.encode("idna")  # what the resolver will be given ("a..b" cannot be)
        yarl.URL(text).host  # what aiohttp will parse ("xn--" cannot be)
    except ValueError:  # UnicodeError included
        return f"--api-base {shown} has an invalid host or port"
    if parts.query or parts.fragment:
        return f"--api-base {shown} must not have a query or fragment (the request paths are appended to it)"
    return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified)


def check_result_url(url: str, *, origin_loopback: bool) -> None:
    """https only; http only to loopback (the simulator). Literal private, link-local, reserved
    addresses are refused, and loopback only when the chain started on loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise DownloadError(f"result URL scheme {parts.scheme!r} refused", permanent=True, code="url_refused")
    loop = is_loopback_host(host)
    if parts.scheme == "http" and not loop:
        raise DownloadError("plain-http result URL refused (https only)", permanent=True, code="url_refused")
    if loop and not origin_loopback:
        raise DownloadError("redirect to a loopback address refused", permanent=True, code="url_refused")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not ip.is_loopback and not _public(str(ip)):
        raise DownloadError(f"result URL points at a non-public address {ip}", permanent=True, code="url_refused")


class PublicOnlyResolver(aiohttp.abc.AbstractResolver):
    """DNS for the download session: a result host whose name resolves to a private, loopback or
    link-local address is refused (DNS rebinding, or an internal host behind a public-looking
    name). Literal IPs never reach a resolver; ``check_result_url`` handles those, and the
    simulator's loopback URLs. ``localhost`` by name is allowed, for local test servers."""

    def __init__(self, inner: aiohttp.abc.AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        infos = await self._inner.resolve(host, port, family)
        ok = [i for i in infos if host == "localhost" or _public(i["host"])]
        if not ok:
            raise OSError(f"{host} resolves only to non-public addresses; refused")
        return ok

    async def close(self) -> None:
        await self._inner.close()

