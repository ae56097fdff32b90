"""Prompts from the user: a JSONL or Parquet file of chat messages (a system turn, earlier turns) or plain text with a
reference answer goes through `prefopt generate`, `judge` (math_verifier) and `pairs`, and the DPO trainer sees the
chat-templated conversation, system turn included, never a repr. Bad prompt files stop with one line naming the
file, the row and the column, before any model loads."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_from_disk
from test_user_data import A, S, U, write
from test_user_data_training import assert_no_repr, chat, quiet_progress_bars  # noqa: F401 (autouse)
from test_verifiers import tiny_reward_model  # noqa: F401 (a fixture)
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.cli import main
from prefopt.errors import DataError
from prefopt.export import to_trl_format
from prefopt.generation.config import PromptSource
from prefopt.generation.generate import load_prompts
from prefopt.judging.config import RewardModelConfig
from prefopt.judging.judge import items_of
from prefopt.judging.judges.reward_model import RewardModelJudge
from prefopt.pairing.build import build_pairs
from prefopt.pairing.config import GeneratorPair, KTOLabelConfig, PairingConfig, RewardAugmentConfig
from prefopt.schemas import check_training_data
from prefopt.training.data import trl_examples, trl_pairs
from prefopt.training.dpo import DPOScriptArguments, load_pairs
from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
from prefopt.world.config import WorldConfig
from prefopt.world.tasks import sample_problems

from conftest import trainer_config as config

SYSTEM = "Show each step."  # the recipe's system_prompt
OWN_SYSTEM = "Be brief."  # a row's own system turn, which wins

RECIPE = """
name: own-prompts
output_dir: {out}
generation:
  engine: transformers
  batch_size: 4
  prompts: {{source: file, path: {prompts}, prompt_field: messages, reference_field: answer, system_prompt: {system}}}
  generators:
    - {{name: strong, model: {strong}, n: 1, temperature: 0, max_new_tokens: 24}}
    - {{name: weak, model: {weak}, n: 1, temperature: 0, max_new_tokens: 24}}
judging: {{judge: math_verifier, aggregate: correctness}}
pairing: {{generator_pairs: [{{chosen: strong, rejected: weak}}], drop_ties: false}}
training:
  model: {policy}
  trl: {{beta: 0.1, learning_rate: 1.0e-3, max_steps: 2, per_device_train_batch_size: 2, max_length: 128}}
