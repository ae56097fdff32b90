"""A user's training data: read in every usual form through datasets.load_dataset, renamed, and checked row by row
(one-line errors naming the file, the row and the column; oddities counted, and dropped where meaningless)."""

import csv
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from prefopt import schemas
from prefopt.errors import DataError
from prefopt.schemas import check_training_data
from prefopt.user_data import DatasetSpec, load_user_dataset, source_key

REPO = Path(__file__).parents[1]


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


QA = [("1+2=?", "3", "4"), ("2*3=?", "6", "5"), ("4-1=?", "3", "2"), ("5+5=?", "10", "11")]
TEXT_ROWS = [{"question": q, "good": c, "bad": r} for q, c, r in QA]
RENAME = {"question": "prompt", "good": "chosen", "bad": "rejected"}
CONVERSATIONS = [{"prompt": [S("Be brief."), U(q)], "chosen": [A(c)], "rejected": [A(r)]} for q, c, r in QA]


def write(rows: list[dict], path: Path) -> Path:
    """``rows`` as a real file (or directory) of the kind ``path``'s name says."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".arrow":
        table = pa.Table.from_pylist(rows)
        with pa.ipc.new_stream(str(path), table.schema) as writer:
            writer.write_table(table)
    elif path.name.endswith("stage"):  # a prefopt stage directory: the dataset under data/
        Dataset.from_list(rows).save_to_disk(str(path / "data"))
    elif path.name.endswith("files"):  # a folder of data files
        path.mkdir()
        write(rows, path / "train.jsonl")
    else:
        Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    "name", ["d.jsonl", "d.json", "d.parquet", "d.csv", "d.arrow", "saved", "a_stage", "some_files"]
)
def test_every_form_reads_the_same_renamed_rows(tmp_path, name):
    data = load_user_dataset(
        DatasetSpec(str(write(TEXT_ROWS, tmp_path / name)), columns=RENAME),
        text_columns=("prompt", "chosen", "rejected"),
    )  # CSV: answers like "3" stay text
    assert data.to_list() == [{"prompt": q, "chosen": c, "rejected": r} for q, c, r in QA]


@pytest.mark.parametrize("name", ["d.jsonl", "d.parquet", "saved"])
def test_messages_stay_lists_of_messages(tmp_path, name):
    path = str(write(CONVERSATIONS, tmp_path / name))
    checked = check_training_data(load_user_dataset(DatasetSpec(path)), path, "dpo")
    assert checked.conversational and not checked.implicit_prompt and checked.paired
    assert checked.dataset.to_list() == CONVERSATIONS


def test_splits_of_a_saved_dataset_dict_and_their_errors(tmp_path):
    path = tmp_path / "dd"
    DatasetDict({"train": Dataset.from_list(TEXT_ROWS[:3]), "test": Dataset.from_list(TEXT_ROWS[3:])}).save_to_disk(
        str(path)
    )
    assert load_user_dataset(DatasetSpec(str(path), split="test"))["question"] == ["5+5=?"]
    with pytest.raises(DataError, match=r"dd: no split 'dev' \(it has \['test', 'train'\]\)$"):
        load_user_dataset(DatasetSpec(str(path), split="dev"))
    file = write(TEXT_ROWS, tmp_path / "d.jsonl")
    assert len(load_user_dataset(DatasetSpec(str(file), split="train[:2]"))) == 2
    with pytest.raises(DataError) as err:
        load_user_dataset(DatasetSpec(str(file), split="test"))
    assert str(err.value).startswith(f"{file}: could not read this (split 'test'): ") and "\n" not in str(err.value)


def test_a_hub_id_reaches_load_dataset_with_its_config_split_and_revision(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return Dataset.from_list(TEXT_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = DatasetSpec("someone/prefs", config="math", split="train[:10]", revision="abc123", columns=RENAME)
    assert load_user_dataset(spec).column_names == ["prompt", "chosen", "rejected"]
    assert calls == [("someone/prefs", {"name": "math", "split": "train[:10]", "revision": "abc123"})]
    # The key of a Hub dataset follows its id, config, split and revision.
    assert source_key(spec) != source_key(
        DatasetSpec("someone/prefs", config="math", split="train[:10]", revision="def456")
    )


def test_a_hub_failure_is_one_line_naming_the_id(monkeypatch):
    import datasets

    def unreachable(path, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/prefs' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError) as err:
        load_user_dataset(DatasetSpec("someone/prefs"))
    assert str(err.value) == (
        "someone/prefs: could not read the Hub dataset (split 'train'): Couldn't reach "
        "'someone/prefs' on the Hub (LocalEntryNotFoundError)"
    )


def test_a_local_dataset_key_follows_its_content(tmp_path):
    path = write(TEXT_ROWS, tmp_path / "d.jsonl")
    before = source_key(DatasetSpec(str(path)))
    write(TEXT_ROWS[:3], path)
    assert source_key(DatasetSpec(str(path))) != before
    with pytest.raises(DataError, match="missing.jsonl: no data here"):
        source_key(DatasetSpec(str(tmp_path / "missing.jsonl")))


@pytest.mark.parametrize(
    "spec, expected",
    [
        (dict(path="missing.jsonl"), "missing.jsonl: no such file or directory"),
        (
            dict(path="d.txt"),
            "d.txt: unsupported file type '.txt' (expected one of ['.arrow', '.csv', '.json', "
            "'.jsonl', '.parquet'], a dataset directory or a Hub dataset id)",
        ),
        (
            dict(path="d.jsonl", revision="main"),
            "d.jsonl: config and revision apply to Hub datasets; this is a local path",
        ),
        (
            dict(path="d.jsonl", columns={"answer": "chosen"}),
            "d.jsonl: columns: 'answer' is not a column of the data (it has ['question', 'good', 'bad'])",
        ),
        (
            dict(path="d.jsonl", columns={"good": "bad"}),
            "d.jsonl: columns: renaming onto 'bad', which the data already has (rename or drop that column too)",
        ),
    ],
)
def test_reading_errors_are_one_line(tmp_path, monkeypatch, spec, expected):
    monkeypatch.chdir(tmp_path)
    write(TEXT_ROWS, tmp_path / "d.jsonl")
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError) as err:
        load_user_dataset(DatasetSpec(**spec))
    assert str(err.value) == expected


GOOD = {"prompt": [U("q")], "chosen": [A("a")], "rejected": [A("b")]}


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"chosen": None}, "row 2, column chosen: null (expected text or a list of messages)"),
        ({"rejected": []}, "row 2, column rejected: an empty list of messages (expected at least one message)"),
        (
            {"prompt": [A("q")]},
            "row 2, column prompt: roles ['assistant'] out of order: turn 0 is assistant (expected "
            "optional system turns, then user and assistant turns taking turns, starting with user)",
        ),
        (
            {"prompt": [U("q"), A("a")]},
            "row 2, column prompt: roles ['user', 'assistant']: the prompt ends with an "
            "assistant turn (expected it to end with a user turn)",
        ),
        (
            {"prompt": [U("q"), S("late")]},
            "row 2, column prompt: roles ['user', 'system'] out of order: turn 1 is system "
            "(expected optional system turns, then user and assistant turns taking turns, "
            "starting with user)",
        ),
        (
            {"chosen": [U("a")]},
            "row 2, column chosen: roles ['user'] (expected the assistant's reply: assistant turns, ending with one)",
        ),
        ({"prompt": [U("")]}, "row 2, column prompt: message 0 (user) has empty content"),
        (
            {"prompt": [{"role": "robot", "content": "q"}]},
            "row 2, column prompt: message 0 has role 'robot' (expected one of ['system', 'user', 'assistant'])",
        ),
    ],
)
def test_invalid_message_rows_name_the_row_and_column(bad, expected):
    rows = [GOOD, GOOD | {"chosen": [A("c")]}, GOOD | bad]
    with pytest.raises(DataError) as err:
        check_training_data(Dataset.from_list(rows), "data.jsonl", "dpo")
    assert str(err.value) == f"data.jsonl: {expected}"


def test_non_text_content_is_named(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
            "chosen": [A("a")],
            "rejected": [A("b")],
        }
    ]
    with pytest.raises(
        DataError,
        match=r"^d: row 0, column prompt: message 0 \(user\) has content of type list "
        r"\(expected text\)$",
    ):
        check_training_data(Dataset.from_list(rows), "d", "dpo")


@pytest.mark.parametrize(
    "rows, method, expected",
    [
        (
            [{"prompt": "q", "chosen": 5, "rejected": 3}],
            "dpo",
            "row 0, column chosen: type int (expected text or a list of messages)",
        ),
        ([{"prompt": " ", "chosen": "a", "rejected": "b"}], "dpo", "row 0, column prompt: empty text"),
        (
            [{"prompt": "q", "chosen": [A("a")], "rejected": [A("b")]}],
            "dpo",
            "row 0, column prompt: text, but chosen is a list of messages (expected all text or all lists of messages)",
        ),
        (
            [{"prompt": "q", "good": "a", "bad": "b"}],
            "dpo",
            "column chosen: missing (the data has columns ['prompt', 'good', 'bad']; expected pairs: chosen, rejected and "
            "optionally prompt (TRL's preference format), or KTO examples: prompt, completion and label (TRL's unpaired "
            "format); rename columns with training.dataset.columns)",
        ),
        (
            [{"prompt": "q", "completion": "a", "label": True}],
            "dpo",
            "holds KTO examples (unpaired: prompt, completion, label); training.method 'dpo' needs pairs (chosen, rejected)",
        ),
        (
            [{"prompt": "q", "completion": "a", "label": "yes"}],
            "kto",
            "row 0, column label: 'yes' (expected true or false)",
        ),
        (
            [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "p", "completion": "b", "label": True}],
            "kto",
            "column label: True in all 2 rows (expected desirable and undesirable examples: KTO needs both)",
        ),
        (
            [{"chosen": "Q: 1+1? A: 2", "rejected": "What? 3"}],
            "dpo",
            "row 0, column chosen: chosen and rejected share no beginning (with no prompt column the prompt is the text they "
            "start with; add a prompt column)",
        ),
        (
            [{"chosen": [U("q"), A("a")], "rejected": [U("p"), A("b")]}],
            "dpo",
            "row 0, column chosen: chosen and rejected share no first turns (with no prompt column the prompt is the turns "
            "they share; add a prompt column)",
        ),
        (
            [{"prompt": [U("q")], "chosen": [A("a")], "rejected": [A("b")], "system": "s"}],
            "dpo",
            "row 0, column system: a system column goes with text prompts (put the system turn into the prompt's messages)",
        ),
        (
            [{"prompt": "q", "chosen": "a", "rejected": "b", "margin": None}],
            "dpo",
            "row 0, column margin: null (expected a number)",
        ),
    ],
)
def test_invalid_rows_and_formats_are_one_line(rows, method, expected):
    with pytest.raises(DataError) as err:
        check_training_data(Dataset.from_list(rows), "d.jsonl", method, numeric=["margin"])
    assert str(err.value) == f"d.jsonl: {expected}"


def test_oddities_are_counted_logged_and_identical_pairs_dropped(caplog):
    rows = [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "same", "rejected": "same"},
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q3", "chosen": "a", "rejected": ""},
    ]
    with caplog.at_level(logging.WARNING):
        checked = check_training_data(Dataset.from_list(rows), "d.jsonl", "dpo")
    assert checked.dataset["prompt"] == ["q1", "q1", "q3"]  # the identical pair is dropped, the rest kept
    assert checked.dropped == {"chosen identical to rejected": [1]}
    assert checked.noted == {"duplicate rows": [2], "empty replies": [3]}
    report = checked.report()
    assert (report["rows"], report["rows_trained"], report["dropped"]) == (4, 3, {"chosen identical to rejected": 1})
    assert "d.jsonl: 1 of 4 rows dropped: chosen identical to rejected (rows [1])" in caplog.text
    assert "d.jsonl: 1 of 4 rows kept with duplicate rows (rows [2])" in caplog.text


def test_nothing_left_to_train_on_is_an_error():
    with pytest.raises(DataError, match=r"^d: no rows to train on \(1 read, 1 dropped\)$"):
        check_training_data(Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "a"}]), "d", "dpo")


def test_a_required_column_names_why():
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    with pytest.raises(DataError, match=r"^d: column margin: missing; the loss needs it$"):
        check_training_data(Dataset.from_list(rows), "d", "dpo", required={"margin": "the loss needs it"})


def test_the_schema_doc_lists_the_training_columns():
    doc = (REPO / "docs" / "schemas.md").read_text()
    for schema in (schemas.TRAIN_PAIRS, schemas.TRAIN_UNPAIRED, schemas.TRAIN_OPTIONAL):
        for column, meaning in schema.items():
            assert f"| `{column}` | {meaning} |" in doc, column
