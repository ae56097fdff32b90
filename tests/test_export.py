"""``prefopt export pairs | model`` and ``prefopt eval --model``: files that load and train elsewhere."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import load_dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.cli import main
from prefopt.recipe import load_recipe

from conftest import CI_RECIPE, ci_stage, trainer_config


def export(*args: str) -> int:
    return main(["export", *map(str, args)])


def stock_dpo_trains(data, model_dir: str, tmp_path) -> list[dict]:
    """Two steps of stock ``trl.DPOTrainer`` on ``data``; the log of each step."""
    from trl import DPOConfig, DPOTrainer

    args = trainer_config(DPOConfig, tmp_path / "stock", max_steps=2, per_device_train_batch_size=2)
    trainer = DPOTrainer(
        model=model_dir, args=args, train_dataset=data, processing_class=AutoTokenizer.from_pretrained(model_dir)
    )
    trainer.train()
    return [log for log in trainer.state.log_history if "loss" in log]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_exported_pairs_load_and_train_with_stock_dpo(run_dir, tiny_models, tmp_path, fmt):
    out = tmp_path / "export"
    assert export("pairs", CI_RECIPE, "--output-dir", run_dir, "--format", fmt, "--output", out) == 0
    pairs_dir = ci_stage(run_dir, "pairs")
    source = load_from_disk(str(pairs_dir / "data"))
    data = load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(out / f"train.{fmt}"), split="train")
    assert len(data) == len(source)
    assert data.column_names[:5] == ["pair_id", "prompt_id", "prompt", "chosen", "rejected"]
    assert isinstance(data[0]["prompt"], str)  # no system message: TRL's standard (plain text) format
    assert data["margin"] == source["margin"]  # the judged gap, exactly
    assert data["chosen_scores"] == source["chosen_scores"]
    card = (out / "README.md").read_text()
    stats = json.loads((pairs_dir / "stats.json").read_text())
    assert f"`{stats['strategy']}`" in card and "`tiny_world_verifier`" in card and "`strong` (world:strong)" in card
    assert f"| dropped_by_filter | {stats['dropped_by_filter']} |" in card
    assert f"| pairs_kept | {stats['pairs_kept']} |" in card and f"path: train.{fmt}" in card
    assert (out / "gap_histogram.png").stat().st_size > 0
    logs = stock_dpo_trains(data, tiny_models["policy"], tmp_path)
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(log["loss"])) for log in logs)


def test_pairs_with_a_system_message_export_conversational(run_dir, tiny_models, tmp_path):
    pairs = load_from_disk(str(ci_stage(run_dir, "pairs") / "data"))
    systems = ["Answer step by step." if i % 2 else None for i in range(len(pairs))]
    given = tmp_path / "pairs_with_system"
    pairs.add_column("system", systems).save_to_disk(str(given))
    out = tmp_path / "export"
    assert export("pairs", given, "--output", out) == 0
    data = load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert "system" not in data.column_names
    assert data[1]["prompt"] == [
        {"role": "system", "content": "Answer step by step."},
        {"role": "user", "content": pairs[1]["prompt"]},
    ]
    assert data[0]["prompt"] == [{"role": "user", "content": pairs[0]["prompt"]}]
    assert data[0]["chosen"] == [{"role": "assistant", "content": pairs[0]["chosen"]}]
    card = (out / "README.md").read_text()
    assert "conversational" in card and "unknown (no stats.json)" in card and "`strong`" in card
    assert len(stock_dpo_trains(data, tiny_models["policy"], tmp_path)) == 2


def test_kto_examples_export_unpaired(run_dir, tmp_path):
    from prefopt.pipeline import Pipeline

    recipe = load_recipe(
        CI_RECIPE,
        [
            "pairing.strategy=kto_unpaired",
            "pairing.filter.top_fraction=null",
            "pairing.kto.desirable_min=0.3",
            "training.method=kto",
        ],
    )
    pipeline = Pipeline(dataclasses.replace(recipe, output_dir=str(run_dir)))
    pairs_dir = pipeline.pairs()
    out = tmp_path / "export"
    assert export("pairs", pairs_dir, "--format", "parquet", "--output", out) == 0
    data = load_dataset("parquet", data_files=str(out / "train.parquet"), split="train")
    source = load_from_disk(str(pairs_dir / "data"))
    assert {"prompt", "completion", "label", "score"} <= set(data.column_names)
    assert data["label"] == source["label"] and data["score"] == source["score"]
    card = (out / "README.md").read_text()
    stats = json.loads((pairs_dir / "stats.json").read_text())
    assert "KTO examples" in card and f"| dropped_between_thresholds | {stats['dropped_between_thresholds']} |" in card
    assert (out / "score_histogram.png").is_file()


def test_export_refuses_a_non_empty_output(run_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert export("pairs", ci_stage(run_dir, "pairs"), "--output", tmp_path / "taken") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prefopt: error: --output") and "not an empty directory" in err and "\n" not in err


def test_exported_model_reloads_and_generates(run_dir, tmp_path):
    out = tmp_path / "model"
    assert export("model", CI_RECIPE, "--output-dir", run_dir, "--output", out) == 0
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    trained = AutoModelForCausalLM.from_pretrained(ci_stage(run_dir, "train") / "model")
    for (name, ours), (_, theirs) in zip(model.state_dict().items(), trained.state_dict().items()):
        assert torch.equal(ours, theirs), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+3"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]
    card = (out / "README.md").read_text()
    results = json.loads((run_dir / "results.json").read_text())["accuracy"]
    assert "`world:policy`" in card and "| method | DPO |" in card and "`loss_type`: ['sigmoid']" in card
    assert "| policy (after DPO) |" in card  # the recipe's results table, from its finished evaluations
    assert f"{100 * results['policy (after DPO)']['in_domain']['accuracy']:.1f}%" in card


def lora_train_dir(model_dir: str, root):
    """A train directory whose model/ is a LoRA adapter (non-zero, so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    (root / "model").mkdir(parents=True)
    peft_model.save_pretrained(root / "model")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(root / "model")
    return peft_model.eval()


def test_lora_adapter_exports_as_is_or_merged(tiny_models, tmp_path, capsys):
    from peft import AutoPeftModelForCausalLM

    peft_model = lora_train_dir(tiny_models["policy"], tmp_path / "train")
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        expected = peft_model(ids).logits

    adapter = tmp_path / "adapter"
    assert export("model", tmp_path / "train", "--output", adapter) == 0
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists() and (adapter / "generation_config.json").is_file()
    assert "library_name: peft" in (adapter / "README.md").read_text()
    with torch.no_grad():
        assert torch.allclose(AutoPeftModelForCausalLM.from_pretrained(adapter)(ids).logits, expected, atol=1e-5)

    merged = tmp_path / "merged"
    assert export("model", tmp_path / "train", "--merge-lora", "--output", merged) == 0
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(merged)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, expected, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_models["policy"])(ids).logits
    assert not torch.allclose(base, expected, atol=1e-3)  # the adapter did change the model
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4
    assert AutoTokenizer.from_pretrained(merged).chat_template is not None

    assert export("model", merged, "--merge-lora", "--output", tmp_path / "again") == 2
    assert "no LoRA adapter" in capsys.readouterr().err


