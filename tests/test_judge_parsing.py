"""The strict judge-answer parser: a corpus of messy real-world shapes (tests/data/judge_outputs.yaml), adversarial
answers from the audit, and every preset rubric's prompt against its own parser."""

import re
from pathlib import Path

import pytest
import yaml

from prefopt.errors import ConfigError
from prefopt.judging.parsing import (
    MAX_ANSWER_CHARS,
    MAX_JSON_DEPTH,
    MAX_OUTPUT_CHARS,
    ParsedScores,
    dimension_failures,
    final_answer,
    json_objects,
    parse_choice,
    parse_scores,
)
from prefopt.judging.rubrics import PRESETS_DIR, Dimension, Rubric, load_rubric

CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "judge_outputs.yaml").read_text())
PRESETS = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
RUBRICS = {name: load_rubric(name) for name in PRESETS}
RUBRICS["overall5"] = Rubric(
    name="overall5",
    dimensions=[Dimension("overall")],
    pointwise_template="{response}\nScore it from {low} to {high}.",
    scale=[1, 5],
)
RUBRICS["overall10"] = Rubric(
    name="overall10",
    dimensions=[Dimension("overall")],
    pointwise_template="{response}\nScore it from 1 to 10.",
    scale=[1, 10],
    integer=False,
)
FIVE = '"strategy_coherence": 4, "step_coherence": 4, "numerical_precision": 3, "signal_to_noise": 4'


def test_the_corpus_is_large_and_varied():
    assert len(CORPUS["scores"]) >= 30 and len({c["rubric"] for c in CORPUS["scores"]}) == len(RUBRICS)
    assert sum(c["expected"] is None for c in CORPUS["scores"]) >= 8  # failures must be recognised too


@pytest.mark.parametrize("case", CORPUS["scores"], ids=lambda c: f"{c['rubric']}:{c['output'][:30]!r}")
def test_scores_are_parsed_or_the_failure_is_named(case):
    parsed = parse_scores(case["output"], RUBRICS[case["rubric"]])
    if case["expected"] is None:
        assert parsed.scores is None and parsed.status.startswith(case["status"]), parsed
    else:
        assert parsed.status == "ok", parsed
        assert parsed.scores == pytest.approx({k: float(v) for k, v in case["expected"].items()})


@pytest.mark.parametrize(
    "rubric, output, status, failures",
    [
        # keys beside the dimensions are not read, whatever numbers or dimension words they hold
        (
            "reasoning5",
            '{"factuality": 4, "reasoning": "Step 2 is wrong; step coherence: 2", '
            + FIVE.replace('"step_coherence": 4, ', "")
            + "}",
            "missing: step_coherence",
            {"step_coherence": "missing"},
        ),
        (
            "reasoning5",
            '{"factuality": 4, "step_2_coherence_check": 1, ' + FIVE.replace('"step_coherence": 4, ', "") + "}",
            "missing: step_coherence",
            {"step_coherence": "missing"},
        ),
        (
            "reasoning5",
            '{"factuality": "4 (mostly right)", ' + FIVE + "}",
            "not_a_number: factuality",
            {"factuality": "not_a_number"},
        ),
        (
            "reasoning5",
            '{"factuality": [4, 5], ' + FIVE + "}",
            "not_a_number: factuality",
            {"factuality": "not_a_number"},
        ),
        # a lone number in a refusal is not a score
        ("overall10", "I can't rate this response: it has 3 errors.", "no_scores", {}),
        ("overall10", "Sorry, I cannot help with that. 7", "no_scores", {}),
        ("overall5", "I'm unable to grade this; see rule 4.", "no_scores", {}),
        # NaN and infinity are failures of that dimension
        ("reasoning5", '{"factuality": NaN, ' + FIVE + "}", "not_finite: factuality=nan", {"factuality": "not_finite"}),
        (
            "reasoning5",
            '{"factuality": Infinity, ' + FIVE + "}",
            "not_finite: factuality=inf",
            {"factuality": "not_finite"},
        ),
        ("reasoning5", '{"factuality": 1e999, ' + FIVE + "}", "not_finite", {"factuality": "not_finite"}),
        ("reasoning5", '{"factuality": "nan", ' + FIVE + "}", "not_finite", {"factuality": "not_finite"}),
        ("overall10", "Score: nan", "not_finite: overall=nan", {"overall": "not_finite"}),
        # out of the scale, other scales, two values for one dimension
        (
            "reasoning5",
            '{"factuality": 0, ' + FIVE + "}",
            "out_of_range: factuality=0 (scale 1-5)",
            {"factuality": "out_of_range"},
        ),
        (
            "reasoning5",
            '{"factuality": "8/10", ' + FIVE + "}",
            "out_of_range: factuality=8/10 (scale 1-5)",
            {"factuality": "out_of_range"},
        ),
        (
            "reasoning5",
            '{"factuality": 4, "Factuality": 2, ' + FIVE + "}",
            "ambiguous: factuality (4 and 2)",
            {"factuality": "ambiguous"},
        ),
        (
            "overall10",
            "Rating: [[6]]. On reflection, Rating: [[7]]",
            "ambiguous: overall (6 and 7)",
            {"overall": "ambiguous"},
        ),
        # several failures at once: each dimension's own reason
        (
            "tiny_world",
            '{"correctness": 9, "step_accuracy": null}',
            "missing: format; not_a_number: step_accuracy; out_of_range: correctness=9 (scale 1-5)",
            {"format": "missing", "step_accuracy": "not_a_number", "correctness": "out_of_range"},
        ),
    ],
)
def test_adversarial_answers_fail_per_dimension(rubric, output, status, failures):
    parsed = parse_scores(output, RUBRICS[rubric])
    assert parsed.scores is None and parsed.status.startswith(status), parsed
    assert dimension_failures(parsed.status, RUBRICS[rubric].names) == failures  # quality.md counts from the status


