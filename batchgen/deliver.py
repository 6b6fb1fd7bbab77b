"""Delivery of finished clips to object storage (``run --deliver s3://bucket/prefix/``).

A clip is delivered after it is ``done`` (and verified, when verification is on): the video
goes to ``<prefix><output>``, its poster and contact sheet to ``<prefix>.batchgen/<output>…``.
Each PUT carries the file's SHA-256 as the store's checksum (``x-amz-checksum-sha256``: S3 and
most S3-compatible stores verify it and refuse a corrupted body) and as object metadata, and
its MD5 as ``Content-MD5`` (verified by every S3 dialect). An S3 PUT is atomic: a process
killed mid-upload leaves no object, never half of one, and the ledger records a clip as
delivered only after the store acknowledged it. On resume, an object already there with the
same SHA-256 and size is recorded without uploading it again.

boto3 is synchronous: uploads run in a small thread pool (``Delivery``), off the event loop.
Credentials, region and endpoint come the standard AWS way (environment variables, shared
config/profile, instance role); ``--deliver-endpoint`` names an S3-compatible service. Neither
credentials nor signed URLs are ever logged or recorded: messages name the bucket, the key and
the store's error code only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from . import crash, media, redact
from .errors import DeliveryError, UsageError

CHUNK = 1024 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules
# Store answers that no retry fixes: nothing more can be delivered with this configuration.
_FATAL_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "ExpiredToken",
    "InvalidToken", "AllAccessDisabled", "AccountProblem", "InvalidBucketName", "PermanentRedirect",
    "AuthorizationHeaderMalformed", "403", "404", "301",
})


@dataclass(frozen=True)
class Destination:
    """``s3://bucket/prefix/`` parsed; the prefix always ends with "/" (or is empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str, *, what: str = "--deliver") -> Destination:
        """The one parser of a destination (``run``, ``plan`` and the manifest's ``deliver:``
        all use it, so ``plan`` refuses what ``run`` would). Messages show the URL redacted."""
        shown = redact.url(url) if isinstance(url, str) else repr(url)
        label = f"{what} {shown}".strip()
        if not isinstance(url, str):
            raise UsageError(f"{label}: expected s3://BUCKET/PREFIX/ (an S3 or S3-compatible store)")
        if any(ord(c) < 32 or c in "\\\x7f" for c in url.strip()):  # urlsplit would drop tabs and newlines
            raise UsageError(f"{label}: control characters and '\\' are not allowed in a destination")
        try:
            u = urlsplit(url.strip())
        except ValueError:
            raise UsageError(f"{label}: not a URL; expected s3://BUCKET/PREFIX/") from None
        if u.scheme != "s3" or not u.netloc:
            raise UsageError(f"{label}: expected s3://BUCKET/PREFIX/ (an S3 or S3-compatible store)")
        if "@" in u.netloc:
            raise UsageError(f"{label}: credentials do not belong in the URL (it is printed and recorded); "
                             "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment (or AWS_PROFILE)")
        if u.query or u.fragment:
            raise UsageError(f"{label}: no ?query or #fragment in a destination")
        if not _BUCKET.fullmatch(u.netloc) or ".." in u.netloc:
            raise UsageError(f"{label}: {u.netloc!r} is not a valid bucket name (3-63 characters: "
                             "lower-case letters, digits, '.' and '-')")
        prefix = u.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        # Split by hand: PurePosixPath would fold "a/./b" into "a/b" and hide the "." it had.
        segments = prefix[:-1].split("/") if prefix else []
        if any(seg in ("", ".", "..") for seg in segments):
            raise UsageError(f"{label}: the prefix may not contain '.', '..' or empty segments")
        return cls(u.netloc, prefix)

    def key(self, relative: str) -> str:
        return self.prefix + relative.lstrip("/")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Stored:
    """An object the store holds with the file's content."""

    url: str
    etag: str
    size: int
    uploaded: bool  # False: it was already there with the same checksum


class Store(Protocol):
    """The seam between the scheduler and an object store (tests may fake it)."""

    destination: Destination

    def check(self) -> None:
        """Raise DeliveryError(fatal=True) when nothing can be delivered (bucket, credentials)."""

    def put(self, path: Path, relative: str, sha256: str | None, content_type: str) -> Stored:
        """Make ``<prefix><relative>`` hold ``path`` (whose content must still have ``sha256``, the
        one recorded when it was downloaded; None: no record to hold it to)."""


