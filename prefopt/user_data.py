"""A user's dataset, read through ``datasets.load_dataset``: local files, dataset directories or a Hub id.

A :class:`DatasetSpec` names the data: a ``.jsonl``/``.json``, ``.parquet``, ``.csv`` or ``.arrow`` file, a
directory (a ``save_to_disk`` dataset, a prefopt stage directory with ``data/``, or a folder of data files), or a
Hub dataset id with its config, split and revision. ``columns`` renames the user's columns to the ones the reader
expects. Errors are one line naming the path (:class:`prefopt.errors.DataError`).

This module imports ``datasets`` only when data is loaded, so recipes can name a dataset without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefopt.cache import content_hash, file_fingerprint
from prefopt.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

# File suffix -> the datasets builder that reads it.
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
STAGE_DATA_DIR = "data"  # a prefopt stage directory keeps its dataset here (prefopt.schemas.DATA_DIR)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lies and how to read it."""

    path: str = field(
        metadata={
            "help": "A .jsonl/.json, .parquet, .csv or .arrow file; a directory (save_to_disk, "
            "a prefopt stage directory, or a folder of data files); or a Hub dataset id."
        }
    )
    config: str | None = field(default=None, metadata={"help": "Hub dataset: its config (subset) name."})
    split: str = field(
        default="train",
        metadata={"help": "The split to read (slices work: 'train[:1000]'); a single file is the split 'train'."},
    )
    revision: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset: a commit, tag or branch. Pin a commit: the train stage's key follows the id and this "
            "revision, not the Hub's content."
        },
    )
    columns: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Renames {your column: the expected column}, e.g. {question: prompt, good: chosen, bad: rejected}."
        },
    )

    def __post_init__(self):
        if not self.path:
            raise ValueError("path: expected a file, a directory or a Hub dataset id, got ''")
        targets = list(self.columns.values())
        if len(set(targets)) != len(targets):
            raise ValueError(f"columns: two columns renamed to the same name ({self.columns})")

    @property
    def is_local(self) -> bool:
        """A local file or directory (that may not exist yet), as opposed to a Hub dataset id."""
        path = Path(self.path).expanduser()
        return path.exists() or path.suffix in BUILDERS or self.path.startswith((".", "/", "~"))


def source_key(spec: DatasetSpec) -> str:
    """The identity of the data: a local file's or directory's content; for a Hub id, the id, config, split, revision
    and the commit the revision resolves to (:mod:`prefopt.hub`; its content is not read to make a key)."""
    if not spec.is_local:
        from prefopt.hub import resolve_revision

        commit = resolve_revision(spec.path, spec.revision, "dataset")
        return content_hash("hub", spec.path, spec.config, spec.split, spec.revision, commit)
    fingerprint = file_fingerprint(Path(spec.path).expanduser())
    if not fingerprint:
        raise DataError(f"{spec.path}: no data here (the file or directory is missing or empty)")
    return content_hash("local", fingerprint)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _load(spec: DatasetSpec, text_columns: list[str]) -> Dataset:
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(spec.path).expanduser()
    if spec.is_local and not path.exists():
        raise DataError(f"{spec.path}: no such file or directory")
    if spec.is_local and (spec.config or spec.revision):
        raise DataError(f"{spec.path}: config and revision apply to Hub datasets; this is a local path")
    saved = path / STAGE_DATA_DIR if (path / STAGE_DATA_DIR).is_dir() else path
    try:
        if path.is_dir() and any((saved / name).is_file() for name in ("state.json", "dataset_dict.json")):
            data = load_from_disk(str(saved))
            if isinstance(data, DatasetDict):
                if spec.split not in data:
                    raise DataError(f"{spec.path}: no split {spec.split!r} (it has {sorted(data)})")
                data = data[spec.split]
            elif spec.split != "train":
                raise DataError(
                    f"{spec.path}: a saved dataset without splits; split {spec.split!r} needs a "
                    "DatasetDict (use split: train)"
                )
            return data
        if path.is_file():
            builder = BUILDERS.get(path.suffix)
            if builder is None:
                raise DataError(
                    f"{spec.path}: unsupported file type {path.suffix!r} (expected one of "
                    f"{sorted(BUILDERS)}, a dataset directory or a Hub dataset id)"
                )
            # CSV holds only text: keep pandas from reading an answer "3" as the number 3
            options = {"converters": dict.fromkeys(text_columns, str)} if builder == "csv" else {}
            return load_dataset(builder, data_files=str(path), split=spec.split, **options)
        if path.is_dir():  # a folder of data files: datasets infers the format and the splits
            return load_dataset(str(path), split=spec.split)
        return load_dataset(spec.path, name=spec.config, split=spec.split, revision=spec.revision)
    except DataError:
        raise
    except Exception as err:  # datasets raises many kinds for unreadable files, unknown splits, Hub failures
        problem = file_problem(path) if path.is_file() else None
        if problem:
            raise DataError(f"{spec.path}: {problem}") from None
        kind = "the Hub dataset" if not spec.is_local else "this"
        raise DataError(f"{spec.path}: could not read {kind} (split {spec.split!r}): {_one_line(err)}") from None


def file_problem(path: Path) -> str | None:
    """Where a JSON Lines, JSON or CSV file that datasets could not read goes wrong: its first bad line (counted from
    1), or that it holds no rows; None when no such place is found."""
    import csv
    import json

    if path.suffix not in (".jsonl", ".json", ".csv"):
        return None
    if path.stat().st_size == 0:
        return "the file is empty (no rows)"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8 text (byte {err.start})"
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                return f"line {number}: not valid JSON ({err.msg} at column {err.colno})"
            if not isinstance(row, dict):
                return f"line {number}: expected a JSON object (one row), got {type(row).__name__}"
        return None if text.strip() else "the file holds no rows"
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            return f"line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
        if not isinstance(rows, (list, dict)) or not rows:
            return f"expected a list of rows (JSON objects) or an object of columns, got {json.dumps(rows)[:40]}"
        return None
    if path.suffix == ".csv":
        lines = list(csv.reader(text.splitlines()))
        if len(lines) < 2:
            return "no rows (only a header line)" if lines else "the file holds no rows"
        for number, line in enumerate(lines[1:], 2):
            if line and len(line) != len(lines[0]):
                return f"line {number}: {len(line)} fields, the header has {len(lines[0])}"
    return None


def load_user_dataset(spec: DatasetSpec, text_columns: tuple[str, ...] = ()) -> Dataset:
    """The dataset ``spec`` names, with its columns renamed by ``spec.columns``; a CSV file's ``text_columns`` (names
    after renaming) are read as text."""
    sources = {target: source for source, target in spec.columns.items()}
    data = _load(spec, [sources.get(c, c) for c in text_columns])
    missing = [c for c in spec.columns if c not in data.column_names]
    if missing:
        raise DataError(
            f"{spec.path}: columns: {missing[0]!r} is not a column of the data (it has {data.column_names})"
        )
    clashes = [t for s, t in spec.columns.items() if t in data.column_names and t not in spec.columns and t != s]
    if clashes:
        raise DataError(
            f"{spec.path}: columns: renaming onto {clashes[0]!r}, which the data already has (rename or "
            "drop that column too)"
        )
    return data.rename_columns({s: t for s, t in spec.columns.items() if s != t})
