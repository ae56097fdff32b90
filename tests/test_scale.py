"""Generation and judging at scale (issue 16, item 4): reasoning judges on a real engine, multi-head reward models,
reward-model and proxy scoring that is batch-size independent and releases its models, and the data-parallel layout
of generators with their own tensor-parallel sizes."""

import dataclasses
import gc
import json

import pytest
import torch

from prefopt.engines.base import SamplingParams, render_prompts
from prefopt.engines.transformers import TransformersEngine
from prefopt.judging.base import JudgeItem
from prefopt.judging.config import LLMJudgeConfig
from prefopt.judging.judges.llm import LLMJudge
from prefopt.world.tokenizer import CHAT_TEMPLATE

ITEMS = [JudgeItem("7*3+4", "7*3=21;21+4=25. =25"), JudgeItem("2+2", "2+2=4. =4"), JudgeItem("9-8", "garbage")]

# -- reasoning judges ----------------------------------------------------------------------------------------------

# The tiny world's template, with gpt-oss's reasoning_effort variable and an R1-distill-style generation prompt that
# opens a <think> block the model must close.
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if add_generation_prompt -%}A:{%- endif -%}",
    "{%- if add_generation_prompt -%}Reasoning: {{ reasoning_effort | default('medium') }}{{ '\\n' }}A:<think>"
    "{%- endif -%}",
)


def test_reasoning_effort_reaches_the_chat_template_and_open_thoughts_are_failures(tiny_models):
    """A transformers-engine judge whose template opens a <think> block: the tiny solver never closes it, so every
    judgment is a recorded reasoning_unterminated failure (its thoughts kept, never parsed), asked with the effort
    and the token budget the config gives."""
    engine = TransformersEngine(tiny_models["strong"], chat_template=THINKING_TEMPLATE)
    assert render_prompts(engine.tokenizer, ["1+1"], reasoning_effort="high") == ["Q:1+1\nReasoning: high\nA:<think>"]
    assert render_prompts(engine.tokenizer, ["1+1"]) == ["Q:1+1\nReasoning: medium\nA:<think>"]
    # as a vLLM server does: the effort also turns Qwen3-style thinking on or off, unless the recipe sets it
    assert SamplingParams(reasoning_effort="none").template_kwargs() == {
        "reasoning_effort": "none",
        "enable_thinking": False,
    }
    kwargs = SamplingParams(reasoning_effort="low", chat_template_kwargs={"enable_thinking": False, "x": 1})
    assert kwargs.template_kwargs() == {"reasoning_effort": "low", "enable_thinking": False, "x": 1}
    cfg = LLMJudgeConfig(
        model="ci-strong",
        engine="transformers",
        rubric="tiny_world",
        reasoning="think",
        reasoning_effort="high",
        reasoning_budget=24,
        max_new_tokens=16,
        max_retries=0,
        structured_output=False,
    )
    judgments = LLMJudge(cfg, engine).score(ITEMS)
    prompt = LLMJudge(cfg, engine).rubric.pointwise_prompt(ITEMS[0].prompt, ITEMS[0].completion)
    [[direct]] = engine.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=40, reasoning_effort="high"))
    assert json.loads(judgments[0].raw) == [direct.text]  # the judge's request: effort high, 16 + 24 tokens
    for j in judgments:
        assert j.scores is None and j.attempts == 1
        assert j.status.startswith("parse_failed: reasoning_unterminated: no </think> ends the reasoning")
    # read as plain text (reasoning: none), the same thoughts are parsed, and fail as what they are: no scores
    [plain] = LLMJudge(dataclasses.replace(cfg, reasoning="none"), engine).score(ITEMS[:1])
    assert plain.raw == judgments[0].raw and plain.status.startswith("parse_failed: ")
    assert "reasoning_unterminated" not in plain.status
    engine.close()


def test_a_servers_separate_reasoning_is_never_parsed():
    """vLLM's reasoning parsers (and DeepSeek's API) return the thoughts as reasoning_content beside the content."""
    from openai.types.chat import ChatCompletion

    from prefopt.engines.server import _reasoning_text
    from prefopt.judging.parsing import final_answer

    decoy, answer = "correctness: 1, step_accuracy: 1, format: 1", '{"correctness": 5}'
    reply = ChatCompletion.model_validate(
        {
            "id": "r",
            "object": "chat.completion",
            "created": 0,
            "model": "judge",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": None, "reasoning_content": decoy},
                },
                {
                    "index": 1,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": answer, "reasoning": decoy},
                },
                {"index": 2, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}},
            ],
        }
    )
    cut, done, plain = (c.message for c in reply.choices)
    assert [_reasoning_text(m) for m in (cut, done, plain)] == [decoy, decoy, None]
    assert final_answer(cut.content or "", "auto", _reasoning_text(cut)) == (
        None,
        "reasoning_unterminated: the server's answer is all reasoning",
    )
    for mode in ("think", "auto"):  # the server split the thoughts off: no </think> is needed
        assert final_answer(done.content, mode, _reasoning_text(done)) == (answer, "ok")


