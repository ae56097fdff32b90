"""Training overhead: prefopt's PrefDPOTrainer against TRL's stock DPOTrainer, same model and batches.

    python benchmarks/training.py                          # a 4x256 Llama from a config, on CPU
    python benchmarks/training.py --layers 24 --hidden 896 --batch-size 8   # about 0.5B parameters (GPU)

Step time: both trainers live in one process and take their steps in turn (the order alternating), over
the same pre-collated batches, so that the machine's noise hits both alike; median and mean per step.
Peak memory: each trainer alone in a fresh process. Prints one Markdown table with the ratios.
PrefDPOTrainer runs its gap-weighted loss with SFT routing (the most work it does per step). On a GPU it
also prints tokens/s and model FLOPs utilisation (8 x params FLOPs per token: policy forward and backward
plus the reference forward; peak from --peak-tflops).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from queue import Empty

from common import peak_rss_bytes


def build_model(layers: int, hidden: int, directory: Path) -> str:
    import torch
    from transformers import LlamaForCausalLM

    from prefopt.world.models import TinyModelSpec, llama_config
    from prefopt.world.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = LlamaForCausalLM(
        llama_config(TinyModelSpec(num_layers=layers, hidden_size=hidden), len(tokenizer), tokenizer)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def make_trainer(kind: str, model_path: str, args: argparse.Namespace):
    """A ready-to-step trainer and its pre-collated batches (the same pairs for both kinds)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefopt.training.data import to_conversational
    from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
    from prefopt.training.trainer_base import GAP_KEY
    from prefopt.world.tasks import Difficulty, sample_problems

    rows = sample_problems(args.batch_size * (args.steps + args.warmup), Difficulty(), seed=0)
    pairs = Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": [r["solution"][:-1] + "0" for r in rows],
            "margin": [(i % 10) / 10 for i in range(len(rows))],
        }
    )
    data = to_conversational(pairs)
    common = dict(
        output_dir=tempfile.mkdtemp(),
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=args.batch_size,
        max_length=128,
        learning_rate=1e-5,
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if kind == "stock":
        trainer = DPOTrainer(
            model=model_path,
            args=DPOConfig(**common),
            train_dataset=data.remove_columns(GAP_KEY),
            processing_class=tokenizer,
        )
    else:
        trainer = PrefDPOTrainer(
            model=model_path,
            args=PrefDPOConfig(**common, pref_loss="weighted", sft_route_threshold=0.2),
            train_dataset=data,
            processing_class=tokenizer,
        )
    ds = trainer.train_dataset
    batches = [
        trainer.data_collator([ds[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)])
        for b in range(args.steps + args.warmup)
    ]
    trainer.model.to(trainer.accelerator.device)
    if trainer.ref_model is not None:
        trainer.ref_model.to(trainer.accelerator.device)
    trainer.create_optimizer_and_scheduler(num_training_steps=len(batches))
    trainer.current_gradient_accumulation_steps = 1  # set by train(); training_step reads it
    return trainer, batches


def timed_step(trainer, batch) -> float:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_time(model_path: str, args: argparse.Namespace, queue) -> None:
    """Both trainers in one process, stepping in turn (order alternating), so machine noise hits both alike."""
    import torch

    trainers = {kind: make_trainer(kind, model_path, args) for kind in ("stock", "prefopt")}
    times: dict[str, list[float]] = {kind: [] for kind in trainers}
    tokens = {kind: 0 for kind in trainers}
    for i in range(args.steps + args.warmup):
        order = list(trainers) if i % 2 == 0 else list(reversed(trainers))
        for kind in order:
            trainer, batches = trainers[kind]
            seconds = timed_step(trainer, batches[i])
            if i >= args.warmup:
                times[kind].append(seconds)
                tokens[kind] += int(batches[i]["attention_mask"].sum())
    params = sum(p.numel() for p in trainers["stock"][0].model.parameters())
    queue.put(
        {
            kind: {
                "median_s": statistics.median(t),
                "mean_s": statistics.mean(t),
                "tokens_per_s": tokens[kind] / sum(t),
            }
            for kind, t in times.items()
        }
        | {"params": params, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"}
    )


def measure_memory(kind: str, model_path: str, args: argparse.Namespace, queue) -> None:
    """Peak memory of one trainer alone in a fresh process."""
    import torch

    trainer, batches = make_trainer(kind, model_path, args)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for batch in batches:
        timed_step(trainer, batch)
    queue.put(torch.cuda.max_memory_allocated() if torch.cuda.is_available() else peak_rss_bytes())


def _result(queue, process, kind: str) -> dict:
    """The worker's measurements, or an error as soon as the worker dies without sending them."""
    while True:
        try:
            return queue.get(timeout=5)
        except Empty:
            if not process.is_alive():
                failed = f"the {kind} benchmark process failed (exit {process.exitcode}); see above"
                raise RuntimeError(failed) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak (H100 SXM bf16 dense: 989)")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")

    def in_subprocess(target, *target_args):
        queue = context.Queue()
        process = context.Process(target=target, args=(*target_args, queue))
        process.start()
        result = _result(queue, process, target.__name__)
        process.join()
        return result

    with tempfile.TemporaryDirectory() as tmp:
        model_path = build_model(args.layers, args.hidden, Path(tmp) / "model")
        timing = in_subprocess(measure_time, model_path, args)
        memory = {kind: in_subprocess(measure_memory, kind, model_path, args) for kind in ("stock", "prefopt")}

    stock, ours = timing["stock"], timing["prefopt"]
    gpu = timing["device"] != "CPU"
    print(
        f"\nModel: Llama {args.layers}x{args.hidden} ({timing['params'] / 1e6:.1f}M parameters), batch "
        f"{args.batch_size} pairs, {args.steps} timed steps each, interleaved; device: {timing['device']}"
    )
    print(
        "Peak memory: " + ("torch.cuda.max_memory_allocated" if gpu else "peak RSS") + ", each trainer alone "
        "in a fresh process\n"
    )
    print("| trainer | median step (ms) | mean step (ms) | peak memory (MiB) |" + (" tokens/s | MFU |" if gpu else ""))
    print("| --- | --- | --- | --- |" + (" --- | --- |" if gpu else ""))
    for name, kind in (
        ("TRL DPOTrainer (sigmoid)", "stock"),
        ("prefopt PrefDPOTrainer (weighted + SFT routing)", "prefopt"),
    ):
        r = timing[kind]
        row = f"| {name} | {r['median_s'] * 1000:.1f} | {r['mean_s'] * 1000:.1f} | {memory[kind] / 2**20:,.0f} |"
        if gpu:
            mfu = 8 * timing["params"] * r["tokens_per_s"] / (args.peak_tflops * 1e12)
            row += f" {r['tokens_per_s']:,.0f} | {100 * mfu:.1f}% |"
        print(row)
    print(
        f"| prefopt / TRL | {ours['median_s'] / stock['median_s']:.3f}x | {ours['mean_s'] / stock['mean_s']:.3f}x | "
        f"{memory['prefopt'] / memory['stock']:.3f}x |" + (" | |" if gpu else "")
    )


if __name__ == "__main__":
    main()
