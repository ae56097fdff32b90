"""The pairs stage on real judged candidates: strategies from the CLI, `prefopt report pairs`, margin_bayes's
proxy (a real TRL DPO run under accelerate launch), KTO examples into KTO training, reward-augmented prompts."""

import dataclasses
import json

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.cache import is_complete
from prefopt.cli import main
from prefopt.errors import ConfigError
from prefopt.pairing.config import KTOLabelConfig, MarginBayesConfig, ProxyConfig, RewardAugmentConfig
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe

from conftest import CI_RECIPE, ci_stage

PNG = b"\x89PNG\r\n\x1a\n"


def recipe_in(run_dir, **pairing):
    recipe = load_recipe(CI_RECIPE)
    return dataclasses.replace(recipe, output_dir=str(run_dir), pairing=dataclasses.replace(recipe.pairing, **pairing))


def test_report_pairs_from_a_recipe_and_from_a_directory(run_dir, tmp_path, capsys):
    assert main(["report", "pairs", str(CI_RECIPE), "--output-dir", str(run_dir), "--output", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "Strategy: `generator_delta + sample_delta(aggregate:top_fraction=0.5)`" in printed
    assert "| strong | weak |" in printed
    for name in ("margins.png", "generators.png", "lengths.png"):
        assert (tmp_path / "r" / name).read_bytes()[:8] == PNG
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    pairs_dir = ci_stage(run_dir, "pairs")
    assert summary["summary"]["pairs"] == len(load_from_disk(str(pairs_dir / "data")))
    assert summary["build"]["pairs_kept"] == summary["summary"]["pairs"]
    assert main(["report", "pairs", str(pairs_dir), "--output", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "summary.md").read_text() == (tmp_path / "r" / "summary.md").read_text()
    assert main(["report", "pairs", str(tmp_path / "nothing")]) == 2
    assert "nothing: no dataset here" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["max_min", "max_random", "sweet_spot"])
def test_within_prompt_strategies_from_the_cli(run_dir, strategy):
    overrides = [f"pairing.strategy={strategy}", "pairing.filter.top_fraction=null"]
    assert main(["pairs", str(CI_RECIPE), "--output-dir", str(run_dir), *(f"--set={o}" for o in overrides)]) == 0
    pipeline = Pipeline(dataclasses.replace(load_recipe(CI_RECIPE, overrides), output_dir=str(run_dir)))
    out = pipeline.stage_dir("pairs", pipeline.pairs_key())
    stats = json.loads((out / "stats.json").read_text())
    pairs = load_from_disk(str(out / "data")).flatten().to_pandas()
    # 24 prompts x 4 candidates, one pair per prompt with two judged candidates, minus ties
    assert stats["pairs_built"] == 24 - stats["prompts_too_few_candidates"]
    assert len(pairs) == stats["pairs_built"] - stats["ties"]
    assert (pairs["chosen_score"] > pairs["rejected_score"]).all() and pairs["strategy"].str.startswith(strategy).all()
    assert (out / "report" / "positions.png").read_bytes()[:8] == PNG


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """log p(completion | prompt) under the chat template, computed directly with transformers."""
    messages = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tokenizer(full_text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logp[len(prompt_ids) - 1 :].sum())


def test_margin_bayes_trains_the_proxy_and_scores_every_pair(run_dir, tiny_models):
    proxy = ProxyConfig(
        model="world:policy",
        seed_pairs=12,
        batch_size=8,
        trl={"beta": 0.1, "learning_rate": 1e-3, "max_steps": 3, "per_device_train_batch_size": 4, "max_length": 64},
    )
    recipe = recipe_in(run_dir, margin_bayes=MarginBayesConfig(top_fraction=0.25, min_tail=5, proxy=proxy))
    pipeline = Pipeline(recipe)
    out = pipeline.pairs()
    [proxy_dir] = [o.path for o in pipeline.outcomes if o.name == "proxy"]
    assert is_complete(proxy_dir) and len(load_from_disk(str(proxy_dir / "seed_pairs" / "data"))) == 12
    margins = load_from_disk(str(proxy_dir / "data")).to_pandas().set_index("pair_id")
    stats = json.loads((out / "stats.json").read_text())
    base = stats["pairs_kept"] + stats["dropped_by_margin_bayes"]
    assert len(margins) == base and stats["pairs_kept"] == -(-base // 4)
    # The implicit margin is the trained proxy's log-ratio against its SFT start, chosen minus rejected.
    trained = AutoModelForCausalLM.from_pretrained(proxy_dir / "train" / "model")
    reference = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["policy"])
    pairs = load_from_disk(str(out / "data")).to_pandas()
    for _, pair in pairs.head(3).iterrows():
        ratio = {
            side: completion_logprob(trained, tokenizer, pair["prompt"], pair[side])
            - completion_logprob(reference, tokenizer, pair["prompt"], pair[side])
            for side in ("chosen", "rejected")
        }
        assert margins.loc[pair["pair_id"], "implicit_margin"] == pytest.approx(
            ratio["chosen"] - ratio["rejected"], abs=1e-3
        )
        assert pair["implicit_margin"] == pytest.approx(margins.loc[pair["pair_id"], "implicit_margin"])
    assert (out / "report" / "margin_bayes.png").read_bytes()[:8] == PNG
    # Another selection over the same pairs reuses the proxy.
    again = Pipeline(
        recipe_in(run_dir, margin_bayes=dataclasses.replace(recipe.pairing.margin_bayes, top_fraction=0.5))
    )
    again.pairs()
    assert [o.status for o in again.outcomes if o.name in ("proxy", "pairs")] == ["cached", "ran"]


def test_kto_examples_train_the_kto_trainer(run_dir):
    judged = ci_stage(run_dir, "judge")
    scores = load_from_disk(str(judged / "data")).to_pandas()["aggregate"]
    middle = float(scores.min() + scores.max()) / 2  # both labels occur
    recipe = load_recipe(CI_RECIPE)
    recipe = dataclasses.replace(
        recipe,
        output_dir=str(run_dir),
        pairing=dataclasses.replace(
            recipe.pairing,
            strategy="kto_unpaired",
            kto=KTOLabelConfig(desirable_min=middle),
            filter=dataclasses.replace(recipe.pairing.filter, top_fraction=None),
        ),
        training=dataclasses.replace(
            recipe.training,
            method="kto",
            trl={**recipe.training.trl, "auto_class_balance": True, "score_weighting": True},
        ),
    )
    pipeline = Pipeline(recipe)
    pairs_dir = pipeline.pairs()
    examples = load_from_disk(str(pairs_dir / "data"))
    stats = json.loads((pairs_dir / "stats.json").read_text())
    assert len(examples) == stats["examples_kept"] == 24 * 4 - stats["unjudged_candidates"]
    assert sum(examples["label"]) == stats["desirable"] > 0
    assert (pairs_dir / "report" / "scores.png").read_bytes()[:8] == PNG
    out = pipeline.train()
    assert (out / "model" / "model.safetensors").is_file()


def test_a_recipe_that_leaves_no_pairs_gets_a_one_line_error(run_dir, capsys):
    args = ["pairs", str(CI_RECIPE), "--output-dir", str(run_dir), "--set", "pairing.filter.min_gap=5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "prefopt: error: no pairs left after pairing and filtering" in err and "Traceback" not in err


def test_an_unknown_strategy_is_refused_at_load_with_the_valid_names():
    with pytest.raises(ConfigError) as err:
        load_recipe(CI_RECIPE, ["pairing.strategy=sweetspot"])
    assert str(err.value) == (
        f"{CI_RECIPE}: pairing.strategy: unknown pair strategy 'sweetspot' (did you mean "
        "'sweet_spot'?); expected one of ['generator_delta', 'kto_unpaired', 'max_min', "
        "'max_random', 'sweet_spot']"
    )


def test_a_dpo_recipe_refuses_kto_examples():
    recipe = load_recipe(CI_RECIPE)
    with pytest.raises(ValueError, match="makes unpaired examples: it must be 'kto'"):
        dataclasses.replace(
            recipe,
            pairing=dataclasses.replace(
                recipe.pairing,
                strategy="kto_unpaired",
                filter=dataclasses.replace(recipe.pairing.filter, top_fraction=None),
            ),
        )


def test_reward_augmented_pairs_reach_trl_with_their_system_prompt(run_dir, tiny_models, tmp_path):
    from prefopt.training.data import to_conversational
    from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer

    from conftest import trainer_config

    recipe = recipe_in(
        run_dir,
        reward_augmented=RewardAugmentConfig(
            template="S{score} of {low}-{high}", score_range=[0.0, 1.0], target_range=[1.0, 5.0], decimals=0
        ),
    )
    pairs = load_from_disk(str(Pipeline(recipe).pairs() / "data"))
    assert set(pairs["system"]) <= {f"S{i} of 1-5" for i in range(1, 6)}
    trainer = PrefDPOTrainer(
        model=tiny_models["policy"],
        args=trainer_config(PrefDPOConfig, tmp_path),
        train_dataset=to_conversational(pairs),
        processing_class=AutoTokenizer.from_pretrained(tiny_models["policy"]),
    )
    tokenizer = trainer.processing_class
    first = trainer.train_dataset[0]
    assert tokenizer.decode(first["prompt_ids"]) == f"{pairs[0]['system']}\nQ:{pairs[0]['prompt']}\nA:"
