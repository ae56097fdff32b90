"""Generation throughput: prefopt's vLLM engine against transformers' ``generate``, same model and prompts.

    python benchmarks/generation.py                       # the demo's strong tiny-world model
    python benchmarks/generation.py --layers 8 --hidden 512   # a larger Llama built from a config
    python benchmarks/generation.py --model /path/to/model    # any local model

Prints one Markdown table: generated tokens per second of each engine per prompt count, and the ratio.
Engine start-up is timed separately and not counted in tokens/s. Tokens are counted by re-tokenising
the completions with the model's tokenizer, identically for both engines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from prefopt.engines.base import SamplingParams
from prefopt.engines.transformers import TransformersEngine
from prefopt.engines.vllm import VLLMEngine
from prefopt.world.models import TinyModelSpec, build_tiny_model, llama_config
from prefopt.world.tasks import Difficulty, sample_problems
from prefopt.world.tokenizer import build_tokenizer


def random_model(layers: int, hidden: int, directory: Path) -> str:
    """A Llama of the given size with random weights and the world's tokenizer."""
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    spec = TinyModelSpec(num_layers=layers, hidden_size=hidden)
    LlamaForCausalLM(llama_config(spec, len(tokenizer), tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def timed_generate(engine, prompts: list[str], params: SamplingParams, tokenizer) -> tuple[int, float]:
    start = time.perf_counter()
    outputs = engine.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for group in outputs for c in group)
    return tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local model directory (default: the demo's strong model)")
    parser.add_argument("--layers", type=int, help="build a random Llama with this many layers instead")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    parser.add_argument("--num-prompts", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hf-batch-size", type=int, default=64, help="prompts per transformers generate call")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM KV cache (CPU build)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model, label = args.model, args.model
        elif args.layers:
            model, label = (
                random_model(args.layers, args.hidden, Path(tmp)),
                f"random Llama {args.layers}x{args.hidden}",
            )
        else:
            spec = TinyModelSpec(num_layers=2, hidden_size=128, train_steps=600, seed=1)  # the demo's strong model
            model, label = str(build_tiny_model(spec, desc="demo strong")), "demo strong model (2x128)"
        tokenizer = build_tokenizer() if not args.model else None
        problems = [r["problem"] for r in sample_problems(max(args.num_prompts), Difficulty(), seed=99)]
        params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)

        results: dict[str, dict[int, tuple[int, float]]] = {}
        startup: dict[str, float] = {}
        for name in ("transformers", "vllm"):
            t0 = time.perf_counter()
            if name == "vllm":
                engine = (
                    VLLMEngine(model, kv_cache_memory_bytes=int(args.kv_cache_gib * 2**30), max_model_len=256)
                    if not torch.cuda.is_available()
                    else VLLMEngine(model)
                )
            else:
                engine = TransformersEngine(model)
            startup[name] = time.perf_counter() - t0
            tok = tokenizer or engine.tokenizer
            engine.generate(problems[:8], params)  # warm-up
            results[name] = {}
            for count in args.num_prompts:
                if name == "transformers":  # generate() pads a whole batch: feed it in chunks, as the stage does
                    tokens = seconds = 0
                    for i in range(0, count, args.hf_batch_size):
                        t, s = timed_generate(engine, problems[i : min(count, i + args.hf_batch_size)], params, tok)
                        tokens, seconds = tokens + t, seconds + s
                else:
                    tokens, seconds = timed_generate(engine, problems[:count], params, tok)
                results[name][count] = (tokens, seconds)
                print(f"{name}: {count} prompts x {args.n}: {tokens} tokens in {seconds:.2f}s", flush=True)
            engine.close()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nModel: {label}; device: {device}; n={args.n}, max_new_tokens={args.max_new_tokens}, temperature 1.0")
    print(f"Engine start-up: transformers {startup['transformers']:.1f}s, vLLM {startup['vllm']:.1f}s (not counted)\n")
    print("| prompts | completions | transformers tokens/s | vLLM tokens/s | vLLM / transformers |")
    print("| --- | --- | --- | --- | --- |")
    for count in args.num_prompts:
        hf_tokens, hf_s = results["transformers"][count]
        vl_tokens, vl_s = results["vllm"][count]
        hf_rate, vl_rate = hf_tokens / hf_s, vl_tokens / vl_s
        print(f"| {count} | {count * args.n} | {hf_rate:,.0f} | {vl_rate:,.0f} | {vl_rate / hf_rate:.2f}x |")


if __name__ == "__main__":
    main()