def file_digests(path: Path) -> tuple[int, str, bytes]:
    """Size, sha256 (hex) and md5 (raw) of a file, read once."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), md5.digest()


class _CrashingReader:
    """The file handed to the PUT; a test crash point fires once half of it was sent (the
    store then holds no object: an S3 PUT is all or nothing)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._half, self._sent = f, size // 2, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        before, self._sent = self._sent, self._sent + len(data)
        if before < self._half <= self._sent:
            crash.point("mid_upload")
        return data

    def __getattr__(self, name: str) -> Any:  # seek/tell for botocore's retries and checksums
        return getattr(self._f, name)


class S3Store:
    """An S3 or S3-compatible bucket through boto3 (one client, shared by the upload threads:
    boto3 clients are thread-safe, sessions are not)."""

    def __init__(self, destination: Destination, *, endpoint_url: str | None = None,
                 region: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.destination = destination
        self.endpoint = endpoint_url
        session = boto3.session.Session()
        # SigV4 everywhere, presigned URLs included (botocore presigns with SigV2 otherwise,
        # which newer regions and many compatible stores refuse).
        cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                     signature_version="s3v4",
                     # Send a checksum only where we ask for one (SHA-256 below): some
                     # S3-compatible stores refuse the CRC32 trailer newer botocore adds.
                     request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self._s3 = session.client("s3", endpoint_url=endpoint_url,
                                  region_name=region or session.region_name or "us-east-1", config=cfg)

    # -- errors: translated at this one boundary ------------------------------------------
    def _where(self) -> str:
        return f"{self.destination}" + (f" at {redact.url(self.endpoint)}" if self.endpoint else "")

    def _error(self, e: Exception, doing: str) -> DeliveryError:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if isinstance(e, NoCredentialsError):
            return DeliveryError(f"delivery to {self._where()}: no AWS credentials found (set AWS_ACCESS_KEY_ID/"
                                 "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)", fatal=True)
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            hint = {
                "InvalidAccessKeyId": "the access key is not known to the store",
                "SignatureDoesNotMatch": "the secret key is wrong",
                "AccessDenied": "the credentials may not write there",
                "403": "access denied: check the credentials and the bucket policy",
                "NoSuchBucket": "the bucket does not exist",
                "404": "the bucket does not exist",
            }.get(code, str(err.get("Message") or "")[:200])
            return DeliveryError(f"delivery to {self._where()}: {doing} refused ({code or status}): {hint}",
                                 fatal=code in _FATAL_CODES)
        if isinstance(e, BotoCoreError | OSError):
            # One line; botocore quotes the endpoint URL it was given.
            why = redact.scrub(" ".join(str(e).split()), [self.endpoint or ""])
            return DeliveryError(f"delivery to {self._where()}: {doing} failed: {type(e).__name__}: {why}"[:400])
        raise e

    # -- operations -------------------------------------------------------------------------
    def check(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.destination.bucket)
        except Exception as e:  # noqa: BLE001 — translated (or re-raised) by _error
            err = self._error(e, "checking the bucket")
            err.fatal = True  # before the first create: unreachable counts too
            raise err from None

    def _existing(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self._s3.head_object(Bucket=self.destination.bucket, Key=key, ChecksumMode="ENABLED"))
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def put(self, path: Path, relative: str, sha256: str | None, content_type: str) -> Stored:
        key = self.destination.key(relative)
        url = self.destination.url(key)
        size, sha_hex, md5 = file_digests(path)
        if sha256 is None:
            sha256 = sha_hex
        elif sha_hex != sha256:
            raise DeliveryError(f"{path} changed since it was downloaded (sha256 {sha_hex[:12]}…, recorded "
                                f"{sha256[:12]}…): not delivered; `batchgen verify` tells more")
        sha_b64 = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            head = self._existing(key)
            if head is not None and head.get("ContentLength") == size and (
                    head.get("ChecksumSHA256") == sha_b64 or head.get("Metadata", {}).get("sha256") == sha256):
                return Stored(url, str(head.get("ETag", "")).strip('"'), size, uploaded=False)
            with open(path, "rb") as f:
                r = self._s3.put_object(
                    Bucket=self.destination.bucket, Key=key, Body=_CrashingReader(f, size), ContentLength=size,
                    ContentType=content_type, ContentMD5=base64.b64encode(md5).decode(),
                    ChecksumSHA256=sha_b64, Metadata={"sha256": sha256})
        except DeliveryError:
            raise
        except Exception as e:  # noqa: BLE001 — translated (or re-raised) by _error
            raise self._error(e, f"uploading {key}") from None
        etag = str(r.get("ETag", "")).strip('"')
        # A single-part PUT's ETag is the body's MD5 on S3 and its compatibles (not under SSE-KMS,
        # where it is opaque): one more end-to-end check where it applies.
        if len(etag) == 32 and "-" not in etag and etag != md5.hex() and not r.get("SSEKMSKeyId"):
            raise DeliveryError(f"delivery to {self._where()}: the store's ETag for {key} does not match the file")
        return Stored(url, etag, size, uploaded=True)

    def presign(self, url: str, expires_s: int = 300) -> str:
        """A short-lived GET URL for an object this store holds (``s3://bucket/key``, as
        recorded in ``delivered_url``): a reviewer plays a clip that is not on this machine
        without holding the store's credentials. Signed locally: no request is made."""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        try:
            return str(self._s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                       ExpiresIn=expires_s))
        except Exception as e:  # noqa: BLE001 — translated (or re-raised) by _error
            raise self._error(e, f"signing {key}") from None


