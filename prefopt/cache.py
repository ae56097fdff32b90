"""Content-hash keys and atomic, crash-safe output directories.

Every stage writes into a temporary sibling directory and renames it into place only when complete,
with a ``_prefopt_done.json`` manifest written last. A directory without the manifest is an interrupted
attempt and is never read as a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

MANIFEST = "_prefopt_done.json"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def content_hash(*parts: Any, length: int = 12) -> str:
    """A short, stable hash of dataclasses, dicts, lists and scalars (key order does not matter)."""
    payload = json.dumps([_jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def file_fingerprint(path: str | Path) -> str:
    """A hash of a file's bytes, or of every file's relative path and bytes under a directory; '' if missing."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16] if files else ""


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Have ``write`` fill a temporary sibling of ``path`` (a file or a directory), then move it into place,
    replacing what was there: readers see the old content or the new, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def mark_complete(path: str | Path, manifest: dict | None = None) -> None:
    """Write the manifest that makes ``path`` a finished output (always the last file written)."""
    info = {"completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(manifest or {})}
    text = json.dumps(_jsonable(info), indent=2, sort_keys=True)
    atomic_write(Path(path) / MANIFEST, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, manifest: dict | None = None) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` (with its manifest) only if the block succeeds.

    An existing incomplete ``path`` (an interrupted earlier run) is replaced; a complete one is an error,
    because callers decide about reuse before writing.
    """
    final = Path(path)
    if is_complete(final):
        raise FileExistsError(f"{final} is already complete; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        mark_complete(tmp, manifest)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def default_cache_dir() -> Path:
    """Where built tiny-world models live: ``$PREFOPT_CACHE_DIR`` or ``~/.cache/prefopt``."""
    return Path(os.environ.get("PREFOPT_CACHE_DIR", Path.home() / ".cache" / "prefopt"))