def test_push_to_hub_uploads_the_export(run_dir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, **kw):
        files = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        calls.append(("upload", kw["repo_id"], {**kw, "files": files}))
        return "https://huggingface.co/datasets/me/pairs/commit/0"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "export"
    assert export("pairs", ci_stage(run_dir, "pairs"), "--output", out, "--push-to-hub", "me/pairs") == 0
    (_, repo, create), (_, repo2, upload) = calls
    assert repo == repo2 == "me/pairs" and create["repo_type"] == upload["repo_type"] == "dataset"
    assert upload["folder_path"] == str(out) and upload["files"] == ["README.md", "gap_histogram.png", "train.jsonl"]
    assert "Uploaded to me/pairs" in capsys.readouterr().out


def test_eval_any_model_prints_its_row_and_is_cached(run_dir, tiny_models, capsys):
    strong = tiny_models["strong"]
    args = ["eval", str(CI_RECIPE), "--output-dir", str(run_dir), "--model", strong]
    assert main(args) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {strong} |")]
    results = json.loads((run_dir / "results.json").read_text())["accuracy"]["strong"]  # the same weights
    assert row == [
        f"| {strong} | {100 * results['in_domain']['accuracy']:.1f}% | "
        f"{100 * results['out_of_domain']['accuracy']:.1f}% |"
    ]
    evals = sorted((run_dir / "eval").iterdir())
    assert main(args) == 0  # cached: no new output
    assert sorted((run_dir / "eval").iterdir()) == evals and row[0] in capsys.readouterr().out
    assert main(["eval", str(CI_RECIPE), "--model", "./no/such/model"]) == 2
    assert "no such directory" in capsys.readouterr().err