"""


def chat_rows() -> list[dict]:
    """Tiny-world problems as chat prompts: every other one with a system turn of its own, every third one after an
    earlier exchange; the gold answer in a column of its own."""
    problems = sample_problems(6, WorldConfig().in_domain, seed=7)
    rows = []
    for i, p in enumerate(problems):
        turns = [U("1+1"), A("1+1=2. =2")] if i % 3 == 0 else []
        own = [S(OWN_SYSTEM)] if i % 2 == 0 else []
        rows.append({"id": f"q{i}", "messages": own + turns + [U(p["problem"])], "answer": p["answer"]})
    return rows


def expected_conversation(row: dict) -> list[dict]:
    messages = row["messages"]
    return messages if messages[0]["role"] == "system" else [S(SYSTEM), *messages]


def stage_data(root: Path, stage: str):
    (path,) = (root / stage).glob("*/data")
    return load_from_disk(str(path))


def recipe_file(tmp_path: Path, prompts: Path, tiny_models: dict, system: str = SYSTEM) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "runs", prompts=prompts, system=json.dumps(system), **tiny_models))
    return recipe


def test_chat_prompts_flow_from_generation_to_the_trainer(tiny_models, tmp_path):
    rows = chat_rows()
    prompts = write(rows, tmp_path / "prompts.jsonl")
    recipe = recipe_file(tmp_path, prompts, tiny_models)
    for stage in ("generate", "judge", "pairs"):
        assert main([stage, str(recipe)]) == 0, stage

    # candidates keep the conversation; prompt is its last (user) turn, the reference is the answer column's
    candidates = stage_data(tmp_path / "runs", "generate")
    by_id = {r["id"]: r for r in rows}
    assert len(candidates) == 2 * len(rows)
    for cand in candidates:
        row = by_id[cand["prompt_id"]]
        assert cand["prompt_messages"] == expected_conversation(row)
        assert cand["prompt"] == row["messages"][-1]["content"] and cand["reference"] == row["answer"]

    # the generator answered the chat-templated conversation, system turn included (greedy: the same text)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["strong"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["strong"]).eval()
    for cand in candidates.filter(lambda c: c["generator"] == "strong").select(range(2)):
        text = tokenizer.apply_chat_template(cand["prompt_messages"], tokenize=False, add_generation_prompt=True)
        assert text.startswith(cand["prompt_messages"][0]["content"] + "\n")  # the system turn, rendered
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True) == cand["completion"]

    judged = stage_data(tmp_path / "runs", "judge")
    assert set(judged["parse_status"]) == {"ok"} and judged["judge"][0] == "math_verifier"
    assert judged["prompt_messages"] == candidates["prompt_messages"]

    (pairs_dir,) = (tmp_path / "runs" / "pairs").glob("*")
    pairs = load_from_disk(str(pairs_dir / "data"))
    assert len(pairs) == len(rows)
    for pair in pairs:
        assert pair["prompt_messages"] == expected_conversation(by_id[pair["prompt_id"]])

    # what the DPO entry point trains on: TRL's conversational format, which TRL renders with the chat template
    data = load_pairs(DPOScriptArguments(pairs_path=str(pairs_dir), model_name_or_path=tiny_models["policy"]))
    policy_tokenizer = AutoTokenizer.from_pretrained(tiny_models["policy"])
    trainer = PrefDPOTrainer(
        model=tiny_models["policy"],
        args=config(PrefDPOConfig, tmp_path / "out", max_steps=2, max_length=256, per_device_train_batch_size=2),
        train_dataset=data,
        processing_class=policy_tokenizer,
    )
    seen = trainer.train_dataset  # after TRL's own preprocessing
    for pair, row in zip(pairs, seen, strict=True):
        conversation = expected_conversation(by_id[pair["prompt_id"]])
        prompt_text, full_chosen = chat(policy_tokenizer, conversation, [A(pair["chosen"])])
        assert policy_tokenizer.decode(row["prompt_ids"]) == prompt_text
        assert policy_tokenizer.decode(row["prompt_ids"] + row["chosen_ids"]) == full_chosen
        assert prompt_text.startswith(conversation[0]["content"] + "\nQ:")  # the system turn comes first
    assert_no_repr(policy_tokenizer, seen, ["prompt_ids", "chosen_ids", "rejected_ids"])
    trainer.train()
    assert trainer.state.global_step == 2


def test_text_and_message_prompts_from_parquet_with_a_system_prompt(tmp_path):
    text = write([{"question": "1+2", "gold": 3}, {"question": "2*3", "gold": 6}], tmp_path / "text.parquet")
    rows = load_prompts(
        PromptSource(
            source="file", path=str(text), prompt_field="question", reference_field="gold", system_prompt="Hi"
        ),
        WorldConfig(),
    )
    assert [(r["prompt_id"], r["prompt"], r["reference"]) for r in rows] == [
        ("text-000000", "1+2", "3"),
        ("text-000001", "2*3", "6"),
    ]
    assert [r["prompt_messages"] for r in rows] == [[S("Hi"), U("1+2")], [S("Hi"), U("2*3")]]
    plain = load_prompts(PromptSource(source="file", path=str(text), prompt_field="question"), WorldConfig())
    assert [r["prompt_messages"] for r in plain] == [[U("1+2")], [U("2*3")]] and plain[0]["reference"] is None

    messages = write(
        [{"prompt": [S(OWN_SYSTEM), U("1+2")]}, {"prompt": [U("1+1"), A("2"), U("2*3")]}], tmp_path / "chat.parquet"
    )
    rows = load_prompts(PromptSource(source="file", path=str(messages), system_prompt=SYSTEM), WorldConfig())
    assert [r["prompt_messages"] for r in rows] == [[S(OWN_SYSTEM), U("1+2")], [S(SYSTEM), U("1+1"), A("2"), U("2*3")]]
    assert [r["prompt"] for r in rows] == ["1+2", "2*3"]


def test_the_tiny_world_prompts_are_one_user_turn(tmp_path):
    rows = load_prompts(PromptSource(num_prompts=3), WorldConfig())
    assert all(r["prompt_messages"] == [U(r["prompt"])] for r in rows)


GOOD = {"messages": [U("1+2")], "answer": "3"}


@pytest.mark.parametrize(
    "rows, name, expected",
    [
        ([{"question": "1+2", "answer": "3"}], "p.jsonl", "column messages: missing (generation.prompts.prompt_field"),
        ([{"messages": [U("1+2")], "gold": "3"}], "p.parquet", "column answer: missing (generation.prompts.reference_"),
        ([{"messages": 7, "answer": "3"}], "p.parquet", "row 0, column messages: type int (expected text or a list"),
        ([GOOD, GOOD | {"messages": 7}], "p.jsonl", "column messages: values of different types in different rows"),
        ([GOOD, GOOD | {"messages": None}], "p.jsonl", "row 1, column messages: null (expected text or a list of"),
        ([GOOD, GOOD | {"messages": []}], "p.jsonl", "row 1, column messages: an empty list of messages"),
        ([GOOD | {"messages": "  "}], "p.jsonl", "row 0, column messages: empty text"),
        (
            [GOOD, GOOD, GOOD | {"messages": [S("s"), A("a"), U("q")]}],
            "p.parquet",
            "row 2, column messages: roles ['system', 'assistant', 'user'] out of order: turn 1 is assistant",
        ),
        (
            [GOOD | {"messages": [U("q"), A("a")]}],
            "p.jsonl",
            "row 0, column messages: roles ['user', 'assistant']: the prompt ends with an assistant turn",
        ),
        ([GOOD | {"messages": [U("q"), {"role": "user", "content": ""}]}], "p.jsonl", "row 0, column messages: "),
        ([GOOD | {"messages": [{"role": "human", "content": "q"}]}], "p.jsonl", "row 0, column messages: message 0 "),
        ([GOOD | {"answer": [3]}], "p.parquet", "row 0, column answer: type list (expected text, a number or null)"),
        ([GOOD | {"id": "a"}, GOOD | {"id": "a"}], "p.jsonl", "row 1, column id: 'a' is the id of row 0 too"),
    ],
)
def test_bad_prompt_files_stop_with_one_line(rows, name, expected, tiny_models, tmp_path, capsys):
    prompts = write(rows, tmp_path / name)
    recipe = recipe_file(tmp_path, prompts, tiny_models)
    with pytest.raises(DataError, match="^" + str(prompts).replace(".", r"\.")):
        load_prompts(
            PromptSource(source="file", path=str(prompts), prompt_field="messages", reference_field="answer"),
            WorldConfig(),
        )
    assert main(["generate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"prefopt: error: {prompts}: {expected}"), err
    assert not (tmp_path / "runs" / "generate").exists() or not any((tmp_path / "runs" / "generate").iterdir())


def test_a_hub_dataset_of_prompts_is_keyed_by_id_config_split_and_revision(tiny_models, tmp_path, capsys):
    """A Hub id plans without being read (no network): its key follows the id, config, split and revision."""
    recipe = recipe_file(tmp_path, Path("nobody/prompts"), tiny_models)
    text = recipe.read_text()
    keys = []
    for revision in ("abc123", "def456"):
        recipe.write_text(
            text.replace("reference_field: answer,", f"dataset_revision: {revision}, dataset_split: test,")
        )
        assert main(["plan", str(recipe)]) == 0
        keys.append(capsys.readouterr().out.splitlines()[0].split()[1])
    assert keys[0] != keys[1]


CHAT = [S(OWN_SYSTEM), U("1+1"), A("2"), U("2*3")]


def chat_judgments() -> Dataset:
    """Judgments of two prompts (one a conversation, one a lone user turn), a strong and a weak answer to each."""
    conversations = {"c": CHAT, "t": [U("1+2")]}
    return Dataset.from_list(
        [
            {
                "candidate_id": f"{p}/{g}/0",
                "prompt_id": p,
                "prompt": conversations[p][-1]["content"],
                "prompt_messages": conversations[p],
                "reference": None,
                "generator": g,
                "sample_index": 0,
                "completion": f"{g} {p}",
                "scores": {"correctness": score},
                "aggregate": score,
            }
            for p in conversations
            for g, score in (("strong", 1.0), ("weak", 0.0))
        ]
    )


def test_judges_see_the_conversation(tiny_reward_model):  # noqa: F811 (the fixture imported above)
    items = items_of(chat_judgments())
    assert items[0].context == "System: Be brief.\n\nUser: 1+1\n\nAssistant: 2\n\nUser: 2*3"  # what an LLM judge reads
    assert items[0].prompt == "2*3"  # what a verifier reads
    assert items[2].context == "1+2"  # a lone user turn reads as it always did
    judge = RewardModelJudge(tiny_reward_model, RewardModelConfig(model="rm"))
    assert judge.text(items[0]) == "Be brief.\nQ:1+1\nA:2</s>Q:2*3\nA:strong c</s>"  # the chat template, system first
    assert judge.text(items[2]) == "Q:1+2\nA:strong t</s>"
    judge.close()


def test_pairs_and_kto_examples_carry_the_conversation_to_training():
    pairing = PairingConfig(generator_pairs=[GeneratorPair(chosen="strong", rejected="weak")])
    pairs = build_pairs(pairing, chat_judgments()).dataset
    assert dict(zip(pairs["prompt_id"], pairs["prompt_messages"])) == {"c": CHAT, "t": [U("1+2")]}
    checked = check_training_data(pairs, "pairs", "dpo", ["margin"])
    assert trl_pairs(checked, "margin")["prompt"] == [CHAT, [U("1+2")]]
    exported, conversational = to_trl_format(pairs, "pairs")  # `prefopt export pairs`: the conversation, too
    assert (
        conversational and exported["prompt"] == [CHAT, [U("1+2")]] and "prompt_messages" not in exported.column_names
    )
    unpaired = trl_examples(check_training_data(pairs, "pairs", "kto"))
    assert sorted(map(str, unpaired["prompt"])) == sorted(map(str, [CHAT, CHAT, [U("1+2")], [U("1+2")]]))

    kto = build_pairs(
        PairingConfig(strategy="kto_unpaired", kto=KTOLabelConfig(desirable_min=0.75, undesirable_max=0.5)),
        chat_judgments(),
    ).dataset
    examples = trl_examples(check_training_data(kto, "examples", "kto"))
    assert sorted(map(str, examples["prompt"])) == sorted(map(str, [CHAT, CHAT, [U("1+2")], [U("1+2")]]))

    # reward augmentation: a system placement leads the conversation's system turn; a prefix goes into its last turn
    system = build_pairs(
        replace(pairing, reward_augmented=RewardAugmentConfig(score_range=[0.0, 1.0])), chat_judgments()
    )
    rows = trl_pairs(check_training_data(system.dataset, "pairs", "dpo", ["margin"]), "margin")
    first = [p for p in rows["prompt"] if p[-1]["content"] == "2*3"][0]
    assert first[0]["role"] == "system" and first[0]["content"].endswith("\n\n" + OWN_SYSTEM) and first[1:] == CHAT[1:]
    prefix = RewardAugmentConfig(template="Score {score} ({low}-{high}).", placement="prefix", target_range=[0.0, 1.0])
    kept = build_pairs(replace(pairing, reward_augmented=prefix), chat_judgments()).dataset
    assert all(m[-1]["content"] == p for p, m in zip(kept["prompt"], kept["prompt_messages"]))
    assert "Score 1 (0-1).\n\n2*3" in kept["prompt"]


@pytest.mark.parametrize(
    "conversation, expected",
    [
        ([S("s"), U("2*4")], "row 0, column prompt_messages: its last turn is not the text of the prompt column"),
        ([A("a"), U("2*3")], "row 0, column prompt_messages: roles ['assistant', 'user'] out of order"),
        ([], "row 0, column prompt_messages: an empty list of messages"),
    ],
)
def test_a_bad_conversation_in_pairs_is_one_line(conversation, expected):
    pairs = Dataset.from_list([{"prompt": "2*3", "prompt_messages": conversation, "chosen": "6", "rejected": "5"}])
    with pytest.raises(DataError, match=re.escape(f"pairs: {expected}")):
        check_training_data(pairs, "pairs", "dpo")