def test_reasoning_options_are_checked_at_load():
    with pytest.raises(ValueError, match="reasoning: expected one of"):
        LLMJudgeConfig(model="m", reasoning="harmony")
    with pytest.raises(ValueError, match="reasoning_effort: expected one of"):
        LLMJudgeConfig(model="m", reasoning_effort="extreme")
    with pytest.raises(ValueError, match="reasoning_budget: expected >= 0"):
        LLMJudgeConfig(model="m", reasoning_budget=-1)


# -- proxy scoring: per-device batches, memory released ---------------------------------------------------------


@pytest.fixture(scope="module")
def world_pairs():
    from datasets import Dataset

    from prefopt.world.tasks import Difficulty, sample_problems

    rows = sample_problems(10, Difficulty(min_ops=1, max_ops=2), seed=5)
    return Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": [r["solution"][:-1] + str((int(r["solution"][-1]) + 3) % 10) for r in rows],
        }
    )


def live_models() -> int:
    """Models still tracked, garbage cycles not yet collected included: memory that empty_cache cannot return."""
    from transformers import PreTrainedModel

    return sum(isinstance(o, PreTrainedModel) for o in gc.get_objects())


def test_implicit_margins_do_not_depend_on_the_batch_size_and_release_both_models(tiny_models, world_pairs):
    from prefopt.training.implicit import pair_logratios

    gc.collect()
    before, results = live_models(), []
    for batch_size in (1, 4):
        results.append(pair_logratios(tiny_models["strong"], tiny_models["policy"], world_pairs, batch_size=batch_size))
        assert live_models() == before  # the trainer, the proxy and its reference freed before it returned
    for got in results[1]:
        assert got.shape == (len(world_pairs),)
    torch.testing.assert_close(torch.tensor(results[1][0]), torch.tensor(results[0][0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(results[1][1]), torch.tensor(results[0][1]), atol=1e-4, rtol=0)
    assert len(set(results[0][0].round(4))) > 1 and (results[0][0] != results[0][1]).any()


@pytest.mark.slow
def test_implicit_margins_on_two_ranks_match_one_process(tiny_models, world_pairs):
    """The multi-GPU path, on two gloo ranks: each scores its share, the margins come back in pair order."""
    from prefopt.training.implicit import pair_logratios, score_pair_logratios

    alone = pair_logratios(tiny_models["strong"], tiny_models["policy"], world_pairs, batch_size=3)
    ranks = score_pair_logratios(
        tiny_models["strong"], tiny_models["policy"], world_pairs, batch_size=3, num_processes=2
    )
    for a, b in zip(alone, ranks):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=0)


# -- data-parallel generation: each generator's replicas take its own tensor-parallel GPUs ---------------------


def pool(engine="vllm", dp=2, **per_generator):
    from prefopt.generation.config import GenerationConfig, GeneratorConfig

    generators = [
        GeneratorConfig(name=name, model=f"world:{name}", engine_options=options)
        for name, options in per_generator.items()
    ]
    return GenerationConfig(
        engine=engine, data_parallel_size=dp, engine_options={"gpu_memory_utilization": 0.8}, generators=generators
    )


def test_each_generator_takes_its_own_gpus_per_replica():
    from prefopt.generation.parallel import ParallelPhase, parallel_layout

    g = pool(big={"tensor_parallel_size": 2}, small={}, deep={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
    gpus = [str(i) for i in range(8)]
    assert parallel_layout(g, gpus) == [
        ParallelPhase(("big",), ("0,1", "2,3")),
        ParallelPhase(("small",), ("0", "1")),
        ParallelPhase(("deep",), ("0,1,2,3", "4,5,6,7")),
    ]
    merged = pool(a={"tensor_parallel_size": 2}, b={"tensor_parallel_size": 2}, dp=3)  # one phase per size
    assert parallel_layout(merged, ["3", "5", "6", "7", "8", "9"]) == [ParallelPhase(("a", "b"), ("3,5", "6,7", "8,9"))]
    # the generator's own size wins over generation's; a server loads no weights; no GPUs: one phase of all
    g = dataclasses.replace(g, engine_options={"tensor_parallel_size": 4})
    assert parallel_layout(g, gpus)[1] == ParallelPhase(("small", "deep"), ("0,1,2,3", "4,5,6,7"))
    assert parallel_layout(pool("server", big={}), gpus) == [ParallelPhase(("big",), (None, None))]
    assert parallel_layout(g, []) == [ParallelPhase(("big", "small", "deep"), (None, None))]


def test_a_layout_that_does_not_fit_the_gpus_is_one_line():
    from prefopt.errors import ConfigError
    from prefopt.generation.parallel import parallel_layout

    g = pool(big={"tensor_parallel_size": 4}, small={})
    with pytest.raises(ConfigError) as err:
        parallel_layout(g, ["0", "1", "2", "3", "4", "5"])
    assert str(err.value) == (
        "generation.generators ['big']: data_parallel_size 2 x 4 GPUs per replica (tensor_parallel_size x "
        "pipeline_parallel_size) needs 8 GPUs; 6 are visible"
    )


def test_phased_workers_give_the_candidates_of_a_single_process(ci_recipe, tiny_models, tmp_path):
    """What run_data_parallel's workers do, phase by phase (one generator each, as with different tensor-parallel
    sizes), in this process: two replicas per phase, then the parent's merge; equal to one process's run."""
    from datasets import load_from_disk

    from prefopt.generation.generate import load_prompts, run_generation
    from prefopt.pipeline import Pipeline

    g = ci_recipe.generation
    g = dataclasses.replace(g, prompts=dataclasses.replace(g.prompts, num_prompts=12), shard_size=4, batch_size=4)
    recipe = dataclasses.replace(ci_recipe, generation=g)
    prompts, resolve = load_prompts(g.prompts, recipe.world), Pipeline(recipe).model_path
    assert run_generation(g, prompts, resolve, tmp_path / "one")
    for phase in (("weak",), ("strong",)):
        for replica in (1, 0):
            assert not run_generation(g, prompts, resolve, tmp_path / "dp", replica, 2, phase)  # workers never merge
    assert not (tmp_path / "dp" / "data").exists()
    assert run_generation(g, prompts, resolve, tmp_path / "dp")  # the parent: nothing left to generate, it merges
    one, dp = (load_from_disk(str(tmp_path / d / "data")).to_pandas() for d in ("one", "dp"))
    assert dp.equals(one) and set(dp["generator"]) == {"strong", "weak"}


# -- vLLM options --------------------------------------------------------------------------------------------------


def test_a_misspelt_vllm_option_is_refused_when_the_recipe_loads(tmp_path):
    import yaml

    from prefopt.engines.vllm import vllm_keywords
    from prefopt.errors import ConfigError
    from prefopt.recipe import load_recipe

    from conftest import CI_RECIPE

    if vllm_keywords() is None:
        pytest.skip("vLLM is not installed: its engine checks the options when it starts")
    data = yaml.safe_load(CI_RECIPE.read_text())
    tuned = {
        "gpu_memory_utilization": 0.85,
        "max_model_len": 2048,
        "enable_prefix_caching": True,
        "quantization": "fp8",
        "dtype": "bfloat16",
        "seed": 3,
        "tensor_parallel_size": 1,
    }
    data["generation"].update(engine="vllm", engine_options=tuned)
    data["generation"]["generators"][1]["engine_options"] = {"gpu_memory_utilisation": 0.5}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_recipe(tmp_path / "recipe.yaml", check_trainers=False)
    assert str(err.value) == (
        f"{tmp_path / 'recipe.yaml'}: generation.generators[1].engine_options.gpu_memory_utilisation: not a vllm.LLM "
        "keyword (nor an EngineArgs field) of the installed vLLM (did you mean 'gpu_memory_utilization'?)"
    )
    del data["generation"]["generators"][1]["engine_options"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    assert load_recipe(tmp_path / "recipe.yaml", check_trainers=False).generation.engine_options == tuned


@pytest.mark.vllm
def test_the_keywords_read_from_vllm_source_are_those_vllm_takes():
    import dataclasses
    import inspect

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    from prefopt.engines.vllm import vllm_keywords

    parameters = inspect.signature(LLM.__init__).parameters.values()
    imported = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
    assert vllm_keywords() == imported | {f.name for f in dataclasses.fields(EngineArgs)}
