"""The manifest that marks an output finished (every file's size and SHA-256, every data shard's row count), and
checking an output or a shard against what was recorded; damage is logged once per process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

MANIFEST = "_prefopt_done.json"


logger = logging.getLogger(__name__)


def sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_files(path: Path) -> list[Path]:
    """Files under a directory (sorted; prefopt's manifest left out), or the file itself."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)


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
    record = {"size": file.stat().st_size, "sha256": sha256(file)}
    if file.suffix in ROW_FILES:
        record["rows"] = count_rows(file)
    return record


def file_records(path: str | Path) -> dict[str, dict]:
    """Every file under ``path`` (the manifest left out) with its size, SHA-256 and, for a data shard, its row
    count."""
    path = Path(path)
    return {str(f.relative_to(path)): _record(f) for f in output_files(path)}


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
        _checksums[key] = sha256(file)
    return _checksums[key]


_reported: set[str] = set()  # damage already logged by this process, so one fault gives one warning line


def forget_damage(path: Path) -> None:
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


def verify_output(path: str | Path) -> list[str]:
    """Every problem of a finished output, checksums included (``prefopt verify``)."""
    return output_problems(path, checksums=True)
