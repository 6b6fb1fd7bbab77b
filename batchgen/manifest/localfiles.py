"""Local files named in media fields (a reference image next to the manifest): checked, hashed
once, and replaced by ``upload:sha256:<hex>`` so a job's key follows the file's content, not
where it lies; the scheduler uploads each just in time, once."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from .. import specs
from ..names import TemplateError

MAX_LOCAL_INPUT = 50 * 1024 * 1024  # a local reference image/video to upload
# Local inputs are sent to a third party: only media files, only from the manifest's own folder
# tree, so a manifest from elsewhere cannot upload ~/.ssh/id_rsa as a "reference image".
LOCAL_INPUT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".mp4", ".mov", ".webm"})


class LocalInputs:
    """The local input files of one manifest: ``files`` maps sha256 → path (content-addressed)."""

    def __init__(self, manifest: Path) -> None:
        self.manifest = manifest
        self.files: dict[str, Path] = {}
        self._hashed: dict[Path, str] = {}

    def localise(self, value: Any, base: Path) -> Any:
        """Local file paths in a media field's value → ``upload:sha256:<hex>`` (URLs unchanged).
        Raises ``TemplateError`` naming the value when it is not an acceptable local file."""
        if isinstance(value, list):
            return [self.localise(v, base) for v in value]
        if not isinstance(value, str) or not value.strip():
            return value
        v = value.strip()
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", v) or v.startswith(specs.UPLOAD_PREFIX):
            return v  # a URL (its scheme is checked by validation)
        path = base / v
        try:
            st = path.stat()
        except (OSError, ValueError):
            raise TemplateError(specs.comma_hint(v)
                                or f"{v!r} is neither an http(s) URL nor a readable local file") from None
        if not path.is_file():
            raise TemplateError(f"{v!r} is not a file")
        root = self.manifest.resolve().parent
        if root not in path.resolve().parents:
            raise TemplateError(f"local input {v!r} must be inside the manifest's folder {root}")
        if path.suffix.lower() not in LOCAL_INPUT_SUFFIXES:
            raise TemplateError(f"local input {v!r} must be an image or video "
                                f"({', '.join(sorted(LOCAL_INPUT_SUFFIXES))})")
        if st.st_size > MAX_LOCAL_INPUT:
            raise TemplateError(f"{v!r} is {st.st_size} bytes; local inputs are limited to {MAX_LOCAL_INPUT}")
        key = path.resolve()
        digest = self._hashed.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(key, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            digest = self._hashed[key] = h.hexdigest()
        self.files.setdefault(digest, key)
        return specs.UPLOAD_PREFIX + digest
