"""The ledger package's shape: the facade only forwards, and every public method of every room
(and of the facade) is behind the error boundary, including rooms added later."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from batchgen.errors import LedgerError
from batchgen.ledger import Ledger
from batchgen.ledger.database import Database, Room
from batchgen.ledger.facade import _Forward


def _rooms() -> list[type]:
    return [Database, *Room.__subclasses__()]


def test_every_public_method_of_every_room_is_translated() -> None:
    rooms = _rooms()
    assert {r.__name__ for r in rooms} >= {"Database", "Runs", "Recorder", "Transitions", "Leases", "Records", "Reads"}
    for cls in [*rooms, Ledger]:
        for name, member in vars(cls).items():
            if (name == "__init__" or not name.startswith("_")) and inspect.isfunction(member):
                assert hasattr(member, "__wrapped__"), f"{cls.__name__}.{name} is outside the error boundary"


def test_a_room_added_later_is_translated_too(tmp_path: Path) -> None:
    class Later(Room):
        def broken(self) -> None:
            with self.engine.connect() as c:
                c.exec_driver_sql("SELECT * FROM no_such_table")

    led = Ledger(str(tmp_path / "l.db"))
    try:
        with pytest.raises(LedgerError, match="no_such_table"):
            Later(led.database).broken()
    finally:
        led.close()


def test_the_facade_forwards_every_method_to_a_room_that_has_it(tmp_path: Path) -> None:
    led = Ledger(str(tmp_path / "l.db"))
    try:
        forwards = {n: f for n, f in vars(Ledger).items() if isinstance(f, _Forward)}
        assert len(forwards) > 40
        for name, fwd in forwards.items():
            room = getattr(led, fwd.room)
            assert callable(getattr(room, name)), f"Ledger.{name} → {fwd.room} has no {name}"
        # Functions of its own: opening and closing only; everything else lives in a room.
        own = {n for n, m in vars(Ledger).items() if inspect.isfunction(m) and not n.startswith("__")}
        assert own == {"close"}
        assert led.counts() == {} and led.run() is None
    finally:
        led.close()


def test_all_sql_stays_in_the_ledger_package() -> None:
    """No module outside batchgen/ledger/ builds or runs a statement (schema.py declares the tables)."""
    root = Path(__file__).resolve().parent.parent / "batchgen"
    sql = re.compile(r"from sqlalchemy import|import sqlalchemy\b|exec_driver_sql|\.execute\(|\bsqlite3\b|"
                     r"\b(SELECT|UPDATE|INSERT INTO|DELETE FROM) ")
    outside = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if "ledger" not in p.relative_to(root).parts and p.name != "schema.py" and sql.search(p.read_text())]
    assert outside == []
    assert sql.search((root / "ledger" / "transitions.py").read_text())  # the pattern does find SQL
