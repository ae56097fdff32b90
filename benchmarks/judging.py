"""LLM-judge throughput: judged candidates per second with vLLM prefix caching on and off, side by side.

    python benchmarks/judging.py                          # a random 4x256 Llama judging 256 traces on reasoning5
    python benchmarks/judging.py --layers 8 --hidden 512 --candidates 512
    python benchmarks/judging.py --model /path/to/judge   # any local model (GPU: a real judge)

Every candidate gets the rubric's full prompt (its dimension descriptions come first, so all prompts share a
long prefix) and answers under the rubric's JSON schema, so every judgment parses. The two runs use the same
judge, candidates and seeds; only ``enable_prefix_caching`` differs. Engine start-up is not counted.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

import torch

from prefopt.engines.vllm import VLLMEngine
from prefopt.judging.base import JudgeItem
from prefopt.judging.config import LLMJudgeConfig
from prefopt.judging.judges.llm import LLMJudge
from prefopt.judging.rubrics import load_rubric
from prefopt.world.tasks import Difficulty, sample_problems, sample_trace


def random_judge(layers: int, hidden: int, context: int, directory: Path) -> str:
    """A Llama of the given size with random weights, the world's tokenizer and a long enough context."""
    from transformers import LlamaForCausalLM

    from prefopt.world.models import TinyModelSpec, llama_config
    from prefopt.world.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = context
    config = llama_config(TinyModelSpec(num_layers=layers, hidden_size=hidden), len(tokenizer), tokenizer)
    config.max_position_embeddings = context
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local judge model (default: a random Llama)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--rubric", default="reasoning5")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--kv-cache-gib", type=float, default=2.0, help="vLLM KV cache on a CPU build")
    args = parser.parse_args()

    rubric = load_rubric(args.rubric)
    rng = random.Random(0)
    items = [
        JudgeItem(p["problem"], sample_trace(rng, p["problem"]))
        for p in sample_problems(args.candidates, Difficulty(), seed=5)
    ]
    options = {} if torch.cuda.is_available() else {"kv_cache_memory_bytes": int(args.kv_cache_gib * 2**30)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_judge(args.layers, args.hidden, 2048, Path(tmp) / "judge")
        prompt_tokens = None
        for caching in (False, True):
            engine = VLLMEngine(model, enable_prefix_caching=caching, max_model_len=2048, **options)
            if prompt_tokens is None:
                prompts = [rubric.pointwise_prompt(i.prompt, i.completion) for i in items]
                rendered = [
                    engine.tokenizer.apply_chat_template(
                        [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                    )
                    for p in prompts
                ]
                prompt_tokens = sum(len(engine.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rendered)
            judge = LLMJudge(
                LLMJudgeConfig(
                    model=model, rubric=args.rubric, max_new_tokens=args.max_new_tokens, batch_size=args.candidates
                ),
                engine,
                rubric,
            )
            judge.score(items[:8])  # warm-up (compiles the JSON grammar)
            start = time.perf_counter()
            judgments = judge.score(items)
            seconds = time.perf_counter() - start
            results[caching] = (seconds, sum(j.status == "ok" for j in judgments))
            engine.close()
            del engine, judge
            gc.collect()
            print(
                f"prefix caching {'on' if caching else 'off'}: {args.candidates} judged in {seconds:.1f}s", flush=True
            )

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    label = args.model or f"random Llama {args.layers}x{args.hidden}"
    print(
        f"\nJudge: {label}; rubric {args.rubric}; {args.candidates} candidates, {prompt_tokens / args.candidates:.0f} "
        f"prompt tokens each on average; device: {device}\n"
    )
    print("| prefix caching | judged (parsed) | seconds | candidates/s | vs off |")
    print("| --- | --- | --- | --- | --- |")
    for caching in (False, True):
        seconds, parsed = results[caching]
        print(
            f"| {'on' if caching else 'off'} | {parsed} | {seconds:.1f} | {args.candidates / seconds:.1f} | "
            f"{results[False][0] / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
