"""A user's data trains for real: every format through the entry points' loaders and TRL's own preprocessing (what
the trainer sees is the chat-templated text, never a repr), bad data stops the CLI with one line, and a recipe's
training.dataset trains without the generate, judge and pairs stages."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from test_user_data import QA, A, S, U, write
from transformers import AutoTokenizer

from prefopt.cli import main
from prefopt.errors import DataError
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe
from prefopt.training.dpo import DPOScriptArguments, load_pairs
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.training.kto import KTOScriptArguments, load_examples
from prefopt.training.kto_trainer import SCORE_KEY, PrefKTOConfig, PrefKTOTrainer
from prefopt.training.trainer_base import GAP_KEY

from conftest import CI_RECIPE
from conftest import trainer_config as config

EOS = "</s>"


@pytest.fixture(autouse=True)
def quiet_progress_bars():
    """datasets' progress bars write to stderr; the CLI's one-line errors are checked there."""
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def chat(tokenizer, prompt: list[dict], reply: list[dict]) -> tuple[str, str]:
    """What TRL must tokenise: the prompt with the generation prompt, and prompt + reply, by the chat template."""
    return (
        tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
        tokenizer.apply_chat_template(prompt + reply, tokenize=False),
    )


def two_steps(trainer) -> None:
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(log["loss"] == log["loss"] for log in trainer.state.log_history if "loss" in log)  # not NaN


def assert_no_repr(tokenizer, dataset, columns) -> None:
    for row in dataset:
        text = "".join(tokenizer.decode(row[c]) for c in columns)
        assert "'role'" not in text and "[{" not in text and "None" not in text, text


# (rows as written, file name, columns mapping, the expected (prompt, prompt + chosen, prompt + rejected) renders)
def dpo_cases():
    system_multi_turn = [
        {"prompt": [S("Be brief."), U("Hi"), A("Hello"), U(q)], "chosen": [A(c)], "rejected": [A(r)]} for q, c, r in QA
    ]
    return {
        "standard text, renamed (jsonl)": (
            [{"question": q, "good": c, "bad": r} for q, c, r in QA],
            "d.jsonl",
            {"question": "prompt", "good": "chosen", "bad": "rejected"},
            [([U(q)], [A(c)], [A(r)]) for q, c, r in QA],
        ),
        "standard text with system and margin (csv)": (
            [{"system": "Be brief.", "prompt": q, "chosen": c, "rejected": r, "margin": 0.5} for q, c, r in QA],
            "d.csv",
            {},
            [([S("Be brief."), U(q)], [A(c)], [A(r)]) for q, c, r in QA],
        ),
        "conversational (parquet)": (
            [{"prompt": [U(q)], "chosen": [A(c)], "rejected": [A(r)]} for q, c, r in QA],
            "d.parquet",
            {},
            [([U(q)], [A(c)], [A(r)]) for q, c, r in QA],
        ),
        "multi-turn with a system turn (datasets dir)": (
            system_multi_turn,
            "saved",
            {},
            [(x["prompt"], x["chosen"], x["rejected"]) for x in system_multi_turn],
        ),
        "implicit prompt, conversational (jsonl)": (
            [{"chosen": x["prompt"] + x["chosen"], "rejected": x["prompt"] + x["rejected"]} for x in system_multi_turn],
            "d.jsonl",
            {},
            [(x["prompt"], x["chosen"], x["rejected"]) for x in system_multi_turn],
        ),
    }


@pytest.mark.parametrize("case", list(dpo_cases()))
def test_dpo_trains_on_every_format_with_the_chat_template(case, tiny_models, tmp_path):
    rows, name, columns, expected = dpo_cases()[case]
    path = write(rows, tmp_path / name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["policy"])
    args = DPOScriptArguments(pairs_path=str(path), dataset_columns=columns, model_name_or_path=tiny_models["policy"])
    data = load_pairs(args)  # what the DPO entry point trains on
    assert (GAP_KEY in data.column_names) == ("margin" in rows[0])
    trainer = PrefDPOTrainer(
        model=tiny_models["policy"],
        args=config(PrefDPOConfig, tmp_path / "out", max_steps=2, max_length=256),
        train_dataset=data,
        processing_class=tokenizer,
    )
    seen = trainer.train_dataset  # after TRL's own preprocessing
    for row, (prompt, chosen, rejected) in zip(seen, expected, strict=True):
        prompt_text, full_chosen = chat(tokenizer, prompt, chosen)
        assert tokenizer.decode(row["prompt_ids"]) == prompt_text
        assert tokenizer.decode(row["prompt_ids"] + row["chosen_ids"]) == full_chosen
        assert tokenizer.decode(row["prompt_ids"] + row["rejected_ids"]) == chat(tokenizer, prompt, rejected)[1]
    assert_no_repr(tokenizer, seen, ["prompt_ids", "chosen_ids", "rejected_ids"])
    two_steps(trainer)


def test_implicit_prompt_text_is_trl_standard_text(tiny_models, tmp_path, caplog):
    """Text without a prompt column is TRL's standard implicit-prompt format: the shared start is the prompt, and
    the text trains as it is (with TRL's eos), no chat template. Columns left unused are named."""
    rows = [
        {"chosen": f"Human: {q} Assistant: {c}", "rejected": f"Human: {q} Assistant: {r}", "id": i}
        for i, (q, c, r) in enumerate(QA)
    ]
    path = write(rows, tmp_path / "d.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["policy"])
    data = load_pairs(DPOScriptArguments(pairs_path=str(path), model_name_or_path=tiny_models["policy"]))
    assert (
        "no prompt column: the prompt is the start chosen and rejected share (TRL's implicit prompt); columns "
        "['id'] are not used" in caplog.text
    )
    trainer = PrefDPOTrainer(
        model=tiny_models["policy"],
        args=config(PrefDPOConfig, tmp_path / "out", max_steps=2),
        train_dataset=data,
        processing_class=tokenizer,
    )
    for row, source in zip(trainer.train_dataset, rows, strict=True):
        assert tokenizer.decode(row["prompt_ids"] + row["chosen_ids"]) == source["chosen"] + EOS
        assert tokenizer.decode(row["prompt_ids"] + row["rejected_ids"]) == source["rejected"] + EOS
        assert tokenizer.decode(row["prompt_ids"]).startswith("Human: ")
    two_steps(trainer)


def kto_cases():
    labelled = [(q, c, True) for q, c, _ in QA] + [(q, r, False) for q, _, r in QA]
    return {
        "unpaired conversational (jsonl)": (
            [{"prompt": [S("Be brief."), U(q)], "completion": [A(a)], "label": ok} for q, a, ok in labelled],
            "d.jsonl",
            {},
            {chat_key([S("Be brief."), U(q)], [A(a)]) for q, a, _ in labelled},
        ),
        "unpaired text with scores, renamed (csv)": (
            [{"q": q, "a": a, "good": ok, "score": 0.9 if ok else 0.1} for q, a, ok in labelled],
            "d.csv",
            {"q": "prompt", "a": "completion", "good": "label"},
            {chat_key([U(q)], [A(a)]) for q, a, _ in labelled},
        ),
        "pairs given unpaired, implicit prompt (parquet)": (
            [{"chosen": [U(q), A(c)], "rejected": [U(q), A(r)]} for q, c, r in QA],
            "d.parquet",
            {},
            {chat_key([U(q)], [A(a)]) for q, a, _ in labelled},
        ),
    }


def chat_key(prompt, reply):
    return json.dumps([prompt, reply])


@pytest.mark.parametrize("case", list(kto_cases()))
def test_kto_trains_on_every_format_with_the_chat_template(case, tiny_models, tmp_path):
    rows, name, columns, expected = kto_cases()[case]
    path = write(rows, tmp_path / name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["policy"])
    data = load_examples(
        KTOScriptArguments(pairs_path=str(path), dataset_columns=columns, model_name_or_path=tiny_models["policy"])
    )
    assert sorted(data["label"]) == [False] * 4 + [True] * 4
    assert (SCORE_KEY in data.column_names) == ("score" in rows[0])
    renders = {chat(tokenizer, *json.loads(key)): key for key in expected}
    trainer = PrefKTOTrainer(
        model=tiny_models["policy"],
        args=config(PrefKTOConfig, tmp_path / "out", max_steps=2, max_length=256),
        train_dataset=data,
        processing_class=tokenizer,
    )
    seen = {
        (tokenizer.decode(row["prompt_ids"]), tokenizer.decode(row["prompt_ids"] + row["completion_ids"]))
        for row in trainer.train_dataset
    }
    assert seen == set(renders)
    assert_no_repr(tokenizer, trainer.train_dataset, ["prompt_ids", "completion_ids"])
    two_steps(trainer)


ROWS = [{"prompt": q, "chosen": c, "rejected": r} for q, c, r in QA]


def cli_train(path: Path, out: Path, *extra: str) -> int:
    return main(["train", str(CI_RECIPE), "--input", str(path), "--output-dir", str(out), *extra])


@pytest.mark.parametrize(
    "rows, expected",
    [
        (ROWS[:2] + [ROWS[2] | {"chosen": None}], "row 2, column chosen: null (expected text or a list of messages)"),
        (
            [{"question": q, "chosen": c, "rejected": r} for q, c, r in QA],  # no prompt column: an implicit prompt
            "row 0, column chosen: chosen and rejected share no beginning (with no prompt column the prompt is the text they "
            "start with; add a prompt column)",
        ),
        ([{"prompt": q, "good": c, "rejected": r} for q, c, r in QA], "column chosen: missing"),
        (
            ROWS[:1] + [ROWS[1] | {"rejected": 7}],
            "column rejected: values of different types in different rows (expected "
            "text in every row, or a list of messages in every row)",
        ),
        ([ROWS[0] | {"rejected": 7}], "row 0, column rejected: type int (expected text or a list of messages)"),
        (
            [{"prompt": [U("q")], "chosen": [A("a")], "rejected": []}],
            "row 0, column rejected: an empty list of messages (expected at least one message)",
        ),
        (
            [
                {"prompt": [U("q")], "chosen": [A("a")], "rejected": [A("b")]},
                {"prompt": [A("q")], "chosen": [A("a")], "rejected": [A("b")]},
            ],
            "row 1, column prompt: roles ['assistant'] out of order: turn 0 is assistant (expected optional system turns, "
            "then user and assistant turns taking turns, starting with user)",
        ),
    ],
)
def test_bad_data_is_one_line_through_the_cli(rows, expected, tmp_path, capsys):
    path = write(rows, tmp_path / "data.jsonl")
    assert cli_train(path, tmp_path / "runs") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"prefopt: error: {path}: {expected}"), err
    assert not (tmp_path / "runs" / "train").exists() or not any((tmp_path / "runs" / "train").iterdir())


def test_a_missing_prompt_column_with_renamable_columns_says_how(tmp_path, capsys):
    path = write([{"question": q, "good": c, "bad": r} for q, c, r in QA], tmp_path / "data.jsonl")
    assert cli_train(path, tmp_path / "runs") == 2
    assert capsys.readouterr().err.strip() == (
        f"prefopt: error: {path}: column chosen: missing (the data has columns ['question', 'good', 'bad']; expected "
        "pairs: chosen, rejected and optionally prompt (TRL's preference format), or KTO examples: prompt, "
        "completion and label (TRL's unpaired format); rename columns with training.dataset.columns)"
    )


def test_a_loss_that_needs_the_gap_says_which_column_or_loss(tmp_path, capsys):
    path = write(ROWS, tmp_path / "data.jsonl")
    assert cli_train(path, tmp_path / "runs", "--set", "training.trl.pref_loss=weighted") == 2
    assert capsys.readouterr().err.strip() == (
        f"prefopt: error: {path}: column margin: missing; pref_loss 'weighted' needs each pair's judged gap (add a "
        "numeric column 'margin' or set training.gap_column to the column that holds it; or use pref_loss "
        "['sigmoid', 'stock'] without SFT routing or curriculum)"
    )
    assert cli_train(path, tmp_path / "runs", "--set", "training.trl.sft_route_quantile=0.5") == 2
    assert "column margin: missing; SFT routing needs each pair's judged gap" in capsys.readouterr().err


def test_kto_score_weighting_without_scores_says_which_column(tmp_path, capsys):
    path = write(
        [{"prompt": q, "completion": c, "label": i % 2 == 0} for i, (q, c, _) in enumerate(QA)], tmp_path / "data.jsonl"
    )
    assert (
        cli_train(path, tmp_path / "runs", "--set", "training.method=kto", "--set", "training.trl.score_weighting=true")
        == 2
    )
    assert capsys.readouterr().err.strip() == (
        f"prefopt: error: {path}: column score: missing; score_weighting needs each example's judged score (add a "
        "numeric column 'score', or set score_weighting: false)"
    )


def test_cli_train_on_conversational_input_trains_and_reports(tiny_models, tmp_path):
    """`prefopt train --input` with TRL's conversational format: trained by the real entry point under accelerate
    launch; the check's report is kept beside the model."""
    rows = [{"prompt": [U(q)], "chosen": [A(c)], "rejected": [A(r)]} for q, c, r in QA]
    rows.append(rows[0])  # a duplicate: counted and kept
    rows.append({"prompt": [U("7+1=?")], "chosen": [A("8")], "rejected": [A("8")]})  # no preference: dropped
    path = write(rows, tmp_path / "data.jsonl")
    assert cli_train(path, tmp_path / "runs") == 0
    (out,) = (tmp_path / "runs" / "train").iterdir()
    assert (out / "model" / "model.safetensors").is_file()
    report = json.loads((out / "data_report.json").read_text())
    assert (report["conversational"], report["rows"], report["rows_trained"]) == (True, 6, 5)
    assert report["dropped"] == {"chosen identical to rejected": 1} and report["noted"] == {"duplicate rows": 1}


def test_a_recipe_dataset_trains_without_the_earlier_stages(tiny_models, tmp_path):
    """training.dataset (renamed columns, KTO on pairs): `prefopt run` goes straight to training, the stage key follows
    the data's content, and the ranks read the checked rows kept in the stage."""
    data = write([{"q": [U(q)], "good": [A(c)], "bad": [A(r)]} for q, c, r in QA], tmp_path / "prefs.parquet")
    recipe_data = yaml.safe_load(CI_RECIPE.read_text())
    recipe_data["output_dir"] = str(tmp_path / "runs")
    recipe_data["training"] |= {
        "method": "kto",
        "dataset": {"path": str(data), "columns": {"q": "prompt", "good": "chosen", "bad": "rejected"}},
    }
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe_data))
    recipe = load_recipe(recipe_path)
    assert [row["stage"] for row in Pipeline(recipe).plan()][:1] == ["train"]
    pipeline = Pipeline(recipe)
    pipeline.run()
    ran = {o.name: o.status for o in pipeline.outcomes}
    assert ran["train"] == "ran" and not {"generate", "judge", "pairs"} & set(ran)
    key = pipeline.train_key()
    out = pipeline.stage_dir("train", key)
    assert yaml.safe_load((out / "train_config.yaml").read_text())["pairs_path"] == str(out / "train_data")
    assert (out / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "runs" / "pairs").exists()
    again = Pipeline(load_recipe(recipe_path))
    again.train()
    assert [o.status for o in again.outcomes if o.name == "train"] == ["cached"]
    write([{"q": [U(q)], "good": [A(c)], "bad": [A(r + "0")]} for q, c, r in QA], data)  # new content: new key
    assert Pipeline(load_recipe(recipe_path)).train_key() != key
    moved = dataclasses.replace(recipe.training, dataset=dataclasses.replace(recipe.training.dataset, split="test"))
    with pytest.raises(DataError, match="prefs.parquet: could not read this \\(split 'test'\\)"):
        Pipeline(dataclasses.replace(recipe, training=moved)).train()


def test_a_recipe_of_only_a_model_and_a_dataset_trains_and_evaluates(tiny_models, tmp_path, capsys):
    """No generation, judging or pairing section: `prefopt run` trains on the user's pairs and reports the policy
    before and after."""
    data = write([{"prompt": q, "chosen": c, "rejected": r} for q, c, r in QA], tmp_path / "prefs.jsonl")
    ci = yaml.safe_load(CI_RECIPE.read_text())
    recipe = {
        "name": "own-data",
        "output_dir": str(tmp_path / "runs"),
        "world": {"models": {"policy": ci["world"]["models"]["policy"]}},
        "training": {"model": "world:policy", "dataset": {"path": str(data)}, "trl": ci["training"]["trl"]},
        "evaluation": {"num_problems": 8, "max_new_tokens": 40, "batch_size": 8},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 0
    table = capsys.readouterr().out
    assert "| policy (before DPO) |" in table and "| policy (after DPO) |" in table and "generator delta" not in table
    del recipe["training"]["dataset"]
    path.write_text(yaml.safe_dump(recipe))
    assert main(["plan", str(path)]) == 2
    assert (
        "generation: list at least one generator under generators (or set training.dataset" in capsys.readouterr().err
    )
