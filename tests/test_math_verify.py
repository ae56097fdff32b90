"""The math verifier (math-verify behind prefopt's wrapper) against hand-written answers in the benchmarks' styles
(tests/fixtures/math_answers.jsonl), its failures, time limits, threads and worker processes."""

import json
import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from prefopt.judging import math_verifier
from prefopt.judging.math_verifier import reference_text, score_math

CASES = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "math_answers.jsonl").open()]


def test_the_fixture_is_large_varied_and_not_all_true():
    styles = Counter(c["style"] for c in CASES)
    assert len(CASES) >= 150 and len(styles) >= 15
    assert sum(not c["correct"] for c in CASES) >= 60  # a verifier that says True to everything fails
    assert all(
        set(c) <= {"style", "completion", "reference", "correct", "answer_found", "known_limitation"} for c in CASES
    )


def _case_id(case: dict) -> str:
    return f"{case['style']}:{case['completion'][-40:]!r}->{case['reference'][-12:]!r}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_every_answer_gets_its_expected_verdict(case):
    judgment = score_math("q", case["completion"], case["reference"])
    assert judgment.status == "ok", judgment
    verdict = judgment.scores["correctness"] == 1.0
    if "known_limitation" in case:  # documented: math-verify's verdict differs from a human grader's
        assert verdict is not case["correct"], f"fixed? remove known_limitation: {case['known_limitation']}"
    else:
        assert verdict is case["correct"], judgment.raw
    if "answer_found" in case:
        assert judgment.scores["answer_found"] == float(case["answer_found"])


@pytest.mark.parametrize(
    "reference, text",
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "\\boxed{72}"),
        ("#### 1,250", "\\boxed{1,250}"),
        ("\\frac{3}{4}", "\\boxed{\\frac{3}{4}}"),
        ("So the answer is $\\boxed{5}$.", "So the answer is $\\boxed{5}$."),
        ("\\$18.90", "\\boxed{\\$18.90}"),
        ("−5", "\\boxed{-5}"),
    ],
)
def test_references_gsm8k_solutions_and_bare_answers(reference, text):
    assert reference_text(reference) == text


def test_what_was_read_is_recorded_and_failures_are_never_zero():
    right = score_math("What is 6*7?", "6*7 = 42, so \\boxed{42}.", "42")
    assert right.status == "ok" and right.scores == {"correctness": 1.0, "answer_found": 1.0}
    assert json.loads(right.raw) == {"answer": "42", "reference": "42"}
    wrong = score_math("What is 6*7?", "It is 41.", "Six sevens.\n#### 42")
    assert wrong.scores == {"correctness": 0.0, "answer_found": 1.0}
    assert json.loads(wrong.raw) == {"answer": "41", "reference": "42"}
    for reference in (None, "", "   "):
        unverifiable = score_math("q", "\\boxed{42}", reference)
        assert unverifiable.scores is None and unverifiable.status.startswith("no_reference")
    unreadable = score_math("q", "\\boxed{42}", "Working omitted.\n####")  # a GSM8K answer cut off
    assert unreadable.scores is None and unreadable.status.startswith("unreadable_reference")


@pytest.mark.parametrize(
    "completion",
    ["\\boxed{9^{9^{9^{9}}}}", "The answer is 10**10**10", "\\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}"],
)
def test_a_pathological_answer_is_a_recorded_timeout_not_a_hang(monkeypatch, completion):
    monkeypatch.setattr(math_verifier, "PARSE_TIMEOUT_S", 1)
    monkeypatch.setattr(math_verifier, "COMPARE_TIMEOUT_S", 1)
    start = time.monotonic()
    judgment = score_math("q", completion, "5")
    # A hang would never return. The 1 s alarm fires between Python steps, so one long C-level step inside math-verify
    # can overrun it on a loaded machine (36 s seen once in a fresh-clone CI run): the bound is loose on purpose.
    assert time.monotonic() - start < 120
    assert judgment.scores is None and judgment.status.startswith("timeout: math-verify's"), judgment
    assert score_math("q", "\\boxed{5}", "5").scores["correctness"] == 1.0  # the alarm is cleared afterwards


def test_outside_the_main_thread_it_refuses_clearly():
    errors = []

    def run():
        try:
            score_math("q", "\\boxed{5}", "5")
        except RuntimeError as err:
            errors.append(str(err))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in errors[0]


def _score_in_worker(queue):
    queue.put(
        [
            score_math("q", c, r).scores["correctness"]
            for c, r in (("\\boxed{\\dfrac{3}{4}}", "0.75"), ("#### 71", "#### 72"))
        ]
    )


def test_it_works_in_a_spawned_worker_process():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_score_in_worker, args=(queue,))
    worker.start()
    result = queue.get(timeout=120)
    worker.join(timeout=60)
    assert worker.exitcode == 0 and result == [1.0, 0.0]


def test_benchmark_files_are_checked_and_scored_with_math_verify(tmp_path):
    from prefopt.evaluation.accuracy import benchmark_set
    from prefopt.evaluation.config import BenchmarkFile
    from prefopt.schemas import DataError

    path = tmp_path / "bench.jsonl"
    rows = [{"question": "2+2?", "answer": "2+2=4\n#### 4"}, {"question": "Half?", "answer": "\\frac{1}{2}"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    bench = benchmark_set(BenchmarkFile(name="b", path=str(path)))
    assert all(bench.judge(p, c, a)[0] for p, c, a in zip(bench.problems, ["So 4.", "$0.5$"], bench.answers))
    assert not bench.judge(bench.problems[0], "So 5.", bench.answers[0])[0]
    path.write_text("\n".join(json.dumps(r) for r in rows + [{"question": "Cut?", "answer": "Working.\n####"}]))
    with pytest.raises(DataError, match="row 2: math-verify reads no answer in 'answer'"):
        benchmark_set(BenchmarkFile(name="b", path=str(path)))
