"""Types are part of the library's face (it ships py.typed): ``mypy --strict`` over batchgen/
must be clean, and the in-memory fake of the stateful test must satisfy the ``Api`` protocol
(the seam between the scheduler and the HTTP client) without any ``type: ignore``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow
def test_mypy_strict_is_clean_over_the_package():
    r = mypy("--strict", "batchgen")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_the_fake_api_implements_the_protocol(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from batchgen.client import Api\nfrom test_lifecycle_stateful import FakeAPI\n\n"
                     "api: Api = FakeAPI(0)\n")
    r = mypy("--follow-imports=silent", "--ignore-missing-imports", str(probe))
    assert r.returncode == 0, r.stdout + r.stderr
    fake = (ROOT / "tests" / "test_lifecycle_stateful.py").read_text().split("class FakeAPI")[1].split("\nclass ")[0]
    assert "type: ignore" not in fake
