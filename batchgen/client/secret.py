"""The API key: read from ``BATCHGEN_API_KEY`` here and nowhere else, and held in a ``Secret``
that never prints, formats, pickles or lands in a traceback (invariant 4)."""

from __future__ import annotations

import os
from typing import Any

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

