"""The suite's groups hold under the README's `-n 4 --dist loadgroup`: a module whose tests share
a module-scoped fixture (test_docs.py's site build, test_typing.py's mypy run, the damaged-ledger
copies) runs on one worker and builds it once, and tests marked with one `xdist_group` run on one
worker. Both silently stopped holding once: pytest 9.2 keeps a node's id where pytest-xdist 3.8's
grouping does not write it, and conftest's hook ran after xdist's had read the marks. Checked by
a nested run of pytest with this suite's own conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

FILES = {
    "test_shared.py": '''
import os, pathlib, pytest, time
@pytest.fixture(scope="module")
def built():
    return os.environ["PYTEST_XDIST_WORKER"]
@pytest.mark.parametrize("i", range(6))
def test_uses_the_module_fixture(built, i):
    time.sleep(0.2)
    pathlib.Path(os.environ["GROUPS_OUT"], f"shared-{i}").write_text(built + " " + os.environ["PYTEST_XDIST_WORKER"])
''',
    "test_marked.py": '''
import os, pathlib, pytest, time
pytestmark = pytest.mark.xdist_group("together")
@pytest.mark.parametrize("i", range(6))
def test_marked(i):
    time.sleep(0.2)
    pathlib.Path(os.environ["GROUPS_OUT"], f"marked-{i}").write_text(os.environ["PYTEST_XDIST_WORKER"])
''',
    "test_free.py": '''
import pytest, time
@pytest.mark.parametrize("i", range(12))
def test_free(i):
    time.sleep(0.2)
''',
}


def test_module_fixtures_and_marked_groups_stay_on_one_worker(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(TESTS / "conftest.py", proj / "conftest.py")
    for name, text in FILES.items():
        (proj / name).write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    # Only the plugin under test is loaded (xdist; the conftest's hooks come with the project):
    # autoloading every installed plugin (hypothesis, timeout…) in the nested pytest and its two
    # workers was half of this test's CPU, and none of them takes part in grouping. Nor does the
    # outer run's per-test CPU log, which the nested run would otherwise append to.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_CPU_LOG"}, "GROUPS_OUT": str(out),
           "PYTHONPATH": str(TESTS), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdist.plugin",
                        "-n", "2", "--dist", "loadgroup",
                        "--rootdir", str(proj), "-c", os.devnull, str(proj)],
                       cwd=proj, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    shared = {(out / f"shared-{i}").read_text() for i in range(6)}
    assert len(shared) == 1 and len(set(next(iter(shared)).split())) == 1, shared  # built once, used there
    assert len({(out / f"marked-{i}").read_text() for i in range(6)}) == 1
