"""The policy as TRL users set it: trl.ModelConfig fields (dtype, attention, LoRA through peft), a chat-template
override, pad/eos handling; LoRA results saved as adapters that evaluation loads."""

import importlib.util
import json
import logging
import shutil

import pytest
import torch
import yaml
from datasets import Dataset
from peft import AutoPeftModelForCausalLM
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.engines.base import SamplingParams
from prefopt.engines.transformers import TransformersEngine
from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe
from prefopt.training.dpo_trainer import PrefDPOTrainer
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import CI_RECIPE

# The tiny world's template with other role markers: every character is in the character-level vocabulary.
TEMPLATE = (
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}USER[{{ m['content'] }}]"
    "{%- elif m['role'] == 'assistant' -%}BOT[{{ m['content'] }}{{ eos_token }}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}BOT[{%- endif -%}"
)
BASE = {
    "bf16": False,
    "gradient_checkpointing": False,
    "report_to": "none",
    "save_strategy": "no",
    "per_device_train_batch_size": 4,
    "max_length": 64,
    "logging_steps": 1,
    "learning_rate": 1e-2,
    "seed": 0,
}


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    rows = sample_problems(16, Difficulty(min_ops=1, max_ops=2), seed=3)
    out = tmp_path_factory.mktemp("pairs")
    Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": [r["solution"][:-1] + "0" for r in rows],
            "margin": [i / 15 for i in range(16)],
        }
    ).save_to_disk(str(out / "data"))
    return out


@pytest.fixture(scope="module")
def kto_dir(tmp_path_factory):
    rows = sample_problems(12, Difficulty(min_ops=1, max_ops=2), seed=4)
    good = [i % 4 != 3 for i in range(12)]
    out = tmp_path_factory.mktemp("kto")
    Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "completion": [r["solution"] if g else r["solution"][:-1] + "0" for r, g in zip(rows, good)],
            "label": good,
            "score": [0.9 if g else 0.1 for g in good],
        }
    ).save_to_disk(str(out / "data"))
    return out


def write_config(tmp_path, **fields):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**BASE, "output_dir": str(tmp_path / "out"), **fields}))
    return str(path)


def changed_weights(base_dir, merged) -> set[str]:
    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    return {name for name, value in merged.state_dict().items() if not torch.equal(value, base[name])}


def test_lora_dpo_through_the_entry_point_trains_only_the_adapter_saves_it_and_it_generates(
    pairs_dir, tiny_models, tmp_path
):
    from prefopt.training.dpo import main

    policy = tiny_models["policy"]
    before = tmp_path / "base.safetensors"
    shutil.copy(f"{policy}/model.safetensors", before)
    main(
        [
            "--config",
            write_config(
                tmp_path,
                pairs_path=str(pairs_dir),
                model_name_or_path=policy,
                max_steps=3,
                use_peft=True,
                lora_r=4,
                lora_alpha=8,
                lora_target_modules=["q_proj", "v_proj"],
            ),
        ]
    )
    final = tmp_path / "out" / "model"
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["base_model_name_or_path"]) == (4, 8, policy)
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    weights = load_file(str(final / "adapter_model.safetensors"))
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if ".lora_B." in k)  # B starts at zero: it trained
    assert load_file(str(before)).keys() == load_file(f"{policy}/model.safetensors").keys()
    assert all(torch.equal(v, load_file(f"{policy}/model.safetensors")[k]) for k, v in load_file(str(before)).items())
    summary = json.loads((tmp_path / "out" / "model_summary.json").read_text())
    assert summary["adapter"] is True and summary["base_model"] == policy and summary["dtype"] == "float32"
    assert 0 < summary["trainable_parameters"] < summary["parameters"] / 10

    merged = AutoPeftModelForCausalLM.from_pretrained(str(final)).merge_and_unload()
    changed = changed_weights(policy, merged)
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed)

    engine = TransformersEngine(str(final))  # evaluation's engine loads the adapter directory over its base
    try:
        prompt = sample_problems(1, Difficulty(min_ops=1, max_ops=1), seed=9)[0]["problem"]
        text = engine.generate([prompt], SamplingParams(n=1, temperature=0.0, max_new_tokens=20))[0][0].text
        enc = engine.tokenizer(
            engine.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            ),
            return_tensors="pt",
            add_special_tokens=False,
        )
        assert torch.allclose(engine.model(**enc).logits, merged(**enc).logits, atol=1e-5)
    finally:
        engine.close()
    assert text


