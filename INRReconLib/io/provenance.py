"""Where data came from: file hashes, and the `source` root attribute importers write
(docs/measurement-format.md): JSON text naming the importer, the files and their SHA-256, and
the vendor fields used, so a measurement can be traced back to what the scanner wrote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def source_attribute(importer: str, files, **fields) -> str:
    """The `source` attribute: {"importer", "files": [{"name", "sha256"}], **fields} as JSON."""
    listed = [{"name": Path(p).name, "sha256": file_sha256(p)} for p in files]
    return json.dumps({"importer": importer, "files": listed, **fields}, default=str)
