"""The math final-answer verifier and the reward-model judge (a tiny sequence-classification model built here)."""

import pytest
import torch

from prefopt.judging.math_verifier import answers_match, extract_answer, score_math


@pytest.mark.parametrize("completion, answer", [
    ("So the total is \\boxed{42}.", "42"),
    ("First \\boxed{1}, corrected: \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("The final answer is $1,250.", "1,250"),
    ("Answer: -7", "-7"),
    ("I get 3, then 9, then 27", "27"),
    ("no numbers here", None),
    ("\\boxed{x^2 + \\sqrt{2}}", "x^2 + \\sqrt{2}"),
])
def test_final_answer_extraction(completion, answer):
    assert extract_answer(completion) == answer


@pytest.mark.parametrize("a, b, same", [
    ("0.5", "1/2", True), ("\\frac{1}{2}", "0.5", True), ("\\dfrac{6}{8}", "3/4", True), ("1,250", "1250", True),
    ("-\\frac{1}{3}", "-1/3", True), ("50\\%", "50", True), ("\\$18", "18", True), ("7", "7.0", True),
    ("\\text{Tuesday}", "tuesday", True), ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("3", "4", False), ("0.33", "1/3", False), ("x+1", "x+2", False),
])
def test_answers_match_numerically_or_as_normalised_text(a, b, same):
    assert answers_match(a, b) is same


def test_math_verifier_scores_and_records_what_it_read():
    right = score_math("What is 6*7?", "6*7 = 42, so \\boxed{42}.", "42")
    assert right.status == "ok" and right.scores == {"correctness": 1.0, "answer_found": 1.0}
    wrong = score_math("What is 6*7?", "It is 41.", "#### 42")  # a GSM8K-style reference
    assert wrong.scores == {"correctness": 0.0, "answer_found": 1.0} and '"reference": "42"' in wrong.raw
    assert score_math("q", "I don't know", "42").scores == {"correctness": 0.0, "answer_found": 0.0}
    unverifiable = score_math("q", "\\boxed{42}", None)
    assert unverifiable.scores is None and unverifiable.status.startswith("no_reference")
    # the tiny world's traces end with ". =<answer>"
    assert score_math("7*3+4", "7*3=21;21+4=25. =25", "25").scores["correctness"] == 1.0


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    from transformers import LlamaForSequenceClassification

    from prefopt.world.models import TinyModelSpec, llama_config
    from prefopt.world.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = llama_config(TinyModelSpec(num_layers=1, hidden_size=64), len(tokenizer), tokenizer)
    config.num_labels = 1
    path = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_reward_model_scores_are_batch_independent_and_equal_a_direct_forward(tiny_reward_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefopt.configs import RewardModelConfig
    from prefopt.judging.base import JudgeItem
    from prefopt.judging.reward_model import RewardModelJudge

    items = [JudgeItem("7*3+4", "7*3=21;21+4=25. =25"), JudgeItem("2+2", "4"), JudgeItem("9-8", "9-8=1. =1"),
             JudgeItem("1+1", "a much longer and wandering answer that never gets there")]
    judge = RewardModelJudge(tiny_reward_model, RewardModelConfig(model="rm", batch_size=3))
    batched = [j.scores["reward"] for j in judge.score(items)]
    alone = [judge.score([item])[0].scores["reward"] for item in items]
    assert batched == pytest.approx(alone, abs=1e-5) and len(set(batched)) == len(items)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    text = tokenizer.apply_chat_template([{"role": "user", "content": items[0].prompt},
                                          {"role": "assistant", "content": items[0].completion}], tokenize=False)
    with torch.no_grad():
        direct = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert batched[0] == pytest.approx(direct, abs=1e-5)
    judge.close()


def test_a_classifier_with_several_labels_is_refused(tiny_reward_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefopt.configs import RewardModelConfig
    from prefopt.judging.reward_model import RewardModelJudge

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_reward_model)
    config.num_labels = 3
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_reward_model).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="one label; this one has 3"):
        RewardModelJudge(str(tmp_path), RewardModelConfig(model="rm"))
