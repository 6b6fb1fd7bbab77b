"""foxapi client: create, poll, upload, download. Knows nothing of the ledger.

One module per concern: ``classify`` (the single table of HTTP statuses and transport errors →
``errors.ErrorClass``), ``task`` (the ``Api`` protocol, the seam the scheduler talks to, and
``TaskInfo``/``parse_task``), ``secret`` (the key: ``Secret``, ``api_key_from_env``), ``urls``
(which URLs may be called: ``check_api_base``, ``check_result_url``, ``PublicOnlyResolver``) and
``http`` (``Client``: the ``Api`` over aiohttp, with a download session that has no
Authorization header at all). This module only re-exports what callers import.
"""

from __future__ import annotations

from .classify import classify_exception, classify_status, describe_transport, parse_retry_after
from .http import MAX_DOWNLOAD_BYTES, Client
from .secret import API_KEY_ENV, Secret, api_key_from_env
from .task import TERMINAL, Api, TaskInfo, parse_task
from .urls import PublicOnlyResolver, check_api_base, check_result_url

DEFAULT_API_BASE = "https://api.foxapi.cc"

__all__ = ["API_KEY_ENV", "DEFAULT_API_BASE", "MAX_DOWNLOAD_BYTES", "TERMINAL", "Api", "Client", "PublicOnlyResolver",
           "Secret", "TaskInfo", "api_key_from_env", "check_api_base", "check_result_url", "classify_exception",
           "classify_status", "describe_transport", "parse_retry_after", "parse_task"]
