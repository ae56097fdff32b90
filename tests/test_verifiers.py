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
    from prefopt.judging.judges.reward_model import RewardModelJudge

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


@pytest.fixture(scope="module")
def three_head_model(tiny_reward_model, tmp_path_factory):
    """A multi-objective reward model: the tiny one with three output heads."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_reward_model)
    config.num_labels = 3
    path = tmp_path_factory.mktemp("rm3")
    torch.manual_seed(1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_reward_model).save_pretrained(path)
    return str(path)


def test_a_classifier_with_several_unnamed_heads_is_refused_in_one_line(three_head_model):
    from prefopt.errors import ConfigError
    from prefopt.judging.config import RewardModelConfig
    from prefopt.judging.judges.reward_model import RewardModelJudge

    with pytest.raises(ConfigError, match=r"has 3 output heads and none is named .*\[head_0, head_1, head_2\]") as err:
        RewardModelJudge(three_head_model, RewardModelConfig(model="rm"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="2 names given .* has 3 output heads"):
        RewardModelJudge(three_head_model, RewardModelConfig(model="rm", dimensions=["a", "b"]))


def test_a_multi_objective_reward_model_scores_each_head_and_the_recipe_combines_them(three_head_model):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefopt.judging.base import JudgeItem
    from prefopt.judging.config import JudgingConfig, RewardModelConfig
    from prefopt.judging.judge import judge_candidates
    from prefopt.judging.judges.reward_model import RewardModelJudge

    names = ["helpful", "correct", "concise"]
    items = [JudgeItem("7*3+4", "7*3=21;21+4=25. =25"), JudgeItem("2+2", "4"), JudgeItem("9-8", "9-8=1. =1")]
    rm = RewardModelConfig(model="rm", dimensions=names, batch_size=2)
    judge = RewardModelJudge(three_head_model, rm)
    assert judge.dimensions == tuple(names)
    model = AutoModelForSequenceClassification.from_pretrained(three_head_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(three_head_model)
    text = judge.text(items[0])
    with torch.no_grad():
        direct = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0].tolist()
    [first, *_] = judge.score(items)
    assert [first.scores[n] for n in names] == pytest.approx(direct, abs=1e-5) and len(set(direct)) == 3
    candidates = Dataset.from_list(
        [
            {"candidate_id": f"c{i}", "prompt": it.prompt, "completion": it.completion, "reference": None}
            for i, it in enumerate(items)
        ]
    )
    weights = {"helpful": 3.0, "concise": 1.0}
    cfg = JudgingConfig(judge="reward_model", reward_model=rm, aggregate="weighted", weights=weights)
    judged = judge_candidates(cfg, candidates, judge).to_pandas()
    scores = [judge.score([it])[0].scores for it in items]
    assert judged["aggregate"].tolist() == pytest.approx([(3 * s["helpful"] + s["concise"]) / 4 for s in scores])
    assert judged["scores"].iloc[1]["correct"] == pytest.approx(scores[1]["correct"], abs=1e-5)
    one = judge_candidates(JudgingConfig(judge="reward_model", reward_model=rm, aggregate="correct"), candidates, judge)
    assert one.to_pandas()["aggregate"].tolist() == pytest.approx([s["correct"] for s in scores], abs=1e-5)
    with pytest.raises(ValueError, match="'overall' is not 'mean', 'weighted' or a dimension of"):
        judge_candidates(JudgingConfig(judge="reward_model", reward_model=rm, aggregate="overall"), candidates, judge)
    judge.close()


def test_reward_model_scores_do_not_depend_on_the_batch_size_and_close_releases_the_model(three_head_model):
    import weakref

    from prefopt.judging.base import JudgeItem
    from prefopt.judging.config import RewardModelConfig
    from prefopt.judging.judges.reward_model import RewardModelJudge

    items = [JudgeItem(f"{a}+{a}", f"{a}+{a}={2 * a}. ={2 * a}" + " and more" * a) for a in range(7)]
    scores = []
    # batches of 1, 3 and 16 on one device; batches of 2 shared by two replicas (two CPU "devices", two threads)
    for batch_size, devices in ((1, None), (3, None), (16, None), (2, ["cpu", "cpu"])):
        judge = RewardModelJudge(
            three_head_model, RewardModelConfig(model="rm", dimensions=["a", "b", "c"], batch_size=batch_size), devices
        )
        assert len(judge.models) == len(devices or ["cpu"])
        scores.append([[j.scores[d] for d in "abc"] for j in judge.score(items)])
        replicas = [weakref.ref(m) for m in judge.models]
        judge.close()
        assert all(r() is None for r in replicas)  # closed: no replica is left alive, though the judge object is
    for other in scores[1:]:
        torch.testing.assert_close(torch.tensor(other), torch.tensor(scores[0]), atol=1e-5, rtol=0)
    assert len({tuple(s) for s in scores[0]}) == len(items)


def test_non_finite_rewards_are_recorded_failures_not_scores(tiny_reward_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefopt.judging.base import JudgeItem
    from prefopt.judging.config import RewardModelConfig
    from prefopt.judging.judges.reward_model import RewardModelJudge

    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model)
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_reward_model).save_pretrained(tmp_path)
    judge = RewardModelJudge(str(tmp_path), RewardModelConfig(model="rm"))
    judgments = judge.score([JudgeItem("2+2", "4"), JudgeItem("1+1", "2")])
    assert all(j.scores is None and j.status == "not_finite: reward=nan" for j in judgments)
    judge.close()