@pytest.mark.parametrize(
    "output, status",
    [
        ("{" * 30_000, "no_scores"),  # never closed
        ("[" * 15_000 + "]" * 15_000, "no_scores"),
        ('{"factuality": ' + "[" * 15_000 + "]" * 15_000 + "}", "too_deep"),
        ("{" * 15_000 + "}" * 15_000, "too_deep"),
        ('{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), "too_deep"),
        ("x" * MAX_ANSWER_CHARS + '{"factuality": 4, ' + FIVE + "}", "too_long"),
        ('{"factuality": ' + "9" * 5_000 + ", " + FIVE + "}", "not_finite: factuality=inf"),  # beyond JSON's digits
    ],
)
def test_size_and_nesting_are_bounded_and_never_crash(output, status):
    parsed = parse_scores(output, RUBRICS["reasoning5"])
    assert parsed.scores is None and parsed.status.startswith(status), parsed.status[:200]
    assert len(parsed.status) < 200


def test_json_scanning_has_no_recursion_limit():
    objects, _, too_deep = json_objects('{"a": ' * 200_000 + "1" + "}" * 200_000 + ' {"b": 2}')
    assert objects == [{"b": 2}] and too_deep


def test_nesting_within_the_bound_and_keys_up_to_case_and_punctuation_are_read():
    nested = '{"judgment": {"scores": {"factuality": {"score": 4}}}}'
    assert parse_scores(nested, RUBRICS["reasoning5"]).status.startswith("no_scores")  # containers: top level only
    ok = parse_scores(
        '{"scores": {" FACTUALITY ": {"score": 4, "reason": "step 2: 1 slip"}, '
        '"Strategy-Coherence": 5, "step coherence": 4, "Numerical/Computational Precision": 3, '
        '"signal_to_noise": "4/5"}}',
        RUBRICS["reasoning5"],
    )
    assert ok.status == "ok" and ok.scores == {
        "factuality": 4,
        "strategy_coherence": 5,
        "step_coherence": 4,
        "numerical_precision": 3,
        "signal_to_noise": 4,
    }


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_prompt_states_exactly_its_scale_and_its_example_parses(name):
    rubric = RUBRICS[name]
    prompt = rubric.pointwise_prompt("PROBLEM", "RESPONSE", "REFERENCE")
    example = rubric.example()
    assert (example in prompt) == ("{example}" in rubric.pointwise_template)  # the tiny judge's prompt has none
    stated = {float(n) for n in re.findall(r"\d+(?:\.\d+)?", prompt.replace(example, ""))}
    assert stated == {rubric.low, rubric.high}, prompt
    parsed = parse_scores(example, rubric)
    assert parsed.status == "ok" and set(parsed.scores) == set(rubric.names)
    assert all(rubric.low <= v <= rubric.high for v in parsed.scores.values())
    pairwise = rubric.pairwise_prompt("PROBLEM", "FIRST", "SECOND")
    assert "A or B" in pairwise and not re.search(r"\d", pairwise)  # the choices its parser reads, no scale
    assert parse_choice("A") == "A" and parse_choice("B") == "B"


def test_a_rubric_must_state_its_scale_and_name_dimensions_unambiguously(tmp_path):
    def write(**fields):
        data = {
            "name": "r",
            "scale": [1, 10],
            "dimensions": [{"name": "overall"}],
            "pointwise_template": "Score {response} from {low} to {high}.",
            **fields,
        }
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    assert load_rubric(str(write(pointwise_template="Score {response} from 1 to 10."))).high == 10
    for fields, message in [
        ({"pointwise_template": "Score {response}."}, "must state the scale's low end"),
        ({"pointwise_template": "Score {response} from 1 to 5."}, "high end"),
        ({"dimensions": [{"name": "overall score"}]}, "must be identifiers"),
        (
            {"dimensions": [{"name": "a", "aliases": ["Overall"]}, {"name": "overall"}]},
            "must differ between dimensions",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_rubric(str(write(**fields)))


@pytest.mark.parametrize("case", CORPUS["choices"], ids=lambda c: repr(c["output"][:30]))
def test_pairwise_verdicts(case):
    assert parse_choice(case["output"]) == case["expected"]


def test_an_overlong_pairwise_answer_is_no_choice():
    assert parse_choice("A" + " " * MAX_ANSWER_CHARS) is None


# -- reasoning judges: only the final answer is parsed ----------------------------------------------------------

TINY = '{"correctness": 5, "step_accuracy": 4, "format": 3}'
DECOY = "correctness: 1, step_accuracy: 1, format: 1"  # scores in the thoughts must never be read
HARMONY = "<|start|>assistant<|channel|>analysis<|message|>"


@pytest.mark.parametrize(
    "output",
    [
        f"<think>\n{DECOY}\n</think>\n\n{TINY}",  # R1 / Qwen3
        f"<think>{DECOY}</think><think>second thoughts {DECOY}</think>{TINY}",  # several blocks
        f"{DECOY}\n</think>\n{TINY}",  # the template opened the block in the prompt (R1 distills, QwQ)
        f"<THINKING>{DECOY}</THINKING>\n{TINY}",
        f"{HARMONY}{DECOY}<|end|><|start|>assistant<|channel|>final<|message|>{TINY}<|return|>",  # gpt-oss, raw
        f"<|channel|>analysis<|message|>{DECOY}<|end|><|start|>assistant<|channel|>final <|constrain|>json"
        f"<|message|>{TINY}<|end|>",
        f"analysisWe need to judge. {DECOY}assistantfinal{TINY}",  # gpt-oss decoded without special tokens
    ],
)
def test_reasoning_is_removed_before_parsing(output):
    rubric = RUBRICS["tiny_world"]
    parsed = parse_scores(output, rubric)
    assert parsed.status == "ok" and parsed.scores == {"correctness": 5, "step_accuracy": 4, "format": 3}
    if "</think>" in output.lower():
        assert parse_scores(output, rubric, "think") == parsed
    assert parse_choice(output.replace(TINY, "[[B]]")) == "B"


@pytest.mark.parametrize(
    ("output", "mode", "reason"),
    [
        (f"<think>\n{DECOY}, and then I ran out of tok", "auto", "a <think> block is never closed"),
        (f"<think>a</think>{TINY}<think>{DECOY}", "auto", "a <think> block is never closed"),
        (f"{DECOY} still thinking", "think", "no </think> ends the reasoning"),  # template-opened, never closed
        (f"{HARMONY}{DECOY} and on", "auto", "the analysis channel never reached a final one"),
        (f"analysisWe need to judge. {DECOY}", "auto", "harmony analysis text with no final answer"),
    ],
)
def test_unterminated_reasoning_is_a_failure_never_parsed_from_the_thoughts(output, mode, reason):
    parsed = parse_scores(output, RUBRICS["tiny_world"], mode)
    assert parsed == ParsedScores(None, f"reasoning_unterminated: {reason}")
    assert final_answer(output, mode) == (None, parsed.status)
    assert parse_choice(f"{output} the better response is [[A]]", mode) is None


def test_without_reasoning_markup_the_text_is_the_answer_and_mode_none_keeps_everything():
    rubric = RUBRICS["tiny_world"]
    assert final_answer(TINY) == (TINY, "ok") and final_answer("analysis: fine", "auto") == ("analysis: fine", "ok")
    assert parse_scores(TINY, rubric, "think").status.startswith("reasoning_unterminated")
    # "none" reads the thoughts as the answer
    assert parse_scores(f"<think>{TINY}</think>I cannot judge this.", rubric).status.startswith("no_scores")
    assert parse_scores(f"<think>{TINY}</think>I cannot judge this.", rubric, "none").status == "ok"
    with pytest.raises(ValueError, match="reasoning: expected one of"):
        final_answer(TINY, "harmony")
    huge = "<think>" + "x" * MAX_OUTPUT_CHARS + f"</think>{TINY}"
    assert parse_scores(huge, rubric).status.startswith("too_long") and parse_choice(huge) is None
    long_thoughts = "<think>" + "x" * (2 * MAX_ANSWER_CHARS) + f"</think>{TINY}"  # long thoughts, short answer
    assert parse_scores(long_thoughts, rubric).status == "ok"
