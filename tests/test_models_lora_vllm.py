"""vLLM (CPU build here) serves a trained LoRA adapter over its base and renders with the chat-template override,
token for token as transformers does."""

import yaml
from datasets import Dataset
from test_models_lora import BASE, TEMPLATE

from prefopt.engines.base import SamplingParams
from prefopt.engines.transformers import TransformersEngine
from prefopt.engines.vllm import VLLMEngine
from prefopt.world.tasks import Difficulty, sample_problems

from conftest import SMALL_VLLM


def greedy(engine, prompts) -> list[str]:
    try:
        return [c[0].text for c in engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=30))]
    finally:
        engine.close()


def test_vllm_serves_the_adapter_with_the_template_as_transformers_does(tiny_models, tmp_path):
    from prefopt.training.dpo import main

    rows = sample_problems(16, Difficulty(min_ops=1, max_ops=2), seed=3)
    Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": [r["solution"][:-1] + "0" for r in rows],
            "margin": [1.0] * 16,
        },
    ).save_to_disk(str(tmp_path / "pairs" / "data"))
    config = {
        **BASE,
        "learning_rate": 5e-2,
        "max_steps": 4,
        "pairs_path": str(tmp_path / "pairs"),
        "model_name_or_path": tiny_models["policy"],
        "output_dir": str(tmp_path / "out"),
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"],
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    main(["--config", str(tmp_path / "train.yaml")])
    adapter = str(tmp_path / "out" / "model")
    prompts = [r["problem"] for r in sample_problems(8, Difficulty(min_ops=1, max_ops=2), seed=11)]

    base = greedy(TransformersEngine(tiny_models["policy"], chat_template=TEMPLATE), prompts)
    plain = greedy(TransformersEngine(adapter), prompts)
    reference = greedy(TransformersEngine(adapter, chat_template=TEMPLATE), prompts)
    assert reference != base and reference != plain  # the adapter and the template both change the answers
    assert greedy(VLLMEngine(adapter, chat_template=TEMPLATE, **SMALL_VLLM), prompts) == reference
