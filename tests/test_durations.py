"""tests/durations.json, the expected seconds by which conftest orders the suite's work for xdist
(the longest first): every entry names a test that exists, and the refresh from a
``PYTEST_CPU_LOG`` folder reads what the log holds."""

from __future__ import annotations

import re
from pathlib import Path

import durations

ROOT = Path(__file__).resolve().parent.parent


def test_every_timed_test_exists():
    table = durations.known()
    assert len(table) > 50 and all(v > 0 for v in table.values())
    for nodeid in table:
        path, _, rest = nodeid.partition("::")
        name = re.split(r"[:\[]", rest, maxsplit=1)[0]
        source = (ROOT / path).read_text()  # a missing file raises: rename the entry or refresh
        assert re.search(rf"^(def |class ){name}\b|^{name} = ", source, re.M), nodeid


def test_a_test_not_in_the_table_is_counted_by_its_mark():
    assert durations.expected("tests/test_new.py::test_x", slow=False) == durations.FAST
    assert durations.expected("tests/test_new.py::test_x", slow=True) == durations.SLOW
    some, seconds = next(iter(durations.known().items()))
    assert durations.expected(some, slow=False) == seconds


def test_the_refresh_reads_a_cpu_log(tmp_path):
    (tmp_path / "gw0.tsv").write_text(
        "2.5\t0.000\t<before the first test>\n"
        "1.0\t3.04\ttests/test_a.py::test_long@tests/test_a.py\n"  # a group's test: the group's name goes
        "0.1\t0.2\ttests/test_a.py::test_short\n"  # under KEEP_FROM: left to the default
        "9.0\t0.0\t<session end>\n")
    (tmp_path / "gw1.tsv").write_text(
        "0.5\t0.75\ttests/test_b.py::test_p[a@b]\n"  # an "@" inside the parameters is the test's own
        "0.5\t1.0\ttest_nested.py::test_x\n")  # a nested pytest's (test_xdist_groups.py), not the suite's
    assert durations.from_cpu_log(tmp_path) == {"tests/test_a.py::test_long": 3.0, "tests/test_b.py::test_p[a@b]": 0.8}
