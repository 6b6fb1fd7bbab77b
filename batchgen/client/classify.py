"""The single classification of every HTTP status and transport exception into the classes of
``errors.ErrorClass`` (reference §6.2, reliability notes): what a failed request means for the
money, and so whether it may be retried. The table:

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

``describe_transport`` words a transport failure for an operator; ``parse_retry_after`` reads the
header a 429/503 carries. Pure: no I/O, no session, no job.
"""

from __future__ import annotations

import asyncio
import email.utils
import time

import aiohttp

from ..errors import ErrorClass


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
