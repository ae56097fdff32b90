"""The judge-answer parser against a corpus of messy real-world shapes (tests/data/judge_outputs.yaml)."""

from pathlib import Path

import pytest
import yaml

from prefopt.judging.parsing import parse_choice, parse_scores
from prefopt.judging.rubrics import Dimension, Rubric, load_rubric

CORPUS = yaml.safe_load((Path(__file__).parent / "data" / "judge_outputs.yaml").read_text())
RUBRICS = {name: load_rubric(name) for name in ("reasoning5", "reasoning3", "tiny_world")}
RUBRICS["overall5"] = Rubric(name="overall5", dimensions=[Dimension("overall")], pointwise_template="{response}",
                             scale=[1, 5])
RUBRICS["overall10"] = Rubric(name="overall10", dimensions=[Dimension("overall")], pointwise_template="{response}",
                              scale=[1, 10], integer=False)


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


@pytest.mark.parametrize("case", CORPUS["choices"], ids=lambda c: repr(c["output"][:30]))
def test_pairwise_verdicts(case):
    assert parse_choice(case["output"]) == case["expected"]
