"""Types are part of the library's face (it ships py.typed): ``mypy --strict`` over batchgen/
must be clean, and the in-memory fake of the stateful test must satisfy the ``Api`` protocol
(the seam between the scheduler and the HTTP client) without any ``type: ignore``."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("typing")


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="session")
def checked(tmp_path_factory) -> subprocess.CompletedProcess[str]:
    """One mypy run for both tests: they are one xdist group (``pytestmark``), so the
    second finds the first's result in this worker's session. The lock and the result in the
    run's shared folder are for a run that splits them anyway (``--dist load``): there the
    second worker waited idle for the first's mypy, ~14 s of the suite's wall at ``-n 4``,
    which is why they are grouped. The package and the probe, under --strict. Each test used to
    start its own (~27 s of CPU each, cold), and most of the probe's run was spent type-checking
    the batchgen modules it imports all over again. The probe's run used
    --follow-imports=silent and --ignore-missing-imports; here files named on the command line
    (every module of batchgen/, the probe) are checked and reported in full whatever
    --follow-imports says, and only what they import from elsewhere (the stateful test module,
    conftest) is followed silently, as before: strict on the probe asks more of it, not less, and
    a missing import of batchgen's is still an error."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    folder = shared / "typing"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        result = folder / "result.json"
        if result.exists():
            code, out = json.loads(result.read_text())
            return subprocess.CompletedProcess(["mypy"], code, out, "")
        probe = folder / "probe.py"
        probe.write_text("from batchgen.client import Api\nfrom test_lifecycle_stateful import FakeAPI\n\n"
                         "api: Api = FakeAPI(0)\n")
        r = mypy("--strict", "--follow-imports=silent", "batchgen", str(probe))
        result.write_text(json.dumps([r.returncode, r.stdout + r.stderr]))
        return r


@pytest.mark.slow
def test_mypy_strict_is_clean_over_the_package(checked):
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_the_fake_api_implements_the_protocol(checked):
    assert checked.returncode == 0, checked.stdout + checked.stderr
    fake = (ROOT / "tests" / "test_lifecycle_stateful.py").read_text().split("class FakeAPI")[1].split("\nclass ")[0]
    assert "type: ignore" not in fake
