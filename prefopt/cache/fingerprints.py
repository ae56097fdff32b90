"""Fingerprints of files and directories (a data file, a model's weights), remembered in a cache directory so that
unchanged gigabytes are hashed once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from prefopt.cache.atomic import atomic_write
from prefopt.cache.checks import output_files, sha256
from prefopt.cache.keys import content_hash


def file_fingerprint(path: str | Path) -> str:
    """A hash of a file's bytes, or of every file's relative path and bytes under a directory (prefopt's
    manifest, which holds a time stamp, left out); '' if missing."""
    path = Path(path)
    digest = hashlib.sha256()
    files = output_files(path)
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(sha256(file).encode())
    return digest.hexdigest()[:16] if files else ""


def default_cache_dir() -> Path:
    """Where built tiny-world models live: ``$PREFOPT_CACHE_DIR`` or ``~/.cache/prefopt``."""
    return Path(os.environ.get("PREFOPT_CACHE_DIR", Path.home() / ".cache" / "prefopt"))


def cached_fingerprint(path: str | Path, cache_dir: str | Path) -> str:
    """:func:`file_fingerprint` of a file or directory (a model's weights, say), remembered in ``cache_dir`` under
    the files' names, sizes and modification times, so that unchanged gigabytes are hashed once."""
    path = Path(path).resolve()
    files = output_files(path)
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    record = Path(cache_dir) / "fingerprints" / f"{content_hash(str(path), stats, length=24)}.txt"
    if record.is_file():
        return record.read_text()
    fingerprint = file_fingerprint(path)
    atomic_write(record, lambda tmp: tmp.write_text(fingerprint))
    return fingerprint