def open_store(url: str, *, endpoint_url: str | None = None) -> Store:
    """The store for ``--deliver URL`` (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` apply when no
    endpoint is given, as in every AWS SDK)."""
    dest = Destination.parse(url)
    endpoint = check_endpoint(endpoint_url)
    try:
        return S3Store(dest, endpoint_url=endpoint)
    except ImportError as e:  # pragma: no cover — boto3 is a dependency
        raise UsageError(f"--deliver needs boto3: {e}") from None
    except ValueError as e:  # botocore's own checks (a malformed endpoint URL)
        raise UsageError(f"--deliver-endpoint {redact.url(endpoint or '')}: "
                         f"{redact.scrub(str(e), [endpoint or ''])}") from None


def check_endpoint(endpoint_url: str | None) -> str | None:
    """The S3 endpoint to use (``--deliver-endpoint``, else ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL`` as in every AWS SDK), refused (UsageError) unless it is an http(s) URL
    with a host and without credentials: those come from the AWS environment, never a URL."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return None
    what = "--deliver-endpoint" if endpoint_url else "AWS_ENDPOINT_URL"
    try:
        u = urlsplit(endpoint.strip())
        host = u.hostname
        u.port  # noqa: B018 — raises ValueError for a port that is not a number
    except ValueError:
        raise UsageError(f"{what} {redact.url(endpoint)}: not a URL (expected http(s)://HOST[:PORT])") from None
    if u.scheme not in ("http", "https") or not host:
        raise UsageError(f"{what} {redact.url(endpoint)}: expected http(s)://HOST[:PORT]")
    if "@" in u.netloc:
        raise UsageError(f"{what} {redact.url(endpoint)}: credentials do not belong in the URL (it is printed "
                         "and recorded); use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment")
    return endpoint.strip()


def check(url: str | None, endpoint_url: str | None = None) -> list[str]:
    """For a preflight (``plan`` and ``run``): what is wrong with a destination and its endpoint,
    without contacting the store. Empty when both parse."""
    problems = []
    if url is not None:
        try:
            Destination.parse(url)
        except UsageError as e:
            problems.append(str(e))
    try:
        check_endpoint(endpoint_url)
    except UsageError as e:
        problems.append(str(e))
    return problems


def deliver_clip(store: Store, output: str, path: Path, sha256: str, pictures: tuple[str | None, str | None],
                 on_picture_error: Callable[[str], None] | None = None) -> Stored:
    """The clip, then its pictures (a picture that cannot be read is skipped: the clip is what
    was paid for). Runs in a worker thread."""
    stored = store.put(path, output, sha256, "video/mp4")
    for pic, name in zip(pictures, media.picture_names(output), strict=True):
        if not pic:
            continue
        try:
            store.put(Path(pic), name, None, "image/jpeg")
        except OSError as e:  # reading the picture (the store's own errors are DeliveryErrors)
            if on_picture_error is not None:
                on_picture_error(f"{pic}: {e}")
    return stored


def recorded(stored: Stored) -> dict[str, Any]:
    """The ledger columns of a delivery the store acknowledged (the run and `batchgen deliver`)."""
    return {"delivered_url": stored.url, "delivered_etag": stored.etag, "delivered_at": time.time(),
            "delivery_error": None}


def recorded_detail(stored: Stored) -> str:
    return f"delivered {stored.url}" + ("" if stored.uploaded else " (already there)")


def prune_local(*paths: Path | str | None) -> None:
    """Remove the local copies of a delivered clip (``--prune-local``); already gone is fine."""
    for p in paths:
        if p:
            Path(p).unlink(missing_ok=True)


__all__ = ["Destination", "S3Store", "Store", "Stored", "check", "check_endpoint", "deliver_clip", "file_digests",
           "open_store", "prune_local", "recorded", "recorded_detail"]
