"""foxapi client: create, poll, download. Knows nothing of the ledger.

Every HTTP status and transport exception is classified in exactly one place (``classify_status``
and ``classify_exception``) into the classes of ``errors.ErrorClass``. The table (reference §6.2,
reliability notes):

================================================  ========  ======================================
outcome                                           create    poll
================================================  ========  ======================================
connect refused / DNS / TLS / connect timeout     SAFE      SAFE
invalid request URL (a bad --api-base)            CONFIG    CONFIG
429, 503, 422 service_unavailable_error           SAFE      SAFE
400, 403, 404, 422 (validation, unsupported…)     FATAL     FATAL (404: after a grace period)
401                                               FATAL_RUN FATAL_RUN
402                                               NO_FUNDS  SAFE (polling costs nothing)
500, 502, 504, other 5xx                          AMBIGUOUS SAFE
timeout / reset / disconnect after sending        AMBIGUOUS SAFE
2xx without a parseable task id                   AMBIGUOUS SAFE
================================================  ========  ======================================

The API key lives in a ``Secret`` that never prints; downloads use a second session that has no
Authorization header at all.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import socket
import time
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp
import aiohttp.abc
import yarl

from . import crash
from .errors import ApiError, DownloadError, ErrorClass
from .files import AtomicFile, DirSyncer, in_thread, looks_like_mp4

DEFAULT_API_BASE = "https://api.foxapi.cc"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
MAX_DOWNLOAD_BYTES = 2 * 1024**3
SPILL_BYTES = 4 * 1024 * 1024  # buffered in memory, then written by a worker thread
_VIDEO_TYPES = ("video/", "application/octet-stream", "binary/octet-stream")


API_KEY_ENV = "BATCHGEN_API_KEY"


class Secret:
    """An API key that does not leak through repr/str/format/tracebacks/pickling."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Secret cannot be pickled")


def api_key_from_env() -> Secret | None:
    """The API key, from the environment variable BATCHGEN_API_KEY: read here and nowhere else,
    and never from the command line (argv is visible to every user of the machine)."""
    value = os.environ.get(API_KEY_ENV, "").strip()
    return Secret(value) if value else None


@dataclass(slots=True)
class TaskInfo:
    """What a create or poll told us about a task, in every shape the reference lists."""

    task_id: str
    status: str
    progress: int = 0
    estimated_time: float | None = None
    urls: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    credits: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


# ------------------------------------------------------------------------ classification
def classify_status(op: str, status: int, err_type: str | None = None, err_code: str | None = None) -> ErrorClass:
    """The single table for non-2xx statuses. ``op`` is "create" or "poll"."""
    if status == 401:
        return ErrorClass.FATAL_RUN
    if status == 402:
        return ErrorClass.NO_FUNDS if op == "create" else ErrorClass.SAFE
    if status == 429 or status == 503:
        return ErrorClass.SAFE
    if status == 422 and (err_type == "service_unavailable_error" or err_code == "service_unavailable"):
        return ErrorClass.SAFE
    if 400 <= status < 500:
        return ErrorClass.FATAL
    if status >= 500:
        return ErrorClass.AMBIGUOUS if op == "create" else ErrorClass.SAFE
    return ErrorClass.AMBIGUOUS if op == "create" else ErrorClass.SAFE  # 1xx/3xx: unexpected


def classify_exception(op: str, exc: BaseException) -> ErrorClass:
    """Transport failures: did the request possibly reach the server?"""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return ErrorClass.SAFE  # never connected: nothing was sent
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, UnicodeError)):
        # The request URL is unusable: a configuration error (--api-base) that no job can get
        # past and no retry can fix. Nothing was sent, so it stops the run, never fails a job.
        return ErrorClass.CONFIG
    return ErrorClass.AMBIGUOUS if op == "create" else ErrorClass.SAFE


