"""Content-hash keys and atomic, crash-safe, verifiable output directories.

Every stage writes into a temporary sibling directory and renames it into place only when complete,
with a ``_prefopt_done.json`` manifest written last. A directory without the manifest is an interrupted
attempt and is never read as a result. The manifest records every file's size and SHA-256, and every data
shard's row count (a ``.parquet`` file, or an ``.arrow`` file of a saved dataset): a finished output whose files
are missing or of another size, or whose data shards have other content or another row count, is not complete
(:func:`is_complete`); :func:`verify_output` checks every file's checksum. Files are flushed to disk (``fsync``)
before they are renamed into place and before the manifest is written, so a power loss cannot leave a renamed
file empty behind a manifest.
Temporaries are named after the host and process that writes them; one left by a process that no longer runs
on this host (a kill) is removed by the next write of the same path.

Secrets never enter a key or a manifest: a mapping key that names a secret (``api_key``, ``hf_token``,
``password``, ...; see :func:`is_secret_key`) has its value replaced by ``***`` wherever configs are hashed or
written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
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


ROW_FILES = (".parquet", ".arrow")  # data shards: the manifest records their row counts


def count_rows(file: str | Path) -> int:
    """Rows of a Parquet file (from its footer) or of a saved dataset's ``.arrow`` file (an Arrow IPC stream,
    walked batch by batch through a memory map); raises if the file cannot be read as one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = Path(file)
    if file.suffix == ".parquet":
        return pq.read_metadata(file).num_rows
    with pa.memory_map(str(file)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_file(source).read_all().num_rows
        return sum(batch.num_rows for batch in reader)


def _record(file: Path) -> dict:
    record = {"size": file.stat().st_size, "sha256": _sha256(file)}
    if file.suffix in ROW_FILES:
        record["rows"] = count_rows(file)
    return record


def file_records(path: str | Path) -> dict[str, dict]:
    """Every file under ``path`` (the manifest left out) with its size, SHA-256 and, for a data shard, its row
    count."""
    path = Path(path)
    return {str(f.relative_to(path)): _record(f) for f in _files(path)}


def _row_problem(name: str, file: Path, rows: int) -> str | None:
    try:
        found = count_rows(file)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        return f"{name}: unreadable ({' '.join(str(err).split())[:120]})"
    return None if found == rows else f"{name}: {found} rows, {rows} recorded"


def read_manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def output_problems(path: str | Path, checksums: bool = False) -> list[str]:
    """What is wrong with a finished output: no manifest, unreadable manifest, files missing or of another size
    than recorded, data shards (the files the next stage loads) of other content or another row count than
    recorded (with ``checksums``: any file of other content). Empty when the output is as it was finished. A data
    shard is hashed once per process while its size and modification time stay as they were."""
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
        elif (checksums or "rows" in record) and _checksum(file) != record["sha256"]:
            problems.append(f"{name}: content differs from the recorded checksum")
        elif "rows" in record and (problem := _row_problem(name, file, record["rows"])):
            problems.append(problem)
    return problems


_checksums: dict[tuple, str] = {}  # (path, inode, size, mtime) -> SHA-256, so a process hashes a file once


def _checksum(file: Path) -> str:
    stat = file.stat()
    key = (str(file.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _checksums:
        _checksums[key] = _sha256(file)
    return _checksums[key]


_reported: set[str] = set()  # damage already logged by this process, so one fault gives one warning line


def _forget_damage(path: Path) -> None:
    """Written anew: damage found there later is news again."""
    inside = str(path) + os.sep
    _reported.difference_update({p for p in _reported if p == str(path) or p.startswith(inside)})


def report_damage(path: str | Path, problem: str, action: str) -> None:
    """Log one warning line for damaged ``path``, unless this process has already reported it (a stage found
    damaged is logged when found, not again when its files are checked one by one)."""
    path = Path(path)
    if any(str(p) in _reported for p in (path, *path.parents)):
        logger.info("%s: %s; %s", path, problem, action)
        return
    _reported.add(str(path))
    logger.warning("%s: %s; %s", path, problem, action)


def is_complete(path: str | Path) -> bool:
    """A finished output whose recorded files are all there with their recorded sizes. A damaged one is
    logged (one line) and treated as unfinished, so the stage runs again."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return False
    problems = output_problems(path)
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        if str(path) not in _reported:
            _reported.add(str(path))
            logger.warning("%s was finished but is damaged (%s%s); it is redone", path, problems[0], more)
        for problem in problems:  # a recorded file that is not as recorded is never reused by the rerun
            name, sep, _ = problem.partition(": ")
            if sep and name != MANIFEST and (path / name).is_file():
                (path / name).unlink()
    return not problems


def shard_problem(file: str | Path, rows: int) -> str | None:
    """What is wrong with a finished Parquet shard that should hold ``rows`` rows: missing, unreadable (a torn or
    corrupted file; pages are checked against their checksums) or of another row count. None when it is sound."""
    import pyarrow.parquet as pq

    file = Path(file)
    if not file.is_file():
        return "missing"
    try:
        found = pq.read_table(file, page_checksum_verification=True).num_rows
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        return f"unreadable ({' '.join(str(err).split())[:120]})"
    return None if found == rows else f"{found} rows, {rows} expected"


def sound_shard(file: str | Path, rows: int, what: str = "shard") -> bool:
    """Whether a shard file is there and sound (:func:`shard_problem`); a damaged one is removed, with one
    warning line, so that the caller writes it again."""
    problem = shard_problem(file, rows)
    if problem is None:
        return True
    if problem != "missing":
        report_damage(file, f"damaged {what} ({problem})", "it is written again")
        Path(file).unlink(missing_ok=True)
    return False


def write_parquet(table, file: str | Path) -> Path:
    """Write a Parquet shard atomically, with page checksums (so that :func:`shard_problem` sees corruption)."""
    import pyarrow.parquet as pq

    return atomic_write(file, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))


def verify_output(path: str | Path) -> list[str]:
    """Every problem of a finished output, checksums included (``prefopt verify``)."""
    return output_problems(path, checksums=True)


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temporary_path(path: Path) -> Path:
    """This process's temporary sibling of ``path``: ``.<name>.tmp-<host>-<pid>``."""
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(tmp: Path) -> bool:
    """Whether ``tmp`` is a temporary of a process of this host that no longer runs (a kill mid-write)."""
    match = re.match(rf"^\..+\.tmp-{re.escape(_HOST)}-(\d+)$", tmp.name)
    return bool(match) and int(match[1]) != os.getpid() and not _pid_running(int(match[1]))


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` left by processes of this host that no longer run."""
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            if _stale(tmp):
                logger.info("Removing %s, left by an interrupted run", tmp)
                _remove(tmp)


def fsync_tree(path: Path, recursive: bool = True) -> None:
    """Flush a file or a directory (with ``recursive``, every file and directory under it too) to disk."""
    for item in [path, *(path.rglob("*") if recursive and path.is_dir() else [])]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Have ``write`` fill a temporary sibling of ``path`` (a file or a directory), flush it to disk, then move it
    into place, replacing what was there: readers see the old content or the new, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    _remove(tmp)
    remove_stale_temporaries(path)
    try:
        write(tmp)
        fsync_tree(tmp)
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)
    fsync_tree(path.parent, recursive=False)
    _forget_damage(path)
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def mark_complete(path: str | Path, manifest: dict | None = None) -> None:
    """Write the manifest that makes ``path`` a finished output (always the last file written); temporaries that
    interrupted runs left inside are removed first, so that the manifest records only the output."""
    for tmp in sorted(Path(path).rglob(".*.tmp-*"), reverse=True):
        if _stale(tmp):
            logger.info("Removing %s, left by an interrupted run", tmp)
            _remove(tmp)
    fsync_tree(Path(path))  # every file is on disk before the manifest says it is finished
    info = {"completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(manifest or {}), "files": file_records(path)}
    text = json.dumps(_jsonable(info), indent=2, sort_keys=True)
    atomic_write(Path(path) / MANIFEST, lambda tmp: tmp.write_text(text))
    _forget_damage(Path(path))


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
    tmp = temporary_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    remove_stale_temporaries(final)
    tmp.mkdir()
    try:
        yield tmp
        mark_complete(tmp, manifest)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_tree(final.parent, recursive=False)
        _forget_damage(final)
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
