"""The README's "Your own data" flow, as a user runs it: a JSONL of preference pairs, a local instruct model, LoRA,
a GSM8K-style benchmark file; `prefopt plan`, `prefopt run`, `prefopt export model --merge-lora`."""

import json

import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.cli import main

RECIPE = """
name: my-first-run
output_dir: {out}
training:
  model: {model}                      # a local directory or a hub id
  model_args: {{use_peft: true, lora_r: 8, lora_alpha: 16, lora_target_modules: all-linear}}
  dataset:
    path: {data}
    columns: {{question: prompt, good: chosen, bad: rejected}}
  trl: {{beta: 0.1, learning_rate: 1.0e-3, max_steps: 3, per_device_train_batch_size: 2, max_length: 64}}
evaluation:
  tiny_world: false
  benchmarks: [{{name: gsm8k, path: {bench}, prompt_field: question, answer_field: answer}}]
  max_new_tokens: 24
"""


def test_readme_flow_from_a_jsonl_of_pairs_to_an_exported_lora_model(tiny_models, tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    pairs = [
        ("1+2", "1+2=3. =3", "1+2=4. =4"),
        ("2*3", "2*3=6. =6", "2*3=5. =5"),
        ("4-1", "4-1=3. =3", "4-1=2. =2"),
        ("5+5", "5+5=10. =10", "5+5=11. =11"),
    ]
    data.write_text("".join(json.dumps({"question": q, "good": c, "bad": r}) + "\n" for q, c, r in pairs))
    bench = tmp_path / "gsm8k_test.jsonl"
    bench.write_text("".join(json.dumps({"question": q, "answer": f"{c.split('=')[-1]}"}) + "\n" for q, c, _ in pairs))
    recipe = tmp_path / "my.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "runs", model=tiny_models["policy"], data=data, bench=bench))

    assert main(["plan", str(recipe)]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in plan] == ["train", "eval", "eval"] and all("missing" in p for p in plan)

    assert main(["run", str(recipe)]) == 0
    table = capsys.readouterr().out
    assert "| policy (before DPO) |" in table and "| policy (after DPO) |" in table and "gsm8k" in table
    summary = json.loads(next((tmp_path / "runs" / "train").glob("*/model_summary.json")).read_text())
    assert summary["adapter"] is True

    out = tmp_path / "exported"
    assert main(["export", "model", str(recipe), "--output", str(out), "--merge-lora"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert not (out / "adapter_config.json").exists() and tokenizer.chat_template
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+2"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]
    assert "my-first-run" in (out / "README.md").read_text()
    assert yaml.safe_load(recipe.read_text())["training"]["dataset"]["columns"]["question"] == "prompt"