def describe_transport(exc: BaseException) -> str:
    """Why no HTTP answer came back, in the words an operator looks for first."""
    if isinstance(exc, UnicodeError):
        return f"invalid host name ({str(exc)[:120]})"
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return f"invalid API URL {str(exc)[:120]!r}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {exc.host}"
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError,
                        aiohttp.ClientSSLError)):
        return f"TLS handshake failed ({str(exc)[:120]})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno_ = getattr(exc.os_error, "errno", None)
        if errno_ == 111 or "refused" in str(exc).lower():
            return f"connection refused by {exc.host}:{exc.port}"
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, (aiohttp.ConnectionTimeoutError, aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return "timed out waiting for the API"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the API closed the connection without answering"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - (now if now is not None else time.time()))


def _object(v: Any) -> dict[str, Any]:
    """A JSON object of the response, or an empty one when it is absent or of another type."""
    return v if isinstance(v, dict) else {}


def parse_task(doc: Any) -> TaskInfo:
    """Accept the current (results[] of objects), old (output{url, urls[]}) and evolink (results
    of bare strings) task shapes. Raises ValueError when there is no usable id/status."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        raise ValueError("task document has no id")
    status = str(doc.get("status") or "").lower()
    if not status:
        raise ValueError("task document has no status")
    urls: list[str] = []
    results = doc.get("results")
    if isinstance(results, list):
        for r in results:
            if isinstance(r, str):
                urls.append(r)
            elif isinstance(r, dict) and isinstance(r.get("url"), str):
                urls.append(r["url"])
    output = doc.get("output")
    if not urls and isinstance(output, dict):
        if isinstance(output.get("urls"), list):
            urls.extend(u for u in output["urls"] if isinstance(u, str))
        elif isinstance(output.get("url"), str):
            urls.append(output["url"])
    err = _object(doc.get("error"))
    info = _object(doc.get("task_info"))
    usage = _object(doc.get("usage"))
    est = info.get("estimated_time")
    credits = usage.get("credits_reserved")
    progress = doc.get("progress")
    return TaskInfo(
        task_id=doc["id"], status=status,
        progress=int(progress) if isinstance(progress, (int, float)) else 0,
        estimated_time=float(est) if isinstance(est, (int, float)) and est >= 0 else None,
        urls=urls,
        error_code=str(err["code"]) if err.get("code") is not None else None,
        error_message=str(err["message"])[:500] if err.get("message") is not None else None,
        credits=float(credits) if isinstance(credits, (int, float)) else None,
    )


# ------------------------------------------------------------------------ URL policy
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


def _is_loopback_host(host: str) -> bool:
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
    loop = _is_loopback_host(host)
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


# ------------------------------------------------------------------------ client
class Api(Protocol):
    """What the scheduler needs from an API: the seam between the two. ``Client`` implements it
    over HTTP; tests implement it in memory (tests/test_lifecycle_stateful.py). Every method
    raises ``ApiError`` (classified, see ``classify_status``) or, for downloads,
    ``DownloadError``; nothing from the HTTP library crosses it."""

    async def create(self, request: dict[str, Any]) -> TaskInfo: ...

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo: ...

    async def upload(self, path: Path, file_name: str) -> str: ...

    async def download(self, url: str, final: Path) -> tuple[int, str]: ...


class Client:
    """The foxapi ``Api`` over aiohttp: one session with the key for the API, one without it for
    result downloads."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        download_timeout: float = 600.0,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
        limit: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._dl_timeout = aiohttp.ClientTimeout(total=download_timeout, sock_connect=connect_timeout, sock_read=read_timeout)
        self.max_download_bytes = max_download_bytes
        self._limit = limit
        self._api: aiohttp.ClientSession | None = None
        self._dl: aiohttp.ClientSession | None = None
        self._dirs = DirSyncer()
        # Finishing a file is mostly waiting for fsync. The loop's default pool (cpu+4 threads)
        # had every thread in fsync during a busy run; a pool sized to the connections lets the
        # fsyncs overlap (+5% jobs/s in the 2-core throughput benchmark).
        self._files = ThreadPoolExecutor(min(64, max(8, limit)), thread_name_prefix="files")

    async def __aenter__(self) -> Client:
        # The key is set on the API session only; the download session never sees it.
        self._api = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=15),
            timeout=self._timeout,
            headers={"Authorization": f"Bearer {self._key.reveal()}", "User-Agent": "batchgen"},
        )
        self._dl = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, resolver=PublicOnlyResolver()), timeout=self._dl_timeout,
            headers={"User-Agent": "batchgen"}, auto_decompress=False,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in (self._api, self._dl):
            if s is not None:
                await s.close()
        self._files.shutdown(wait=True)

    @property
    def api(self) -> aiohttp.ClientSession:
        assert self._api is not None, "use `async with Client(...)`"
        return self._api

    async def _call(self, op: str, method: str, path: str, body: bytes | None = None,
                    params: dict[str, str] | None = None) -> Any:
        url = self.base_url + path
        try:
            async with self.api.request(method, url, data=body, params=params,
                                        headers={"Content-Type": "application/json"} if body is not None else None) as r:
                raw = await r.read()
                if 200 <= r.status < 300:
                    try:
                        return json.loads(raw)
                    except ValueError:
                        raise ApiError(classify_status(op, 599) if op == "create" else ErrorClass.SAFE,
                                       f"unparseable {r.status} response ({len(raw)} bytes)", status=r.status,
                                       code="unparseable_response") from None
                err_type = err_code = None
                msg = raw[:300].decode("utf-8", "replace")
                try:
                    doc = json.loads(raw)
                    e = doc.get("error") if isinstance(doc, dict) else None
                    if isinstance(e, dict):
                        err_type = e.get("type") if isinstance(e.get("type"), str) else None
                        err_code = str(e["code"]) if e.get("code") is not None else None
                        msg = str(e.get("message") or msg)[:300]
                except ValueError:
                    pass
                raise ApiError(classify_status(op, r.status, err_type, err_code), f"HTTP {r.status}: {msg}",
                               status=r.status, code=err_code or err_type or f"http_{r.status}",
                               retry_after=parse_retry_after(r.headers.get("Retry-After")))
        except ApiError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, UnicodeError) as e:
            # UnicodeError: a host name the resolver cannot encode ("a..b"), before anything is sent
            cause = describe_transport(e)
            raise ApiError(classify_exception(op, e), cause[:300], code="transport_" + type(e).__name__,
                           unreachable=cause) from None

    async def create(self, request: dict[str, Any]) -> TaskInfo:
        body = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()
        crash.point("before_post")
        doc = await self._call("create", "POST", "/v1/videos/generations", body)
        crash.point("after_response_before_record")
        try:
            return parse_task(doc)
        except ValueError as e:
            raise ApiError(ErrorClass.AMBIGUOUS, f"2xx without a usable task: {e}", code="unparseable_response") from None

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo:
        doc = await self._call("poll", "GET", f"/v1/tasks/{task_id}",
                               params={"sync_upstream": "true"} if sync_upstream else None)
        try:
            info = parse_task(doc)
        except ValueError as e:
            raise ApiError(ErrorClass.SAFE, f"unusable task document: {e}", code="unparseable_response") from None
        if info.task_id != task_id:
            raise ApiError(ErrorClass.SAFE, f"asked for {task_id}, got {info.task_id}", code="wrong_task")
        return info

    async def upload(self, path: Path, file_name: str) -> str:
        """``POST /v1/files/upload/stream``; returns the file's public URL. An upload creates no
        billed task, so every failure but a refusal (4xx) is retryable."""
        data = await in_thread(path.read_bytes)
        form = aiohttp.FormData()
        form.add_field("file", data, filename=file_name, content_type="application/octet-stream")
        form.add_field("file_name", file_name)
        try:
            async with self.api.post(self.base_url + "/v1/files/upload/stream", data=form) as r:
                raw = await r.read()
                if r.status != 200:
                    klass = classify_status("upload", r.status)
                    raise ApiError(ErrorClass.SAFE if klass is ErrorClass.AMBIGUOUS else klass,
                                   f"upload HTTP {r.status}: {raw[:200].decode('utf-8', 'replace')}", status=r.status,
                                   code="file_too_large" if r.status == 413 else f"upload_http_{r.status}",
                                   retry_after=parse_retry_after(r.headers.get("Retry-After")))
                doc = json.loads(raw)
        except ApiError:
            raise
        except UnicodeError as e:  # (a ValueError too) a host name the resolver cannot encode
            raise ApiError(ErrorClass.CONFIG, describe_transport(e)[:300], code="transport_" + type(e).__name__,
                           unreachable=describe_transport(e)) from None
        except ValueError:
            raise ApiError(ErrorClass.SAFE, "unparseable upload response", code="unparseable_response") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            cause = describe_transport(e)
            klass = classify_exception("upload", e)
            raise ApiError(klass if klass is ErrorClass.CONFIG else ErrorClass.SAFE, cause[:300],
                           code="transport_" + type(e).__name__, unreachable=cause) from None
        url = doc.get("url") if isinstance(doc, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ApiError(ErrorClass.SAFE, "upload response without a URL", code="unparseable_response")
        return url

    async def download(self, url: str, final: Path) -> tuple[int, str]:
        """Fetch ``url`` into ``final`` atomically; return (bytes, sha256). Raises DownloadError."""
        assert self._dl is not None, "use `async with Client(...)`"
        origin_loopback = _is_loopback_host(urlsplit(url).hostname or "")
        for _hop in range(6):
            check_result_url(url, origin_loopback=origin_loopback)
            try:
                async with self._dl.get(url, allow_redirects=False) as r:
                    if r.status in (301, 302, 303, 307, 308) and "Location" in r.headers:
                        url = urljoin(url, r.headers["Location"])
                        continue
                    if r.status in (403, 404, 410):
                        raise DownloadError(f"HTTP {r.status} (expired or missing result)", permanent=True, code=f"download_http_{r.status}")
                    if r.status != 200:
                        raise DownloadError(f"HTTP {r.status} on download")
                    ctype = r.headers.get("Content-Type", "").lower()
                    if ctype and not ctype.startswith(_VIDEO_TYPES):
                        raise DownloadError(f"content type {ctype!r} is not a video", permanent=True, code="not_video")
                    length = r.headers.get("Content-Length")
                    expected = int(length) if length and length.isdigit() else None
                    if expected is not None and expected > self.max_download_bytes:
                        raise DownloadError(f"result is {expected} bytes, over the {self.max_download_bytes} cap", permanent=True, code="too_large")
                    with AtomicFile(final) as f:
                        buf = bytearray()
                        async for chunk in r.content.iter_chunked(1 << 16):
                            buf += chunk
                            if f.size + len(buf) > self.max_download_bytes:
                                raise DownloadError("result exceeds the size cap", permanent=True, code="too_large")
                            if len(buf) >= SPILL_BYTES:
                                await in_thread(f.write, bytes(buf), pool=self._files)
                                buf.clear()
                            crash.point("mid_download")
                        total = f.size + len(buf)
                        head = f.head if f.size else bytes(buf[:64])
                        if expected is not None and total != expected:
                            raise DownloadError(f"truncated: {total} of {expected} bytes")
                        if total == 0 or not looks_like_mp4(head):
                            raise DownloadError("file is not an MP4 (no ftyp box)", permanent=True, code="not_mp4")
                        await in_thread(f.finish, bytes(buf), self._dirs, pool=self._files)
                    return f.size, f.sha256.hexdigest()
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                raise DownloadError(f"{type(e).__name__}: {e}"[:300]) from None
            except UnicodeError as e:  # a result URL whose host name cannot be encoded
                raise DownloadError(f"result URL refused: {e}"[:300], permanent=True, code="url_refused") from None
            except ConnectionError as e:
                # A reset or broken connection that reached us unwrapped: the network's, retried
                # like any transport error. Never a disk error, which stops the whole run's
                # submissions (a busy CDN or machine is not a full disk).
                raise DownloadError(f"{type(e).__name__}: {e}"[:300]) from None
            except OSError as e:  # what is left: the temp file, its fsync, the rename
                raise DownloadError(f"cannot write {final.name}: {e.strerror}", code="disk_error") from None
        raise DownloadError("too many redirects", permanent=True, code="url_refused")
