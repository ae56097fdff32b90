"""Writing outputs atomically: into a temporary sibling (named after its host and process, so that one left by a
killed process is removed by the next write), flushed to disk, then renamed into place; a directory becomes a
finished output with its manifest, written last."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prefopt.cache.checks import MANIFEST, file_records, forget_damage, is_complete
from prefopt.cache.keys import jsonable

logger = logging.getLogger(__name__)


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
    forget_damage(path)
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
    text = json.dumps(jsonable(info), indent=2, sort_keys=True)
    atomic_write(Path(path) / MANIFEST, lambda tmp: tmp.write_text(text))
    forget_damage(Path(path))


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
        forget_damage(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(table, file: str | Path) -> Path:
    """Write a Parquet shard atomically, with page checksums (so that :func:`shard_problem` sees corruption)."""
    import pyarrow.parquet as pq

    return atomic_write(file, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))