def test_lora_kto_with_dtype_and_attention_through_the_entry_point(kto_dir, tiny_models, tmp_path):
    from prefopt.training.kto import main

    policy = tiny_models["policy"]
    main(
        [
            "--config",
            write_config(
                tmp_path,
                pairs_path=str(kto_dir),
                model_name_or_path=policy,
                max_steps=2,
                use_peft=True,
                lora_r=4,
                lora_alpha=8,
                lora_target_modules="all-linear",
                dtype="bfloat16",
                attn_implementation="eager",
            ),
        ]
    )
    summary = json.loads((tmp_path / "out" / "model_summary.json").read_text())
    assert summary["adapter"] is True
    assert (summary["dtype"], summary["attn_implementation"]) == ("bfloat16", "eager")
    adapter = json.loads((tmp_path / "out" / "model" / "adapter_config.json").read_text())
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    merged = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "out" / "model")).merge_and_unload()
    assert changed_weights(policy, merged)


class Capturing(PrefDPOTrainer):
    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        Capturing.made.append(self)


def test_dtype_attention_and_the_chat_template_reach_the_trainer(pairs_dir, tiny_models, tmp_path):
    from prefopt.training.dpo import DPOScriptArguments, load_pairs
    from prefopt.training.dpo_trainer import PrefDPOConfig
    from prefopt.training.entry import run_entry

    template_file = tmp_path / "chat.jinja"
    template_file.write_text(TEMPLATE)
    config = write_config(
        tmp_path,
        pairs_path=str(pairs_dir),
        model_name_or_path=tiny_models["policy"],
        max_steps=1,
        attn_implementation="eager",
        dtype="float16",
        chat_template=str(template_file),
    )
    run_entry(["--config", config], "dpo", DPOScriptArguments, PrefDPOConfig, Capturing, load_pairs)
    trainer = Capturing.made.pop()
    assert trainer.model.dtype == torch.float16 and trainer.model.config._attn_implementation == "eager"
    assert trainer.ref_model.dtype == torch.float16
    tok = trainer.processing_class
    row = trainer.train_dataset[0]
    prompt = tok.decode(row["prompt_ids"])
    assert prompt.startswith("USER[") and prompt.endswith("]BOT[") and "Q:" not in prompt
    assert tok.decode(row["chosen_ids"]).endswith("</s>")
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    assert saved.chat_template == TEMPLATE  # the trained policy renders as it was trained


def test_the_engine_sends_the_model_the_overridden_template(tiny_models, tmp_path, monkeypatch):
    engine = TransformersEngine(tiny_models["policy"], chat_template=TEMPLATE)
    sent = []
    generate = engine.model.generate
    monkeypatch.setattr(engine.model, "generate", lambda **kw: sent.append(kw["input_ids"]) or generate(**kw))
    try:
        engine.generate(["1+2=", "3*4="], SamplingParams(n=1, temperature=0.0, max_new_tokens=4), system=None)
    finally:
        engine.close()
    texts = [t.replace("<pad>", "") for t in engine.tokenizer.batch_decode(sent[0])]
    assert texts == ["USER[1+2=]BOT[", "USER[3*4=]BOT["]


@pytest.mark.parametrize(
    "model_args, expected",
    [
        ({"lora_rr": 4}, "training.model_args.lora_rr: unknown field of trl.ModelConfig (did you mean 'lora_r'?"),
        (
            {"use_peft": True, "load_in_4bit": True},
            "training.model_args.load_in_4bit: needs the bitsandbytes package (pip install bitsandbytes)"
            if importlib.util.find_spec("bitsandbytes") is None  # checked first, without torch
            else "training.model_args.load_in_4bit: quantized loading (bitsandbytes) needs a CUDA GPU; this machine has none",
        ),
        (
            {"dtype": "bf16"},
            "training.model_args.dtype: expected one of ['auto', 'bfloat16', 'float16', 'float32'], got 'bf16'",
        ),
        (
            {"attn_implementation": "spda"},
            "training.model_args.attn_implementation: unknown attention 'spda' (did you mean 'sdpa'?",
        ),
        (
            {"trust_remote_code": True},
            "training.model_args.trust_remote_code: not a model field here (set "
            "training.trl.trust_remote_code instead)",
        ),
        ({"use_peft": True, "lora_task_type": "CAUSAL"}, "training.model_args: Invalid task type: 'CAUSAL'"),
        ({"lora_r": "four"}, "training.model_args.lora_r: expected an integer, got 'four'"),
    ],
)
@pytest.mark.skipif(torch.cuda.is_available(), reason="quantization is refused on CPU machines only")
def test_bad_model_fields_fail_at_recipe_load_in_one_line(tmp_path, model_args, expected):
    recipe = yaml.safe_load(CI_RECIPE.read_text())
    recipe["training"]["model_args"] = model_args
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as err:
        load_recipe(tmp_path / "recipe.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'recipe.yaml'}: training.")


