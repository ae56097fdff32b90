"""Training overhead: prefopt's PrefDPOTrainer against TRL's stock DPOTrainer, same model and batches.

    python benchmarks/training.py                          # a 4x256 Llama from a config, on CPU
    python benchmarks/training.py --layers 24 --hidden 896 --batch-size 8   # about 0.5B parameters (GPU)

Each trainer runs in its own fresh process (so peak memory is its own): warm-up steps, then timed
``training_step`` calls over the same pre-collated batches. Prints one Markdown table with the ratio.
PrefDPOTrainer runs its gap-weighted loss with SFT routing (the most work it does per step). On a GPU it
also prints tokens/s and model FLOPs utilisation (8 x params FLOPs per token: policy forward and backward
plus the reference forward; peak from --peak-tflops).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from queue import Empty


def build_model(layers: int, hidden: int, directory: Path) -> str:
    import torch
    from transformers import LlamaForCausalLM

    from prefopt.world.models import TinyModelSpec, llama_config
    from prefopt.world.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(llama_config(TinyModelSpec(num_layers=layers, hidden_size=hidden), len(tokenizer),
                                          tokenizer))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def measure(kind: str, model_path: str, args: argparse.Namespace, queue) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefopt.training.dpo import to_conversational
    from prefopt.training.trainers import GAP_KEY, PrefDPOConfig, PrefDPOTrainer
    from prefopt.world.tasks import Difficulty, sample_problems

    rows = sample_problems(args.batch_size * (args.steps + args.warmup), Difficulty(), seed=0)
    pairs = Dataset.from_dict({
        "prompt": [r["problem"] for r in rows], "chosen": [r["solution"] for r in rows],
        "rejected": [r["solution"][:-1] + "0" for r in rows], "margin": [(i % 10) / 10 for i in range(len(rows))]})
    data = to_conversational(pairs)
    cuda = torch.cuda.is_available()
    common = dict(output_dir=tempfile.mkdtemp(), bf16=cuda, gradient_checkpointing=False, report_to="none",
                  per_device_train_batch_size=args.batch_size, max_length=128, learning_rate=1e-5, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if kind == "stock":
        trainer = DPOTrainer(model=model_path, args=DPOConfig(**common), train_dataset=data.remove_columns(GAP_KEY),
                             processing_class=tokenizer)
    else:
        trainer = PrefDPOTrainer(model=model_path, args=PrefDPOConfig(**common, pref_loss="weighted",
                                                                      sft_route_threshold=0.2),
                                 train_dataset=data, processing_class=tokenizer)
    ds = trainer.train_dataset
    batches = [trainer.data_collator([ds[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)])
               for b in range(args.steps + args.warmup)]
    model = trainer.model.to(trainer.accelerator.device)
    if trainer.ref_model is not None:
        trainer.ref_model.to(trainer.accelerator.device)
    trainer.create_optimizer_and_scheduler(num_training_steps=len(batches))
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step reads it
    tokens = 0
    for i, batch in enumerate(batches):
        if i == args.warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        trainer.training_step(model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        if i >= args.warmup:
            tokens += int(batch["attention_mask"].sum())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() for p in model.parameters())
    queue.put({"step_s": seconds / args.steps, "peak_bytes": peak, "tokens_per_s": tokens / seconds,
               "params": params, "device": torch.cuda.get_device_name() if cuda else "CPU"})


def _result(queue, process, kind: str) -> dict:
    """The worker's measurements, or an error as soon as the worker dies without sending them."""
    while True:
        try:
            return queue.get(timeout=5)
        except Empty:
            if not process.is_alive():
                raise RuntimeError(f"the {kind} benchmark process failed (exit {process.exitcode}); see above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two trainers this many times each")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak (H100 SXM bf16 dense: 989)")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = build_model(args.layers, args.hidden, Path(tmp) / "model")
        results: dict[str, list[dict]] = {"stock": [], "prefopt": []}
        for _ in range(args.repeats):
            for kind in ("stock", "prefopt"):
                queue = context.Queue()
                process = context.Process(target=measure, args=(kind, model_path, args, queue))
                process.start()
                results[kind].append(_result(queue, process, kind))
                process.join()
                print(f"{kind}: {results[kind][-1]['step_s'] * 1000:.1f} ms/step", flush=True)

    best = {kind: min(runs, key=lambda r: r["step_s"]) for kind, runs in results.items()}
    stock, ours = best["stock"], best["prefopt"]
    gpu = stock["device"] != "CPU"
    print(f"\nModel: Llama {args.layers}x{args.hidden} ({stock['params'] / 1e6:.1f}M parameters), batch "
          f"{args.batch_size} pairs, {args.steps} timed steps (best of {args.repeats}); device: {stock['device']}")
    print("Peak memory: " + ("torch.cuda.max_memory_allocated" if gpu else "peak RSS of the process") + "\n")
    header = "| trainer | step time (ms) | peak memory (MiB) |" + (" tokens/s | MFU |" if gpu else "")
    print(header)
    print("| --- | --- | --- |" + (" --- | --- |" if gpu else ""))
    for name, r in (("TRL DPOTrainer (sigmoid)", stock), ("prefopt PrefDPOTrainer (weighted + SFT routing)", ours)):
        row = f"| {name} | {r['step_s'] * 1000:.1f} | {r['peak_bytes'] / 2**20:,.0f} |"
        if gpu:
            mfu = 8 * r["params"] * r["tokens_per_s"] / (args.peak_tflops * 1e12)
            row += f" {r['tokens_per_s']:,.0f} | {100 * mfu:.1f}% |"
        print(row)
    print(f"| prefopt / TRL | {ours['step_s'] / stock['step_s']:.3f}x | "
          f"{ours['peak_bytes'] / stock['peak_bytes']:.3f}x |" + (" | |" if gpu else ""))


if __name__ == "__main__":
    main()
