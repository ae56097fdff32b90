import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.cache import is_complete
from prefopt.world.models import TinyModelSpec, build_tiny_model, sft_batch
from prefopt.world.tasks import Difficulty, parse_problem, render_solution, sample_problems, solve
from prefopt.world.tokenizer import CHARACTERS, build_tokenizer


def test_steps_apply_left_to_right():
    steps = solve("2+3*4-5")
    assert [s.render() for s in steps] == ["2+3=5", "5*4=20", "20-5=15"]
    assert render_solution(steps) == "2+3=5;5*4=20;20-5=15. =15"


def test_problem_sampling_is_deterministic_and_honours_the_knobs():
    hard = Difficulty(min_ops=4, max_ops=5, min_operand=10, max_operand=20)
    rows = sample_problems(200, hard, seed=7)
    assert rows == sample_problems(200, hard, seed=7)
    assert rows != sample_problems(200, hard, seed=8)
    for row in rows:
        head, terms = parse_problem(row["problem"])
        assert 4 <= len(terms) == row["num_ops"] <= 5
        assert all(10 <= x <= 20 for x in [head] + [t for _, t in terms])
        assert row["answer"] == str(solve(row["problem"])[-1].result)


@pytest.mark.parametrize("bad", [Difficulty, TinyModelSpec])
def test_bad_knobs_are_rejected(bad):
    with pytest.raises(ValueError):
        bad(min_ops=3, max_ops=2) if bad is Difficulty else bad(hidden_size=48)


def test_tokenizer_round_trips_every_character_and_renders_prompts_as_prefixes():
    tok = build_tokenizer()
    text = "".join(CHARACTERS)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    prompt = [{"role": "user", "content": "7*3+4"}]
    rendered = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": "7*3=21"}], tokenize=False)
    assert rendered == "Q:7*3+4\nA:"
    assert full == rendered + "7*3=21" + tok.eos_token


def test_sft_labels_cover_exactly_the_solution_and_eos():
    tok = build_tokenizer()
    rows = [{"problem": "1+2", "solution": "1+2=3. =3"}, {"problem": "9*9-1", "solution": "9*9=81;81-1=80. =80"}]
    batch = sft_batch(tok, rows)
    for i, row in enumerate(rows):
        labelled = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert tok.decode(labelled) == row["solution"] + tok.eos_token


def test_models_are_cached_by_config_hash(tmp_path):
    spec = TinyModelSpec(num_layers=1, hidden_size=32, train_steps=3, batch_size=4, seed=5)
    path = build_tiny_model(spec, tmp_path)
    assert is_complete(path)
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_model(spec, tmp_path) == path and weights.stat().st_mtime_ns == stamp  # no retraining
    other = build_tiny_model(TinyModelSpec(num_layers=1, hidden_size=32, train_steps=3, batch_size=4, seed=6), tmp_path)
    assert other != path
    # Same seed gives the same weights: the build is deterministic.
    again = TinyModelSpec(num_layers=1, hidden_size=32, train_steps=3, batch_size=4, seed=5)
    assert again.cache_key() == spec.cache_key()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.head_dim == 32 and tok.chat_template


def test_a_judge_is_trained_on_the_rows_its_caller_passes_in(tmp_path):
    """The world knows nothing of judging: a judge spec without ``judge_rows`` is refused before anything is written;
    with them it learns from what they return for each step's problems."""
    spec = TinyModelSpec(num_layers=1, hidden_size=32, train_steps=3, batch_size=4, seed=5, task="judge")
    with pytest.raises(ValueError, match=r"judge_rows="):
        build_tiny_model(spec, tmp_path)
    assert not any(tmp_path.iterdir())
    seen = []

    def judge_rows(problems, rng):
        seen.append(len(problems))
        return [{"problem": p["problem"], "solution": "A" if rng.random() < 0.5 else "B"} for p in problems]

    assert is_complete(build_tiny_model(spec, tmp_path, judge_rows=judge_rows)) and seen == [4, 4, 4]


def test_strong_model_beats_weak_model(tiny_models):
    """The generator delta exists: more SFT gives lower loss on held-out problems."""
    tok = build_tokenizer()
    batch = sft_batch(tok, sample_problems(64, Difficulty(min_ops=1, max_ops=2), seed=random.Random(0).randrange(999)))
    losses = {}
    for name in ("strong", "weak"):
        model = AutoModelForCausalLM.from_pretrained(tiny_models[name])
        with torch.no_grad():
            losses[name] = model(**batch).loss.item()
    assert losses["strong"] < losses["weak"] - 0.3
