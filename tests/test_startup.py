"""Start-up stays cheap (issue 28): the commands people type all day do not import the heavy
libraries they do not use. Checked by what a fresh process has in ``sys.modules`` after the
command, never by timing (bench/run.py --only startup measures the time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from batchgen.ledger.revisions import alembic_revisions, schema_revisions

HEAVY = ("sqlalchemy", "alembic", "aiohttp", "rich", "boto3", "botocore", "av", "apprise", "prometheus_client")

_PROBE = """
import json, sys
from batchgen.cli import cli
try:
    cli.main(args=sys.argv[2:], prog_name="batchgen")
except SystemExit as e:
    code = e.code
else:
    code = 0
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def _loaded(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """The exit code of ``batchgen ARGS`` in a fresh interpreter, and the top-level packages it imported."""
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], cwd=tmp_path, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    doc = json.loads(out.read_text())
    return doc["code"], {m.split(".")[0] for m in doc["modules"]}


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("status", "--help"), ("db", "--help"),
                                  ("--version",), ("models",), ("models", "--json", "grok")])
def test_help_and_models_import_no_heavy_library(tmp_path, args):
    code, loaded = _loaded(tmp_path, *args)
    assert code == 0
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    if args[0] != "models":  # --help reads no YAML either
        assert "yaml" not in loaded


def test_status_on_a_sqlite_ledger_imports_no_heavy_library(tmp_path):
    """`batchgen status` reads a SQLite ledger with the standard library's sqlite3
    (``ledger.SqliteReader``): SQLAlchemy alone would cost more than the command may take."""
    Ledger(str(tmp_path / "l.db")).close()
    for args in (("status",), ("status", "--json"), ("status", "--runs", "3", "--expiring-within", "30")):
        code, loaded = _loaded(tmp_path, *args, "--ledger", str(tmp_path / "l.db"))
        assert code == 0
        assert "sqlite3" in loaded  # it did read the ledger
        # rich draws the tables of the plain output (not the JSON)
        heavy = {*HEAVY, "yaml", "asyncio"} - ({"rich"} if "--json" not in args else set())
        assert not loaded & heavy, sorted(loaded & heavy)
    # As the default ./batchgen.db, the same
    Ledger(str(tmp_path / "batchgen.db")).close()
    code, loaded = _loaded(tmp_path, "status", "--json")
    assert code == 0 and not loaded & set(HEAVY)


def test_status_on_a_database_url_loads_the_ledger_but_no_network_media_or_migration_library(tmp_path):
    """A ledger named by a URL (``sqlite:///``, PostgreSQL) is read through ``Ledger``."""
    Ledger(str(tmp_path / "l.db")).close()
    code, loaded = _loaded(tmp_path, "status", "--ledger", f"sqlite:///{tmp_path / 'l.db'}")
    assert code == 0
    assert "sqlalchemy" in loaded  # it did read the ledger through SQLAlchemy
    assert not loaded & {"alembic", "aiohttp", "boto3", "botocore", "av", "apprise", "prometheus_client", "yaml"}


def test_plan_reads_the_ledger_without_the_orm(tmp_path):
    """`plan` (and every command that opens a ``Ledger``) uses SQLAlchemy Core only: the ORM's
    import alone is about a tenth of a second."""
    Ledger(str(tmp_path / "l.db")).close()
    (tmp_path / "m.csv").write_text("name,model,prompt\na,grok-imagine-text-to-video,a lighthouse\n")
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", _PROBE, str(out), "plan", str(tmp_path / "m.csv"), "--ledger",
                    str(tmp_path / "l.db")], cwd=tmp_path, check=False, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    doc = json.loads(out.read_text())
    assert doc["code"] == 0
    assert "sqlalchemy" in doc["modules"] and "sqlalchemy.orm" not in doc["modules"]


def test_importing_batchgen_and_its_operations_is_cheap(tmp_path):
    out = tmp_path / "m.json"
    subprocess.run([sys.executable, "-c", "import json, sys, batchgen, batchgen.operations; "
                    f"json.dump(sorted(sys.modules), open({str(out)!r}, 'w'))"], check=True, timeout=120)
    loaded = {m.split(".")[0] for m in json.loads(out.read_text())}
    assert not loaded & set(HEAVY)


def test_schema_revisions_read_from_the_files_agree_with_alembic():
    """The ledger's version check reads the migrations' revision lines instead of importing
    alembic and every migration; both readings must name the same head and revisions."""
    head, known = schema_revisions()
    assert (head, known) == alembic_revisions()
    assert head in known and len(known) >= 11
