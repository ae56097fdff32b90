"""The GPU check: prefopt's GPU path on one GPU, each figure beside its goal, models built locally (no downloads).

    bash scripts/gpu_check.sh                          # every part, a ~0.5B Llama (Qwen2.5-0.5B's shape)
    python benchmarks/gpu_check.py --parts dpo,save    # some parts
    python benchmarks/gpu_check.py --smoke             # tiny model, few steps: the code paths, on CPU too

Parts (each runs when its packages and device are there, else it is reported as skipped, with the reason):

- ``generation``: prefopt's vLLM engine against its transformers engine, same model, prompts and sampling
  (temperature 1, n samples); generated tokens per second and the ratio (goal: vLLM at least 20x).
- ``dpo``: PrefDPOTrainer (gap-weighted loss with SFT routing; its fp32 LM head with TF32 matmuls, the default on
  a GPU, and with IEEE ones) and TRL's DPOTrainer stepping in turn in bf16 over the same batches of pairs at
  sequence ``--seq-len``; tokens/s and model FLOPs utilisation (8 x parameters FLOPs per token: the policy's
  forward and backward and the reference's forward; goal: 40%) and prefopt's step time over TRL's (goal: 2%).
- ``precision``: the pair log-ratio h under bf16 mixed precision against fp32, per pair at ``--seq-len``: prefopt's
  head with TF32 and with IEEE matmuls, and TRL's head as shipped.
- ``save``: the real entry point ``prefopt.training.dpo``-style trainer under ``accelerate launch`` with
  accelerate_configs/fsdp2.yaml and deepspeed_zero3.yaml: a few steps, the sharded model's parameters (gathered)
  and logits on a fixed batch, ``save_model``, then the saved directory reloaded with ``from_pretrained`` in a
  fresh process must hold exactly the trained parameters (which differ from the untrained model's; the logits
  are shown beside them). On a CPU, FSDP2 runs on two gloo ranks; ZeRO-3 needs a GPU and DeepSpeed.
- ``judge``: structured output through vLLM: every completion constrained by a judge's JSON schema must parse and
  validate.

Prints a Markdown table (part, figure, value, goal, verdict) and writes it as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}"
    "assistant: {% endif %}"
)
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"correctness": {"type": "integer", "minimum": 1, "maximum": 5}, "verdict": {"enum": ["ok", "bad"]}},
    "required": ["correctness", "verdict"],
}


@dataclass
class Row:
    part: str
    figure: str
    value: str
    goal: str = ""
    verdict: str = ""  # "pass", "miss", "skipped", "failed", or "" (informational)


@dataclass
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int


FULL = Shape(layers=24, hidden=896, intermediate=4864, heads=14, kv_heads=2, vocab=151936)  # Qwen2.5-0.5B's shape
SMOKE = Shape(layers=2, hidden=64, intermediate=128, heads=2, kv_heads=2, vocab=512)


@dataclass
class Settings:
    smoke: bool
    shape: Shape
    seq_len: int
    batch_pairs: int
    steps: int
    warmup: int
    prompts: int
    n: int
    max_new_tokens: int
    peak_tflops: float | None
    workdir: Path
    rows: list[Row] = field(default_factory=list)


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


# ---- the model: a Llama from a config and a tokenizer built here -------------------------------------------------


def build_tokenizer(vocab: int):
    """Every printable ASCII character a token (so JSON can be spelt), and filler words ``w0``, ``w1``, ... up to
    ``vocab``; a random model's completions decode to text that re-tokenises to the same count."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    chars = [chr(c) for c in range(32, 127)]
    words = [f"w{i}" for i in range(max(0, vocab - len(specials) - len(chars)))]
    vocabulary = {t: i for i, t in enumerate(specials + chars + words)}
    tok = Tokenizer(models.WordLevel(vocabulary, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"w[0-9]+|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(shape: Shape, directory: Path, seq_len: int, seed: int = 0) -> str:
    """A randomly initialised Llama of ``shape`` saved (float32) with its tokenizer, once per directory."""
    if (directory / "config.json").is_file():
        return str(directory)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(shape.vocab)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=max(32, shape.hidden // shape.heads),  # vLLM's CPU backend takes head_dim 32 and up
        max_position_embeddings=max(2048, 2 * seq_len),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def random_text(rng, words: int, vocab: int) -> str:
    return "".join(f"w{rng.randrange(max(1, vocab - 100))}" for _ in range(words))


def pairs_dataset(count: int, seq_len: int, vocab: int, seed: int = 0):
    """Pairs whose prompt is a quarter of ``seq_len`` tokens and each response the rest (chat markup aside)."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    prompt_len, response_len = seq_len // 4, seq_len - seq_len // 4 - 16
    return Dataset.from_dict(
        {
            "prompt": [random_text(rng, prompt_len, vocab) for _ in range(count)],
            "chosen": [random_text(rng, response_len, vocab) for _ in range(count)],
            "rejected": [random_text(rng, response_len, vocab) for _ in range(count)],
            "margin": [(i % 10) / 10 for i in range(count)],
        }
    )


# ---- part: generation --------------------------------------------------------------------------------------------


def part_generation(s: Settings, model: str) -> None:
    lacking = missing("vllm")
    if lacking or not cuda():
        why = f"needs {', '.join(lacking)}" if lacking else "needs a CUDA GPU (vLLM's CPU build is no reference)"
        s.rows.append(Row("generation", "vLLM / transformers tokens/s", why, ">= 20x", "skipped"))
        return
    import random

    from prefopt.engines.base import SamplingParams
    from prefopt.engines.transformers import TransformersEngine
    from prefopt.engines.vllm import VLLMEngine

    rng = random.Random(1)
    prompts = [random_text(rng, 32, s.shape.vocab) for _ in range(s.prompts)]
    params = SamplingParams(n=s.n, temperature=1.0, max_new_tokens=s.max_new_tokens, seed=0)
    rates = {}
    for name in ("transformers", "vllm"):
        engine = VLLMEngine(model, max_model_len=2048) if name == "vllm" else TransformersEngine(model)
        engine.generate(prompts[:4], params)  # warm-up
        start = time.perf_counter()
        if name == "vllm":
            outputs = engine.generate(prompts, params)
        else:  # generate() pads a whole batch: the stage feeds it batch_size (64) prompts at a time
            outputs = [g for i in range(0, len(prompts), 64) for g in engine.generate(prompts[i : i + 64], params)]
        seconds = time.perf_counter() - start
        tok = engine.tokenizer
        tokens = sum(len(tok(c.text, add_special_tokens=False)["input_ids"]) for g in outputs for c in g)
        rates[name] = tokens / seconds
        s.rows.append(Row("generation", f"{name} tokens/s ({s.prompts} prompts x {s.n})", f"{rates[name]:,.0f}"))
        engine.close()
    ratio = rates["vllm"] / rates["transformers"]
    s.rows.append(
        Row(
            "generation",
            "vLLM / transformers",
            f"{ratio:.1f}x",
            ">= 20x",
            "" if s.smoke else "pass" if ratio >= 20 else "miss",
        )
    )


# ---- part: dpo (MFU and the overhead over stock TRL) ------------------------------------------------------------


def make_trainer(kind: str, model: str, s: Settings, output_dir: str, **overrides):
    import torch
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefopt.training.data import to_conversational
    from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer
    from prefopt.training.trainer_base import GAP_KEY

    bf16 = torch.cuda.is_available()
    pairs = to_conversational(pairs_dataset(s.batch_pairs * (s.steps + s.warmup), s.seq_len, s.shape.vocab))
    common = dict(
        output_dir=output_dir,
        bf16=bf16,
        model_init_kwargs={"dtype": "bfloat16" if bf16 else "float32"},
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=s.batch_pairs,
        max_length=s.seq_len,
        learning_rate=1e-5,
        seed=0,
    )
    common.update(overrides)
    tokenizer = AutoTokenizer.from_pretrained(model)
    if kind == "stock":
        return DPOTrainer(
            model=model,
            args=DPOConfig(**common),
            train_dataset=pairs.remove_columns(GAP_KEY),
            processing_class=tokenizer,
        )
    return PrefDPOTrainer(
        model=model,
        args=PrefDPOConfig(**common, pref_loss="weighted", sft_route_threshold=0.2),
        train_dataset=pairs,
        processing_class=tokenizer,
    )


def part_dpo(s: Settings, model: str) -> None:
    lacking = missing("trl", "datasets")
    if lacking:
        reason = f"needs {', '.join(lacking)}"
        s.rows.append(Row("dpo", "MFU, PrefDPO / TRL step", reason, ">= 40%, <= 1.02x", "skipped"))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from training import timed_step  # benchmarks/training.py: one optimizer step, synchronised

    # prefopt's trainer as users get it (fp32 LM head, TF32 matmuls on a GPU: tf32_default) and with IEEE fp32 in the
    # head (tf32: false), beside stock TRL (bf16 head under autocast). TF32 is a process-wide switch, set before
    # each step for the trainer that takes it.
    kinds = {"stock": (None, {}), "prefopt": (cuda(), {}), "prefopt-ieee": (False, {"tf32": False})}
    trainers = {}
    for kind, (_, fields) in kinds.items():
        trainer = make_trainer(kind.split("-")[0], model, s, str(s.workdir / f"dpo-{kind}"), **fields)
        ds = trainer.train_dataset
        b = s.batch_pairs
        batches = [trainer.data_collator([ds[i] for i in range(k * b, (k + 1) * b)]) for k in range(s.steps + s.warmup)]
        trainer.model.to(trainer.accelerator.device)
        if trainer.ref_model is not None:
            trainer.ref_model.to(trainer.accelerator.device)
        trainer.create_optimizer_and_scheduler(num_training_steps=len(batches))
        trainer.current_gradient_accumulation_steps = 1
        trainers[kind] = (trainer, batches)
    times = {k: [] for k in trainers}
    tokens = dict.fromkeys(trainers, 0)
    for i in range(s.steps + s.warmup):
        for kind in list(trainers) if i % 2 == 0 else list(reversed(trainers)):
            trainer, batches = trainers[kind]
            set_tf32(kinds[kind][0])
            seconds = timed_step(trainer, batches[i])
            if i >= s.warmup:
                times[kind].append(seconds)
                tokens[kind] += int(batches[i]["attention_mask"].sum())
    params = sum(p.numel() for p in trainers["stock"][0].model.parameters())
    dtype = str(next(trainers["prefopt"][0].model.parameters()).dtype).removeprefix("torch.")
    s.rows.append(Row("dpo", "policy parameters, weights", f"{params / 1e6:.1f}M, {dtype}"))
    labels = {
        "stock": "TRL DPOTrainer",
        "prefopt": f"PrefDPOTrainer ({'TF32' if cuda() else 'fp32'} head)",
        "prefopt-ieee": "PrefDPOTrainer (IEEE fp32 head, tf32: false)",
    }
    for kind, label in labels.items():
        rate = tokens[kind] / sum(times[kind])
        s.rows.append(
            Row("dpo", f"{label} median step (seq {s.seq_len})", f"{statistics.median(times[kind]) * 1e3:.1f} ms")
        )
        s.rows.append(Row("dpo", f"{label} tokens/s", f"{rate:,.0f}"))
        if s.peak_tflops:
            mfu = 8 * params * rate / (s.peak_tflops * 1e12)
            verdict = "" if kind != "prefopt" or s.smoke else ("pass" if mfu >= 0.40 else "miss")
            s.rows.append(
                Row("dpo", f"{label} MFU (peak {s.peak_tflops:.0f} TFLOP/s)", f"{100 * mfu:.1f}%", ">= 40%", verdict)
            )
    for kind in ("prefopt", "prefopt-ieee"):
        ratio = statistics.median(times[kind]) / statistics.median(times["stock"])
        verdict = "" if s.smoke or kind != "prefopt" else "pass" if ratio <= 1.02 else "miss"  # smoke: noise
        s.rows.append(Row("dpo", f"{labels[kind]} / TRL median step", f"{ratio:.3f}x", "<= 1.02x", verdict))


def set_tf32(on: bool | None) -> None:
    """TF32 for fp32 matmuls on (True) or off (False, IEEE); None leaves the switch as it is."""
    import torch

    if on is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"


# ---- part: precision (the pair log-ratio h under bf16 against fp32) ------------------------------------------------


def part_precision(s: Settings, model: str) -> None:
    """|h_bf16 - h_fp32| per pair at sequence ``--seq-len``: h is the DPO pair log-ratio (chosen minus rejected
    log-ratio of policy over reference), the quantity every loss and the implicit margins read. fp32: no autocast,
    IEEE matmuls. Under bf16 autocast: prefopt's fp32 head with TF32 matmuls (its default on a GPU), with IEEE
    ones, and TRL's head as shipped (bf16 logits)."""
    lacking = missing("trl", "datasets")
    if lacking:
        s.rows.append(Row("precision", "|h_bf16 - h_fp32|", f"needs {', '.join(lacking)}", "", "skipped"))
        return
    import torch
    from transformers import AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head, create_model_from_path

    from prefopt.training.data import to_conversational
    from prefopt.training.dpo_trainer import PrefDPOConfig, PrefDPOTrainer

    reference = build_model(s.shape, s.workdir / "reference", s.seq_len, seed=1)
    pairs = to_conversational(pairs_dataset(16, s.seq_len, s.shape.vocab, seed=5))
    gpu = cuda()

    def margins(name: str, bf16: bool, tf32: bool | None, trl_head: bool = False) -> torch.Tensor:
        args = PrefDPOConfig(
            output_dir=str(s.workdir / f"precision-{name}"),
            bf16=bf16,
            tf32=tf32 if gpu else None,
            use_cpu=not gpu,
            model_init_kwargs={"dtype": "float32"},
            per_device_eval_batch_size=4,
            max_length=s.seq_len,
            report_to="none",
        )
        ref = create_model_from_path(reference, dtype=torch.float32)
        trainer = PrefDPOTrainer(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=pairs,
            processing_class=AutoTokenizer.from_pretrained(model),
        )
        if trl_head:
            for m in (trainer.model, trainer.ref_model):
                add_fused_lm_head(m)
        set_tf32(tf32)
        chosen, rejected = trainer.pair_logratios()
        del trainer, ref
        if gpu:
            torch.cuda.empty_cache()
        return (chosen - rejected).double()

    fp32 = margins("fp32", bf16=False, tf32=False)
    s.rows.append(
        Row("precision", f"|h_fp32| over {len(fp32)} pairs (seq {s.seq_len}): mean", f"{fp32.abs().mean():.2f} nats")
    )
    variants = {
        "prefopt fp32 head, TF32 (default)": (True, False),
        "prefopt fp32 head, IEEE": (False, False),
        "TRL's head as shipped (bf16 logits)": (False, True),
    }
    if not gpu:
        variants = {"prefopt fp32 head": (None, False), "TRL's head as shipped (bf16 logits)": (None, True)}
    for i, (label, (tf32, trl_head)) in enumerate(variants.items()):
        error = (margins(f"bf16-{i}", True, tf32, trl_head) - fp32).abs()
        s.rows.append(
            Row("precision", f"bf16, {label}: max |h - h_fp32| (mean)", f"{error.max():.4f} ({error.mean():.4f}) nats")
        )


# ---- part: save (FSDP2 and ZeRO-3 under accelerate launch) ------------------------------------------------------


def save_worker(config_path: str) -> None:
    """Run under ``accelerate launch``: train a few steps, record logits on a fixed batch, save_model."""
    import torch

    cfg = json.loads(Path(config_path).read_text())
    s = Settings(**{**cfg["settings"], "shape": Shape(**cfg["settings"]["shape"]), "workdir": Path(cfg["out"])})
    trainer = make_trainer(
        "prefopt", cfg["model"], s, cfg["out"], max_steps=s.steps, logging_steps=1, learning_rate=1e-4, **cfg["extra"]
    )
    trainer.train()
    stats = parameter_stats(trainer.model)  # every rank: gathering is collective
    state = trainer.accelerator.state
    probe = torch.tensor([cfg["probe"]], device=trainer.accelerator.device)
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(input_ids=probe).logits.float().cpu()
    trainer.save_model(cfg["out"] + "/model")
    if trainer.accelerator.is_main_process:
        record = {"logits": logits, "distributed_type": str(state.distributed_type), "parameters": stats}
        torch.save(record, cfg["out"] + "/probe.pt")


def parameter_stats(model) -> dict[str, dict]:
    """Name -> dtype and (sum, sum of squares) in float64 of each whole parameter, as it is and rounded to bf16
    (:func:`same_weights` compares at the lower precision of two): ZeRO-3 shards gathered
    (``GatheredParameters``), FSDP2's DTensors made full (``full_tensor``); the trained weights, read without
    save_model's own gathering, to compare the saved file with."""
    import torch

    stats = {}
    for name, p in model.named_parameters():
        if hasattr(p, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([p]):
                t = p.data.detach().cpu()
        elif hasattr(p, "full_tensor"):
            t = p.full_tensor().detach().cpu()
        else:
            t = p.detach().cpu()
        exact, rounded = t.to(torch.float64), t.to(torch.bfloat16).to(torch.float64)
        stats[name] = {
            "dtype": str(t.dtype),
            "exact": (exact.sum().item(), exact.square().sum().item()),
            "bf16": (rounded.sum().item(), rounded.square().sum().item()),
        }
    return stats


def same_weights(a: dict | None, b: dict | None) -> bool:
    """Two :func:`parameter_stats` entries agree at the lower precision of the two (FSDP2 trains fp32 parameters
    that a bf16 model file holds rounded; bf16 to fp32 is exact)."""
    if a is None or b is None:
        return False
    key = "bf16" if "torch.bfloat16" in (a["dtype"], b["dtype"]) else "exact"
    # float64 sums of the same values in another memory order differ in the last digits; one bf16 step in one
    # element of the smallest tensor moves them far more than this
    return all(math.isclose(x, y, rel_tol=1e-12, abs_tol=0) for x, y in zip(a[key], b[key], strict=True))


def fsdp2_cpu_worker(config_path: str) -> None:
    """Run under ``torch.distributed.run`` on gloo ranks (accelerate runs FSDP on GPUs only): the calls accelerate
    makes for FSDP2 (``fully_shard`` on each decoder layer, then the root) and for a FULL_STATE_DICT save
    (``get_model_state_dict`` with ``full_state_dict``, ``broadcast_from_rank0``, ``cpu_offload``), one AdamW step,
    logits on the probe, then rank 0 saves with ``save_pretrained``."""
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    cfg = json.loads(Path(config_path).read_text())
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    sharded = type(next(model.parameters())).__name__
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor([cfg["probe"]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    stats = parameter_stats(model)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
    state_dict = get_model_state_dict(model, options=options)
    if dist.get_rank() == 0:
        model.save_pretrained(cfg["out"] + "/model", state_dict=state_dict)
        torch.save(
            {"logits": logits, "distributed_type": f"FSDP2 on gloo, {sharded} parameters", "parameters": stats},
            cfg["out"] + "/probe.pt",
        )
    dist.destroy_process_group()


def reload(model_dir: str, probe: list[int], dtype: str):
    """The logits on ``probe`` and the :func:`parameter_stats` of a saved model loaded with ``from_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    stats = parameter_stats(AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto"))  # as the file holds them
    # loaded in ``dtype`` rather than cast to it: .to() would cast the fp32 rotary buffers as well
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([probe], device=device)).logits.float().cpu()
    return logits, stats


def part_save(s: Settings, model: str, only: list[str] | None = None) -> None:
    import torch

    lacking = missing("trl", "datasets")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for name in only or ["fsdp2", "deepspeed_zero3"]:
        figure = f"{name}: save_model, reload, same weights"
        if lacking:
            s.rows.append(Row("save", figure, f"needs {', '.join(lacking)}", "equal", "skipped"))
            continue
        if name == "deepspeed_zero3" and (missing("deepspeed") or not gpus):
            why = "needs deepspeed" if missing("deepspeed") else "needs a CUDA GPU"
            s.rows.append(Row("save", figure, why, "equal", "skipped"))
            continue
        out = s.workdir / f"save-{name}"
        out.mkdir(parents=True, exist_ok=True)
        probe = list(range(20, 52))
        config = {
            "settings": {**{k: v for k, v in vars(s).items() if k not in ("rows", "workdir")}, "shape": vars(s.shape)},
            "model": model,
            "out": str(out),
            "probe": probe,
            "extra": {} if gpus else {"use_cpu": True},
        }
        (out / "worker.json").write_text(json.dumps(config))
        processes = max(gpus, 1) if gpus else 2  # on a CPU: two gloo ranks
        if gpus:  # the real thing: a PrefDPOTrainer under accelerate launch with the shipped config
            command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
            command += [str(ROOT / "accelerate_configs" / f"{name}.yaml"), "--num_processes", str(processes)]
            command += ["--mixed_precision", "bf16", str(Path(__file__)), "--save-worker", str(out / "worker.json")]
        else:  # accelerate turns FSDP into plain DDP on a CPU: the same torch calls, on gloo ranks
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
            command += [str(Path(__file__)), "--fsdp2-cpu-worker", str(out / "worker.json")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-6000:], sep="\n", file=sys.stderr)
            s.rows.append(Row("save", figure, f"launch failed (exit {done.returncode})", "equal", "failed"))
            continue
        saved = torch.load(out / "probe.pt")
        dtype = "bfloat16" if gpus else "float32"
        reloaded, reloaded_stats = reload(str(out / "model"), probe, dtype)
        untrained, untrained_stats = reload(model, probe, dtype)
        trained_stats = saved["parameters"]
        names = sorted(set(trained_stats) & set(reloaded_stats))
        equal = [n for n in names if same_weights(trained_stats[n], reloaded_stats[n])]
        moved_tensors = [n for n in names if not same_weights(trained_stats[n], untrained_stats.get(n))]
        diff = (reloaded - saved["logits"]).abs().max().item()
        moved = (untrained - saved["logits"]).abs().max().item()
        sharded = any(k in saved["distributed_type"] for k in ("FSDP", "DEEPSPEED"))  # not DDP in disguise
        # The verdict is on the weights: the saved file must hold exactly the trained parameters. The logits are
        # shown beside them (bf16 kernels of a sharded and a whole model round differently).
        ok = len(equal) == len(names) == len(trained_stats) > 0 and moved_tensors and sharded
        value = (
            f"{len(equal)}/{len(trained_stats)} tensors equal ({len(moved_tensors)} moved by training); logits max "
            f"|diff| {diff:.2e} (training moved them {moved:.2e}); {time.perf_counter() - start:.0f} s"
        )
        differ = [n for n in names if n not in equal]
        if differ:
            first = differ[0]
            value += (
                f"; differ: {', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''} (trained "
                f"{trained_stats[first]}, file {reloaded_stats[first]})"
            )
        s.rows.append(
            Row(
                "save",
                f"{figure} ({saved['distributed_type']}, {processes} ranks)",
                value,
                "all tensors equal",
                "pass" if ok else "miss",
            )
        )


# ---- part: judge (structured output through vLLM) ---------------------------------------------------------------


def part_judge(s: Settings, model: str) -> None:
    lacking = missing("vllm")
    if lacking or not cuda():
        why = f"needs {', '.join(lacking)}" if lacking else "needs a CUDA GPU"
        s.rows.append(Row("judge", "JSON-schema outputs valid", why, "100%", "skipped"))
        return
    from prefopt.engines.base import SamplingParams
    from prefopt.engines.vllm import VLLMEngine

    engine = VLLMEngine(model, max_model_len=2048)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=64, seed=0, json_schema=JUDGE_SCHEMA)
    outputs = engine.generate([f"Judge answer {i}: =42" for i in range(32)], params)
    engine.close()
    texts = [c.text for g in outputs for c in g]
    valid = 0
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        ok = isinstance(value.get("correctness"), int) and 1 <= value["correctness"] <= 5
        valid += ok and value.get("verdict") in ("ok", "bad")
    share = valid / len(texts)
    s.rows.append(
        Row(
            "judge",
            f"JSON-schema outputs valid ({len(texts)})",
            f"{100 * share:.0f}%",
            "100%",
            "pass" if share == 1 else "miss",
        )
    )


# ---- main --------------------------------------------------------------------------------------------------------

PARTS = {
    "generation": part_generation,
    "dpo": part_dpo,
    "precision": part_precision,
    "save": part_save,
    "judge": part_judge,
}


def table(rows: list[Row]) -> str:
    lines = ["| part | figure | value | goal | verdict |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.part} | {r.figure} | {r.value} | {r.goal} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and few steps: the code paths only")
    parser.add_argument("--seq-len", type=int, help="DPO sequence length (default 1024; smoke 64)")
    parser.add_argument("--batch-pairs", type=int, help="pairs per DPO step (default 8; smoke 2)")
    parser.add_argument("--steps", type=int, help="timed DPO steps (default 10; smoke 2)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (H100/H200: 989)")
    parser.add_argument("--workdir", help="where models and outputs go (default: a temporary directory)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--save-worker", help=argparse.SUPPRESS)
    parser.add_argument("--fsdp2-cpu-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.save_worker:
        save_worker(args.save_worker)
        return 0
    if args.fsdp2_cpu_worker:
        fsdp2_cpu_worker(args.fsdp2_cpu_worker)
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; expected some of {list(PARTS)}")
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device), None)
    with tempfile.TemporaryDirectory(prefix="prefopt-gpu-check-") as tmp:
        workdir = Path(args.workdir or tmp)
        s = Settings(
            smoke=args.smoke,
            shape=SMOKE if args.smoke else FULL,
            seq_len=args.seq_len or (64 if args.smoke else 1024),
            batch_pairs=args.batch_pairs or (2 if args.smoke else 8),
            steps=args.steps or (2 if args.smoke else 10),
            warmup=1 if args.smoke else 3,
            prompts=8 if args.smoke else 256,
            n=2 if args.smoke else 4,
            max_new_tokens=16 if args.smoke else 256,
            peak_tflops=peak if torch.cuda.is_available() else None,
            workdir=workdir,
        )
        model = build_model(s.shape, workdir / "model", s.seq_len)
        print(f"device: {device}; model: {s.shape}; parts: {', '.join(parts)}", flush=True)
        for name in parts:
            start = time.perf_counter()
            try:
                PARTS[name](s, model)
            except Exception as err:  # one part's failure is reported, the others still run
                import traceback

                traceback.print_exc()
                s.rows.append(
                    Row(name, "error", f"{type(err).__name__}: {' '.join(str(err).split())[:200]}", "", "failed")
                )
            print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
            print(table([r for r in s.rows if r.part == name]), flush=True)  # a run cut short keeps these
        print("\nAll parts:")
        print(table(s.rows))
        if args.json:
            Path(args.json).write_text(json.dumps([vars(r) for r in s.rows], indent=1))
        return 1 if any(r.verdict == "failed" for r in s.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
