"""`prefopt eval-harness`: lm-evaluation-harness (the `harness` extra) on a real tiny model, offline, with a task YAML
reading a local JSON file; its accuracy against greedy decoding with transformers computed here."""

import json
import logging
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefopt.cli import main
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import CI_RECIPE

TASK = """task: tiny_arith
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{problem}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: ["</s>"], do_sample: false, max_gen_toks: 40}}
filter_list:
  - name: final
    filter:
      - {{function: regex, regex_pattern: "\\\\. =(-?\\\\d+)\\\\s*$"}}
      - {{function: take_first}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""
FINAL = re.compile(r"\. =(-?\d+)\s*$")  # the tiny world's closing '. =n'


def greedy_answers(model_dir: str, problems: list[str]) -> list[str | None]:
    """Each problem asked alone through the chat template, greedy, 40 new tokens at most: its final answer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    answers = []
    for problem in problems:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        final = FINAL.search(text.strip())
        answers.append(final.group(1) if final else None)
    return answers


def test_lm_eval_scores_a_local_task_as_computed_directly(tiny_models, tmp_path, capsys, caplog):
    rows = sample_problems(48, Difficulty(min_ops=1, max_ops=1), seed=5)
    data = tmp_path / "arith.json"
    data.write_text(json.dumps([{"problem": r["problem"], "answer": r["answer"]} for r in rows]))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_arith.yaml").write_text(TASK.format(data=data))
    argv = ["eval-harness", str(CI_RECIPE), "--output-dir", str(tmp_path / "runs"), "--model", tiny_models["strong"]]
    argv += ["--tasks", "tiny_arith", "--include-path", str(tasks), "--backend", "hf", "--batch-size", "16"]

    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tiny_arith" in printed and "exact_match" in printed
    written = printed.strip().splitlines()[-1].removeprefix("Written: ")
    results = json.loads(open(written).read())
    accuracy = results["results"]["tiny_arith"]["exact_match,final"]

    direct = greedy_answers(tiny_models["strong"], [r["problem"] for r in rows])
    correct = [a == r["answer"] for a, r in zip(direct, rows)]
    assert 0 < sum(correct) < len(rows)  # some right, some wrong: the comparison means something
    assert accuracy == pytest.approx(sum(correct) / len(rows), abs=1e-12)
    samples = [json.loads(line) for line in open(written.replace("lm_eval_results.json", "samples_tiny_arith.jsonl"))]
    by_doc = {s["doc"]["problem"]: s for s in samples}
    for row, answer in zip(rows, direct):  # per problem: the same answer, extracted the same way
        assert by_doc[row["problem"]]["filtered_resps"][0] == (answer or "[invalid]")
        assert by_doc[row["problem"]]["exact_match"] == float(answer == row["answer"])

    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(argv) == 0  # the same model, tasks and options: the cached results, printed again
    assert capsys.readouterr().out == printed and "skipped" in caplog.text


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--tasks", "gsm8kk"], ["--tasks gsm8kk", "did you mean 'gsm8k'"]),
        (["--tasks", "gsm8k", "--limit", "0"], ["--limit 0"]),
        (["--tasks", "gsm8k", "--include-path", "/nonexistent/tasks"], ["--include-path", "/nonexistent/tasks"]),
    ],
)
def test_bad_harness_options_are_one_line(tmp_path, capsys, extra, names):
    argv = ["eval-harness", str(CI_RECIPE), "--output-dir", str(tmp_path), "--model", str(tmp_path), "--backend", "hf"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prefopt: error:") and "\n" not in err and all(n in err for n in names), err


def test_the_default_model_is_the_trained_policy_once_trained(tmp_path, capsys):
    argv = ["eval-harness", str(CI_RECIPE), "--output-dir", str(tmp_path), "--tasks", "gsm8k", "--backend", "hf"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trained policy is not there yet" in err and "--model" in err
