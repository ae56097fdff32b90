"""The reward-model judge (a tiny sequence-classification model built here); the math verifier is tested in
tests/test_math_verify.py."""

import pytest
import torch


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

    from prefopt.judging.base import JudgeItem
    from prefopt.judging.config import RewardModelConfig
    from prefopt.judging.reward_model import RewardModelJudge

    items = [
        JudgeItem("7*3+4", "7*3=21;21+4=25. =25"),
        JudgeItem("2+2", "4"),
        JudgeItem("9-8", "9-8=1. =1"),
        JudgeItem("1+1", "a much longer and wandering answer that never gets there"),
    ]
    judge = RewardModelJudge(tiny_reward_model, RewardModelConfig(model="rm", batch_size=3))
    batched = [j.scores["reward"] for j in judge.score(items)]
    alone = [judge.score([item])[0].scores["reward"] for item in items]
    assert batched == pytest.approx(alone, abs=1e-5) and len(set(batched)) == len(items)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": items[0].prompt}, {"role": "assistant", "content": items[0].completion}],
        tokenize=False,
    )
    with torch.no_grad():
        direct = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert batched[0] == pytest.approx(direct, abs=1e-5)
    judge.close()


def test_a_classifier_with_several_labels_is_refused(tiny_reward_model, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from prefopt.judging.config import RewardModelConfig
    from prefopt.judging.reward_model import RewardModelJudge

    config = AutoConfig.from_pretrained(tiny_reward_model)
    config.num_labels = 3
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_reward_model).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="one label; this one has 3"):
        RewardModelJudge(str(tmp_path), RewardModelConfig(model="rm"))


def test_non_finite_rewards_are_recorded_failures_not_scores(tiny_reward_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefopt.judging.base import JudgeItem
    from prefopt.judging.config import RewardModelConfig
    from prefopt.judging.reward_model import RewardModelJudge

    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model)
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_reward_model).save_pretrained(tmp_path)
    judge = RewardModelJudge(str(tmp_path), RewardModelConfig(model="rm"))
    judgments = judge.score([JudgeItem("2+2", "4"), JudgeItem("1+1", "2")])
    assert all(j.scores is None and j.status == "not_finite: reward=nan" for j in judgments)
    judge.close()
