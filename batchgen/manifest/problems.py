"""Where every room of the manifest reports: problems (each once, capped) and warnings (each
distinct text once, with the first row it concerns and how many more)."""

from __future__ import annotations

from typing import NoReturn

from ..errors import ManifestError, Problem
from .document import Row

MAX_PROBLEMS = 200


class Problems:
    """The problems and warnings of one manifest. ``file`` is the manifest's own path: the file a
    problem names unless it says another (a rows CSV, a models file)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.truncated = 0
        self._seen: set[str] = set()
        # warning text → (first row it applies to, how many rows); shown once each
        self._warned: dict[str, tuple[str | None, int]] = {}

    def add(self, where: str, fld: str | None, msg: str, file: str | None = None) -> None:
        problem = Problem(file or self.file, where, fld, msg)
        sig = str(problem)
        if sig in self._seen:  # the same row fails the same way for every matrix combination
            return
        self._seen.add(sig)
        if len(self.problems) >= MAX_PROBLEMS:
            self.truncated += 1
            return
        self.problems.append(problem)

    def warn(self, msg: str, row: Row | None = None) -> None:
        where = None if row is None else f"{row.file}: {row.where}"
        first, n = self._warned.get(msg, (where, 0))
        if n < 1_000_000:
            self._warned[msg] = (first, n + (row is not None or n == 0))

    @property
    def warnings(self) -> list[str]:
        """Each distinct warning once, naming the first row it concerns and how many more."""
        out = []
        for msg, (first, n) in self._warned.items():
            if first is None:
                out.append(msg)
            else:
                more = f" (and {n - 1} more row(s))" if n > 1 else ""
                out.append(f"{first}{more}: {msg}")
        return out

    def fail(self) -> NoReturn:
        """Stop now with every problem so far (the file cannot be read on)."""
        raise ManifestError(self.problems, truncated=self.truncated)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ManifestError(self.problems, truncated=self.truncated)
