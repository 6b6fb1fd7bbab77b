"""What identifies a job and an expansion. A job's key is sha256 of the canonical JSON of its
effective request (model + every parameter after defaults) plus ``take``: renaming a row or
reordering the manifest never resubmits, while changing anything that changes the video does.
An expansion's digest (``inputs_sha256``) covers every input it depends on, the code that
expands included, so a ledger reuses a validated expansion only when nothing changed."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .. import datafiles, jobs, modelspec, names, specs, yamlsafe
from ..jobs import canonical_json, key_from_json


def job_identity(request: dict[str, Any], take: str | None) -> tuple[str, str]:
    """(job key, the request's canonical JSON) of one job."""
    request_json = canonical_json(request)
    return key_from_json(request_json, take), request_json


def expander_sources() -> list[Path]:
    """The files whose content decides how a manifest expands: every module of this package
    (found by listing it, so a module added later is covered), its helpers and the catalog."""
    package = sorted(Path(__file__).parent.glob("*.py"))
    helpers = [Path(m.__file__ or "") for m in (specs, modelspec, jobs, names, yamlsafe)]
    readers = sorted(Path(datafiles.__file__ or "").parent.glob("*.py"))  # a package: every module of it
    return [*package, *helpers, *readers, Path(specs.__file__ or "").with_name("models.yaml")]


@functools.lru_cache(maxsize=1)
def expander_sha256() -> str:
    """The expansion code itself (the sources above, the YAML parser's version): another
    version may expand the same manifest differently."""
    h = hashlib.sha256(yaml.__version__.encode())
    for path in expander_sources():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class FileDigests:
    """sha256 of files, streamed (a CSV manifest may be large) and read once per file however
    often asked."""

    def __init__(self) -> None:
        self._digests: dict[Path, bytes] = {}

    def of(self, path: Path) -> bytes:
        digest = self._digests.get(path)
        if digest is None:
            with open(path, "rb") as f:
                digest = self._digests[path] = hashlib.file_digest(f, "sha256").digest()
        return digest


def inputs_sha256(expander: str, catalog: specs.Catalog, files: Iterable[Path], digests: FileDigests) -> str:
    """Digest of an expansion's inputs: the expander's digest, the catalog, the files' bytes."""
    h = hashlib.sha256(expander.encode())
    h.update(repr(sorted((k, repr(v)) for k, v in catalog.models.items())).encode())
    for p in dict.fromkeys(files):
        h.update(digests.of(p))
    return h.hexdigest()
