"""Digests of data files, one place for every user: the full SHA-256 (the search's reproducibility record and
the frozen classifier's cache key; cached by path, size and modification time when a cache file is given)
and a cheap one over the size and the first and last MiB (MLflow dataset inputs, which cap digests at 36
characters)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def file_digest(path: str | Path, cache: Path | None = None, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in ``chunk``-byte blocks; remembered in ``cache`` (a JSON file) by the file's
    path, size and modification time, so a multi-GB data file is hashed once, not on every search."""
    path = Path(path).resolve()
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    known: dict[str, Any] = {}
    if cache is not None and cache.exists():
        try:
            known = json.loads(cache.read_text())
        except ValueError:
            known = {}
        if known.get(key, {}).get("stamp") == stamp:
            return known[key]["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    if cache is not None:
        known[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, cache)
    return digest.hexdigest()



def quick_digest(path: Path) -> str:
    """A cheap content digest of a (possibly large) data file: SHA-256 of its size and first and last MiB,
    16 hex digits. It changes when the file is rewritten, not when it is copied or touched."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            digest.update(f.read())
    return digest.hexdigest()[:16]
