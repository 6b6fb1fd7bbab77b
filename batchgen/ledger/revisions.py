"""Which schema a ledger has, and whether this batchgen may read it: the revisions this
batchgen knows (read from the migration files), and the refusals of a database that is not a
batchgen ledger or holds another schema version — the same words whichever way the ledger was
opened (``Database`` through SQLAlchemy, ``SqliteReader`` through the standard library).
Imports neither SQLAlchemy nor alembic (alembic only to check an unusual migration chain)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from ..errors import LedgerOutdated, NotALedger

# The tables every batchgen ledger has, whatever its version.
LEDGER_TABLES = frozenset({"runs", "jobs"})


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent.parent  # the batchgen package
    packaged = here / "_alembic"  # where the wheel puts the top-level alembic/ folder
    return packaged if packaged.is_dir() else here.parent / "alembic"


# `revision = '0011'` / `down_revision = '0010'` (or None), as alembic's template writes them
_REVISION_LINE = re.compile(r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:['"]([^'"]+)['"]|None)\s*$""", re.M)


@functools.lru_cache(maxsize=1)
def schema_revisions() -> tuple[str | None, frozenset[str]]:
    """(the current head revision, every revision this batchgen knows).

    Read from the migration files' ``revision``/``down_revision`` lines: alembic's own reading
    imports alembic and then every migration (a third of a second of each read command's start,
    for `batchgen status`). A file those lines do not describe plainly (one missing, a branch,
    a merge) is left to alembic. tests/test_startup.py checks both readings agree."""
    names: dict[str, str | None] = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        found = {m.group(1): m.group(2) for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8"))}
        if not found.get("revision") or "down_revision" not in found:
            return alembic_revisions()
        names[found["revision"] or ""] = found["down_revision"]
    heads = set(names) - set(names.values())
    if len(heads) != 1 or len(set(names.values())) != len(names):
        return alembic_revisions()
    return heads.pop(), frozenset(names)


def alembic_revisions() -> tuple[str | None, frozenset[str]]:
    """``schema_revisions`` as alembic reads them (it imports every migration)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    script = ScriptDirectory.from_config(cfg)
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def stamped(versions: list[str]) -> str | None:
    """The revision an ``alembic_version`` table holding ``versions`` stamps (None: unversioned),
    as alembic's ``MigrationContext.get_current_revision`` reads it."""
    if len(versions) > 1:  # several heads: batchgen's chain has one, so not a version this batchgen wrote
        return "+".join(sorted(versions))
    return versions[0] if versions else None


def not_a_ledger(name: object, tables: set[str]) -> NotALedger:
    """The refusal of a database whose ``tables`` are not a batchgen ledger's (nothing changed)."""
    foreign = sorted(tables - {"alembic_version"})
    what = (f"it holds other tables: {', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}"
            if foreign else "it has no tables")
    return NotALedger(f"ledger {name}: not a batchgen ledger ({what}); nothing was changed. Give the "
                      "ledger `batchgen run` made (--ledger or BATCHGEN_LEDGER)")


def needs_upgrade(name: object, current: str | None, *, migrate: bool) -> bool:
    """Whether the ledger ``name`` stamped ``current`` must be migrated to this version's schema
    (False: it is current). ``LedgerOutdated`` for a schema newer than this batchgen knows, and
    for an older one when the command does not migrate (it says to run `batchgen db upgrade`)."""
    head, known = schema_revisions()
    if current == head:
        return False
    if current is not None and current not in known:
        raise LedgerOutdated(f"ledger {name}: written by a newer batchgen (schema {current}, unknown to this "
                             f"version {head}): use that batchgen or a newer one; nothing was changed")
    if not migrate:
        raise LedgerOutdated(f"ledger {name}: written by an older batchgen (schema {current or 'unversioned'}, "
                             f"this version needs {head}): run `batchgen db upgrade` on it first (this command "
                             "only reads and never changes it)")
    return True
