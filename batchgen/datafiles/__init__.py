"""The data files batchgen reads besides manifests, through one door: model catalogs (the
shipped ``models.yaml``, ``--models FILE``, a manifest's ``models:`` file or inline mapping) and
price tables (the shipped ``prices.yaml``, ``--prices FILE``).

* Only a regular file is read: a FIFO, a device (``/dev/zero``), a directory or a symlink loop is
  refused before a byte is read, and at most ``MAX_BYTES`` (128 KiB) of it (a catalog is a few
  KB; an 11 MB one is a mistake or an attack, and took a minute and a GB to parse).
* It is parsed with the manifests' YAML 1.2 loader (``yamlsafe``): ``16:9`` stays text, ``no`` is
  not false, a date stays text; aliases (which let a few lines expand into gigabytes), tags and
  ``.nan``/``.inf`` are refused.
* Every entry is checked against the shape documented in models.yaml's header and EVERY problem
  is reported at once, each with its file, line and column (``DataFileError``, exit 2), as the
  manifest loader does. A file that loads means what it says: no key twice, no ``min`` above
  ``max``, no default outside its own choices or range, no rule naming a field the model does not
  have, ``required`` only ``true``/``false``, names without control characters (they are printed),
  and prices, output lengths and durations finite and ≥ 0 (``--max-credits`` adds them up).

One module per concern: this one reads (regular file, size cap, UTF-8, ``yamlsafe``) and is the
door callers use; ``models`` checks a models document (``RULE_KINDS``: the cross-field rule
shapes), ``prices`` a price table, ``checker`` holds what both share. Values are built from
``modelspec``; nothing here imports ``specs`` (which imports this package, lazily).

The shipped files are parsed with libyaml's safe loader (every command reads them: ~4× faster
than the pure-Python loader) and checked by the same code; a test checks that they read
identically under yamlsafe (tests/test_datafiles.py).
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .. import yamlsafe
from ..errors import DataFileError, Problem
from ..modelspec import ModelSpec
from .models import (COUNT, ENTRY_KEYS, FIELD, FIELD_CHOICES, FIELD_COUNTS, FIELD_VALUES, FIELDS, KINDS, RULE_KINDS,
                     RULE_OPTIONS, check_models, refused_names)
from .prices import PRICE_KEYS, PriceDoc, check_prices

# The shipped catalog of every model is ~15 KB. The YAML 1.2 loader is pure Python (~25 µs a
# token): 128 KiB of the densest YAML still parses in about a second, where the 11 MB file of
# issue 19 took a minute and a GB.
MAX_BYTES = 128 * 1024
# libyaml's safe loader where PyYAML has it (see the module docstring): shipped files only.
FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

T = TypeVar("T")


# --------------------------------------------------------------------------- reading a file
def read_text(path: str | os.PathLike[str], subject: str) -> str:
    """The text of ``path``, a regular UTF-8 file of at most ``MAX_BYTES``; anything else is a
    ``DataFileError`` saying why (``subject``: "the models file", "the price table")."""
    name = os.fspath(path)

    def refuse(where: str, msg: str) -> DataFileError:
        return DataFileError([Problem(name, where, None, msg)], subject=subject)

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise refuse("file", f"cannot read it: {e.strerror or e}") from None
    except ValueError as e:  # a NUL byte in the path
        raise refuse("file", f"cannot read it: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise refuse("file", f"is {kind}; give a YAML file")
        if st.st_size > MAX_BYTES:
            raise refuse("file", f"is {st.st_size} bytes; {subject}s are limited to {MAX_BYTES} bytes, which "
                                 "parse in about a second (the shipped catalog of every model is ~15 KB): is this "
                                 "the right file?")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:  # a file that grows while read is cut at the limit too
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise refuse("file", f"cannot read it: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise refuse("file", f"is more than {MAX_BYTES} bytes; {subject}s are limited to that")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise refuse(f"line {line}",
                     f"is not UTF-8 text (byte 0x{data[e.start]:02x}): is this a YAML file?") from None


def parse(text: str, file: str, subject: str, *, trusted: bool = False) -> tuple[Any, list[Problem]]:
    """``text`` parsed by yamlsafe: (document, problems with file, line and column)."""
    doc, yps = yamlsafe.load(text, kind=subject.removeprefix("the "), trusted=trusted)
    problems = [Problem(file, f"line {yp.line}" + (f", column {yp.column}" if yp.column else ""), yp.field,
                        yp.message) for yp in yps]
    return doc, problems


# --------------------------------------------------------------------------- entry points
def _read_checked(path: str | os.PathLike[str], subject: str, check: Callable[[Any, str], tuple[T, list[Problem]]]) -> T:
    """Read, parse and check one data file: its value, or ``DataFileError`` with every problem
    of it (the parser's and the checker's together)."""
    file = os.fspath(path)
    doc, problems = parse(read_text(file, subject), file, subject)
    if doc is not None or not problems:
        value, more = check(doc, file)
        problems += more
    if problems:
        raise DataFileError(problems, subject=subject)
    return value


def read_models(path: str | os.PathLike[str]) -> dict[str, ModelSpec]:
    """A models file's entries, or ``DataFileError`` with every problem of it."""
    return _read_checked(path, "the models file", check_models)


def read_prices(path: str | os.PathLike[str]) -> PriceDoc:
    """A price table's (per_second, assumed_seconds, unit), or ``DataFileError``."""
    return _read_checked(path, "the price table", check_prices)


def _shipped_text(name: str) -> str:
    return resources.files("batchgen").joinpath(name).read_text(encoding="utf-8")


def shipped_models() -> dict[str, ModelSpec]:
    """The shipped catalog (libyaml, checked; on a problem, parsed again by yamlsafe to say where)."""
    entries, problems = check_models(yaml.load(_shipped_text("models.yaml"), Loader=FAST_LOADER), "models.yaml")
    if problems:
        doc, problems = parse(_shipped_text("models.yaml"), "models.yaml", "the models file", trusted=True)
        raise DataFileError(problems + check_models(doc, "models.yaml")[1], subject="the shipped models.yaml")
    return entries


def shipped_prices() -> PriceDoc:
    """The shipped price table, a copy of its own for each caller: parsed and checked once per
    process (every command that estimates credits loads it; a test process running hundreds of
    commands parsed it hundreds of times, ~15 ms each)."""
    per, assumed, unit = _shipped_prices()
    return {m: dict(r) for m, r in per.items()}, dict(assumed), unit


@functools.cache
def _shipped_prices() -> PriceDoc:
    table, problems = check_prices(yaml.load(_shipped_text("prices.yaml"), Loader=FAST_LOADER), "prices.yaml")
    if problems:
        doc, problems = parse(_shipped_text("prices.yaml"), "prices.yaml", "the price table", trusted=True)
        raise DataFileError(problems + check_prices(doc, "prices.yaml")[1], subject="the shipped prices.yaml")
    return table


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("batchgen").joinpath(name)))


__all__ = ["COUNT", "ENTRY_KEYS", "FAST_LOADER", "FIELD", "FIELDS", "FIELD_CHOICES", "FIELD_COUNTS", "FIELD_VALUES",
           "KINDS", "MAX_BYTES", "PRICE_KEYS", "RULE_KINDS", "RULE_OPTIONS", "PriceDoc", "check_models",
           "check_prices", "parse", "read_models", "read_prices", "read_text", "refused_names", "shipped_models",
           "shipped_path", "shipped_prices"]
