"""The digest of the expansion code (manifest.keys): a ledger reuses a validated expansion only
while it is unchanged, so it must cover every module that decides how a manifest expands."""

from __future__ import annotations

import shutil
from pathlib import Path

import batchgen.datafiles
import batchgen.manifest
from batchgen.manifest import keys


def test_the_expander_digest_lists_every_module_of_the_package_and_its_helpers():
    package = set(Path(batchgen.manifest.__file__).parent.glob("*.py"))
    sources = keys.expander_sources()
    assert len(package) >= 10 and package <= set(sources)
    helpers = {"specs.py", "modelspec.py", "jobs.py", "names.py", "yamlsafe.py", "models.yaml"}
    assert helpers <= {p.name for p in sources}
    readers = set(Path(batchgen.datafiles.__file__).parent.glob("*.py"))  # the data files' package, whole
    assert len(readers) >= 4 and readers <= set(sources)
    assert all(p.is_file() for p in sources)
    assert batchgen.manifest._expander_sha256() == keys.expander_sha256()


def test_editing_any_source_changes_the_digest(tmp_path, monkeypatch):
    copies = []
    for i, p in enumerate(keys.expander_sources()):
        copy = tmp_path / f"{i:02d}-{p.name}"
        shutil.copyfile(p, copy)
        copies.append(copy)
    monkeypatch.setattr(keys, "expander_sources", lambda: copies)
    digest = keys.expander_sha256.__wrapped__
    seen = {digest()}
    for copy in copies:
        with open(copy, "a") as f:
            f.write("\n")
        seen.add(digest())
    assert len(seen) == len(copies) + 1
