"""Content-hash keys and atomic, crash-safe, verifiable output directories.

Every stage writes into a temporary sibling directory and renames it into place only when complete,
with a ``_prefopt_done.json`` manifest written last. A directory without the manifest is an interrupted
attempt and is never read as a result. The manifest records every file's size and SHA-256: a finished output
whose files are missing or of another size is not complete (:func:`is_complete`), and :func:`verify_output`
checks the checksums too.

Secrets never enter a key or a manifest: a mapping key that names a secret (``api_key``, ``hf_token``,
``password``, ...; see :func:`is_secret_key`) has its value replaced by ``***`` wherever configs are hashed or
written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MANIFEST = "_prefopt_done.json"
REDACTED = "***"
_SECRET = re.compile(
    r"^(?:token|(?:.*[_-])?(?:api[_-]?key|apikey|secret|password|passwd|credentials?|private[_-]?key|"
    r"(?:access|auth|hf|hub|api|bearer|wandb|refresh)[_-]?token))$",
    re.IGNORECASE,
)

logger = logging.getLogger(__name__)


def is_secret_key(key: Any) -> bool:
    """Whether a config key names a secret (``api_key``, ``hf_token``, ``password``; not ``max_new_tokens``)."""
    return isinstance(key, str) and bool(_SECRET.match(key))


def _jsonable(obj: Any) -> Any:
    """Plain JSON data of dataclasses, mappings, sequences and paths, with secrets replaced by ``***``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: REDACTED if is_secret_key(f.name) and getattr(obj, f.name) else _jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, dict):
        return {str(k): REDACTED if is_secret_key(k) and v else _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def content_hash(*parts: Any, length: int = 12) -> str:
    """A short, stable hash of dataclasses, dicts, lists and scalars (key order does not matter)."""
    payload = json.dumps([_jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(path: Path) -> list[Path]:
    """Files under a directory (sorted; prefopt's manifest left out), or the file itself."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)


def file_fingerprint(path: str | Path) -> str:
    """A hash of a file's bytes, or of every file's relative path and bytes under a directory (prefopt's
    manifest, which holds a time stamp, left out); '' if missing."""
    path = Path(path)
    digest = hashlib.sha256()
    files = _files(path)
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(_sha256(file).encode())
    return digest.hexdigest()[:16] if files else ""


def file_records(path: str | Path) -> dict[str, dict]:
    """Every file under ``path`` (the manifest left out) with its size and SHA-256."""
    path = Path(path)
    return {str(f.relative_to(path)): {"size": f.stat().st_size, "sha256": _sha256(f)} for f in _files(path)}


def read_manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def output_problems(path: str | Path, checksums: bool = False) -> list[str]:
    """What is wrong with a finished output: no manifest, unreadable manifest, files missing or of another size
    than recorded (and, with ``checksums``, of other content). Empty when the output is as it was finished."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return ["not finished (no manifest)"]
    try:
        recorded = read_manifest(path).get("files")
    except (OSError, ValueError):
        return ["manifest unreadable"]
    if recorded is None:  # finished by a prefopt that did not record files
        return []
    problems = []
    for name, record in recorded.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name}: missing")
        elif file.stat().st_size != record["size"]:
            problems.append(f"{name}: {file.stat().st_size} bytes, {record['size']} recorded")
        elif checksums and _sha256(file) != record["sha256"]:
            problems.append(f"{name}: content differs from the recorded checksum")
    return problems


def is_complete(path: str | Path) -> bool:
    """A finished output whose recorded files are all there with their recorded sizes. A damaged one is
    logged (one line) and treated as unfinished, so the stage runs again."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return False
    problems = output_problems(path)
    if problems:
        logger.warning(
            "%s was finished but is damaged (%s%s); it is redone",
            path,
            problems[0],
            f" and {len(problems) - 1} more" if len(problems) > 1 else "",
        )
    return not problems


def verify_output(path: str | Path) -> list[str]:
    """Every problem of a finished output, checksums included (``prefopt verify``)."""
    return output_problems(path, checksums=True)


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
    info = {"completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(manifest or {}), "files": file_records(path)}
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


def cached_fingerprint(path: str | Path, cache_dir: str | Path) -> str:
    """:func:`file_fingerprint` of a file or directory (a model's weights, say), remembered in ``cache_dir`` under
    the files' names, sizes and modification times, so that unchanged gigabytes are hashed once."""
    path = Path(path).resolve()
    files = _files(path)
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    record = Path(cache_dir) / "fingerprints" / f"{content_hash(str(path), stats, length=24)}.txt"
    if record.is_file():
        return record.read_text()
    fingerprint = file_fingerprint(path)
    atomic_write(record, lambda tmp: tmp.write_text(fingerprint))
    return fingerprint