def test_recipe_model_block_and_template_file_reach_the_flat_train_config(tmp_path, run_dir, tiny_models):
    from prefopt.training.launch import write_train_config

    from conftest import ci_stage

    (tmp_path / "chat.jinja").write_text(TEMPLATE)
    recipe = yaml.safe_load(CI_RECIPE.read_text())
    recipe["training"].update(
        model_args={"use_peft": True, "lora_r": 4, "lora_target_modules": "all-linear"},
        chat_template=str(tmp_path / "chat.jinja"),
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    training = load_recipe(tmp_path / "recipe.yaml").training
    assert training.chat_template == TEMPLATE  # the file's text: the stage key follows edits to it
    pairs, policy = ci_stage(run_dir, "pairs"), tiny_models["policy"]  # the plan counts the pairs' tokens
    flat = yaml.safe_load(write_train_config(training, pairs, policy, tmp_path / "out").read_text())
    assert (flat["use_peft"], flat["lora_r"], flat["lora_target_modules"], flat["chat_template"]) == (
        True,
        4,
        ["all-linear"],
        TEMPLATE,
    )


@pytest.mark.parametrize(
    "template, expected",
    [
        ("missing.jinja", "training.chat_template: .jinja file not found (given 'missing.jinja')"),
        ("Q: plain text", "training.chat_template: neither a Jinja template nor a .jinja file"),
        ("{% for m in messages %}{{ m }}", "training.chat_template: the chat template does not compile"),
    ],
)
def test_bad_chat_templates_fail_at_recipe_load(tmp_path, template, expected):
    recipe = yaml.safe_load(CI_RECIPE.read_text())
    recipe["training"]["chat_template"] = template
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError) as err:
        load_recipe(tmp_path / "recipe.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def tokenizer_copy(src, dst, **changes):
    """A copy of a tiny model with its tokenizer changed (``chat_template=None`` removes the template)."""
    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    for name, value in changes.items():
        setattr(tok, name, value)
    (dst / "chat_template.jinja").unlink()
    tok.save_pretrained(dst)
    return str(dst)


def test_a_tokenizer_without_chat_template_fails_before_launch_and_one_given_fixes_it(pairs_dir, tiny_models, tmp_path):
    from prefopt.training.config import TrainingConfig
    from prefopt.training.launch import launch_training

    policy = tokenizer_copy(tiny_models["policy"], tmp_path / "bare", chat_template=None)
    with pytest.raises(ConfigError) as err:
        launch_training(TrainingConfig(), pairs_dir, policy, tmp_path / "out")
    assert str(err.value) == (
        f"training.chat_template: {policy}: its tokenizer has no chat template (given none; "
        "expected a Jinja string or a .jinja file)"
    )
    assert not (tmp_path / "out").exists()  # refused before anything launched
    from prefopt.training.entry import load_policy_tokenizer

    assert load_policy_tokenizer(policy, TEMPLATE, "training.chat_template").chat_template == TEMPLATE


def test_a_missing_pad_token_becomes_eos_and_a_missing_eos_is_an_error(tiny_models, tmp_path, caplog):
    from prefopt.training.entry import load_policy_tokenizer

    no_pad = tokenizer_copy(tiny_models["policy"], tmp_path / "no_pad", pad_token=None)
    with caplog.at_level(logging.INFO, logger="prefopt.training.entry"):
        tok = load_policy_tokenizer(no_pad, TEMPLATE, "training.chat_template")
    assert tok.pad_token == tok.eos_token == "</s>" and "padding with its eos token '</s>'" in caplog.text
    no_eos = tokenizer_copy(tiny_models["policy"], tmp_path / "no_eos", eos_token=None)
    with pytest.raises(ConfigError, match=r"^training.model: .*no_eos: its tokenizer has no eos token"):
        load_policy_tokenizer(no_eos, TEMPLATE, "training.chat_template")


def test_a_lora_recipe_trains_an_adapter_through_the_train_stage_and_evaluates_it(run_dir, tmp_path):
    from prefopt.cache import is_complete
    from prefopt.cli import main
    from prefopt.evaluation.accuracy import evaluate_model

    from conftest import ci_stage

    out = tmp_path / "train"
    lora = "training.model_args={use_peft: true, lora_r: 4, lora_alpha: 8, lora_target_modules: all-linear}"
    assert (
        main(["train", str(CI_RECIPE), "--input", str(ci_stage(run_dir, "pairs")), "--output", str(out), "--set", lora])
        == 0
    )
    assert is_complete(out) and (out / "model" / "adapter_config.json").is_file()
    manifest = json.loads((out / "_prefopt_done.json").read_text())
    assert manifest["config"]["model_args"]["use_peft"] is True
    assert json.loads((out / "model_summary.json").read_text())["adapter"] is True
    recipe = load_recipe(CI_RECIPE)
    predictions, summary = evaluate_model(str(out / "model"), {"tiny_world": recipe.world}, recipe.evaluation)
    assert len(predictions) == 32 and set(summary) == {"in_domain", "out_of_domain"}
