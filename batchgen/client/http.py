"""``Client``: the foxapi ``Api`` over aiohttp — create, poll, upload, download. Knows nothing
of the ledger.

Two sessions: one with the key (``Authorization``) for the API, one without it for result
downloads (which go through ``PublicOnlyResolver``). Every failure leaves as an ``ApiError``
classified by ``classify`` or a ``DownloadError``; nothing of aiohttp crosses the ``Api`` seam.
Downloads are written atomically (``files.AtomicFile``), checked (size cap, MP4 signature) and
hashed as they stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from .. import crash
from ..errors import ApiError, DownloadError, ErrorClass
from ..files import AtomicFile, DirSyncer, in_thread, looks_like_mp4
from ..ratelearn import Quota, quota_of
from .classify import classify_exception, classify_status, describe_transport, parse_retry_after
from .secret import Secret
from .task import TaskInfo, parse_task
from .urls import PublicOnlyResolver, check_result_url, is_loopback_host

MAX_DOWNLOAD_BYTES = 2 * 1024**3
SPILL_BYTES = 4 * 1024 * 1024  # buffered in memory, then written by a worker thread
_VIDEO_TYPES = ("video/", "application/octet-stream", "binary/octet-stream")


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
        self.on_quota: Callable[[Quota], None] | None = None  # told what each answer says of the rate limit

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
                quota = quota_of(r.headers) if self.on_quota is not None else None
                if quota is not None and self.on_quota is not None:
                    self.on_quota(quota)
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
        origin_loopback = is_loopback_host(urlsplit(url).hostname or "")
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
