"""What the DPO and KTO entry points share: recipe or flat ``--config``, train, save, resume, mark done.

The entry points take a whole prefopt recipe as ``--config``:

    accelerate launch --config_file accelerate_configs/X.yaml -m prefopt.training.dpo --config RECIPE.yaml [--flag v]

A recipe is resolved to the flat train config that its train stage would write (pairs from the recipe's
pairs stage, the policy from ``training.model``, output into the train stage's directory) by ``prefopt train RECIPE
--config-only`` in a child process (stage keys are the pipeline's, a layer above training), and the command-line
flags override it as usual. Run without overrides, the train stage is marked complete at the
end, so `prefopt run` then skips it; with overrides it is not (the result no longer matches the recipe).

The policy loads as TRL's own ``trl dpo`` script loads it: ``trl.ModelConfig`` fields (flat in the config, or
``training.model_args`` in a recipe) become ``model_init_kwargs`` (revision, attn_implementation, dtype; unset
dtype: bfloat16 on CUDA, float32 on CPU), ``trl.get_peft_config`` and ``trl.get_quantization_config``. With an
adapter, TRL's reference is the adapter-disabled policy, and ``<output_dir>/model`` holds the adapter as TRL saves
it. ``<output_dir>/model_summary.json`` says whether it is an adapter, over which base, and how many parameters
trained.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from datasets import Dataset
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from prefopt.cache import mark_complete
from prefopt.engines.base import adapter_config, load_chat_tokenizer
from prefopt.errors import ConfigError
from prefopt.tracking import add_stage_statistics
from prefopt.training.checkpoints import MarkCompleteCheckpoints, resume_checkpoint
from prefopt.training.config import TrainingConfig
from prefopt.training.launch import FINAL_MODEL_DIR, checked_model_args, default_dtype, model_fields

logger = logging.getLogger(__name__)
SUMMARY = "model_summary.json"
_DEFAULT_METHOD = next(f.default for f in dataclasses.fields(TrainingConfig) if f.name == "method")

# trl.ModelConfig's fields (model_name_or_path is the script's), dtype unset by default, and the chat template.
ModelArguments = dataclasses.make_dataclass(
    "ModelArguments",
    [
        *[
            (name, f.type, dataclasses.field(default=None if name == "dtype" else f.default, metadata=f.metadata))
            for name, f in model_fields().items()
        ],
        (
            "chat_template",
            str | None,
            dataclasses.field(
                default=None, metadata={"help": "Chat template replacing the tokenizer's: Jinja text or a .jinja file."}
            ),
        ),
    ],
)


def recipe_method(path: str) -> str | None:
    """A recipe's ``training.method`` (the default where unset); None when ``path`` is a flat train config."""
    data = yaml.safe_load(Path(path).read_text())
    if not (isinstance(data, dict) and "training" in data and "name" in data):
        return None
    return (data["training"] or {}).get("method", _DEFAULT_METHOD)


def resolve_recipe_argv(argv: list[str] | None, method: str) -> tuple[list[str], Path | None]:
    """``argv`` with a recipe ``--config`` replaced by its flat train config; and the stage directory to mark
    complete after training (None when the config was not a recipe, or flags override it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        return argv, None
    index = argv.index("--config") + 1
    given = recipe_method(argv[index]) if index < len(argv) else None
    if given is None:
        return argv, None
    train_config = recipe_train_config(argv[index])  # the recipe checked, as prefopt checks it
    if given != method:
        raise SystemExit(f"{argv[index]}: training.method is {given!r}; launch -m prefopt.training.{given} instead")
    argv[index] = str(train_config)
    overridden = len(argv) > 2
    return argv, None if overridden else train_config.parent


def recipe_train_config(recipe: str) -> Path:
    """The flat train config of ``recipe``'s train stage, written by ``prefopt train RECIPE --config-only`` (its
    errors, one line, on this process's stderr; their exit code is this one's)."""
    child = subprocess.run(
        [sys.executable, "-m", "prefopt.cli", "train", recipe, "--config-only"], stdout=subprocess.PIPE, text=True
    )
    if child.returncode != 0:
        raise SystemExit(child.returncode)
    return Path(child.stdout.strip().splitlines()[-1])


def load_policy_tokenizer(
    model_path: str, chat_template: str | None, where: str, revision: str = "main", trust_remote_code: bool = False
):
    """The policy's tokenizer as training uses it: ``chat_template`` in place of its own (one it lacks and none
    given is an error), an eos token (required), and a pad token (eos where it has none)."""
    if trust_remote_code:
        logger.warning("trust_remote_code is on: the Python code shipped with %s runs in this process", model_path)
    tokenizer = load_chat_tokenizer(
        model_path, chat_template, where, revision=revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.eos_token is None:
        raise ConfigError(
            f"training.model: {model_path}: its tokenizer has no eos token (given none, expected one: "
            "completions could never end)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("%s has no pad token: padding with its eos token %r", model_path, tokenizer.eos_token)
    return tokenizer


def model_config(model_path: str, fields: ModelArguments) -> ModelConfig:
    """The ``trl.ModelConfig`` of the policy (checked as a recipe's is), dtype defaulted for this machine."""
    values = {k: v for k, v in dataclasses.asdict(fields).items() if k != "chat_template"}
    checked = checked_model_args({**values, "dtype": values["dtype"] or default_dtype()}, "train config")
    return ModelConfig(model_name_or_path=model_path, **checked)


def model_init_kwargs(config: ModelConfig) -> dict:
    """What TRL's own scripts pass to ``from_pretrained`` (quantization goes to the trainer separately)."""
    return {"revision": config.model_revision, "attn_implementation": config.attn_implementation, "dtype": config.dtype}


def model_summary(trainer, base_model: str, final: Path) -> dict:
    """Whether the saved model is an adapter, its base, dtype and how many parameters trained."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    params = list(model.parameters())
    return {
        "adapter": adapter_config(str(final)) is not None,
        "base_model": base_model,
        "dtype": str(next(iter(params)).dtype).removeprefix("torch."),
        "attn_implementation": model.config._attn_implementation,
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "parameters": sum(p.numel() for p in params),
    }


def train_and_save(trainer, tokenizer, output_dir: str, base_model: str) -> dict:
    """Train (resuming from the last checkpoint in ``output_dir``, if any), save to ``output_dir/model`` (an
    adapter's own files where the policy trains one, as TRL saves it) and return its summary."""
    main = trainer.accelerator.is_main_process
    max_steps = trainer.args.max_steps
    last = resume_checkpoint(output_dir, max_steps=max_steps) if main else None  # the main process removes first
    trainer.accelerator.wait_for_everyone()
    if not main:
        last = resume_checkpoint(output_dir, remove_torn=False, max_steps=max_steps)
    if last:
        logger.info("Resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    final = Path(output_dir) / FINAL_MODEL_DIR
    trainer.save_model(str(final))
    summary = model_summary(trainer, base_model, final)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(final)
        (Path(output_dir) / SUMMARY).write_text(json.dumps(summary, indent=2))
        trainer.state.save_to_json(str(Path(output_dir) / "trainer_state.json"))  # optimizer steps, for the tables
        logger.info(
            "Saved the aligned policy (%s) to %s", "a LoRA adapter" if summary["adapter"] else "full weights", final
        )
    return summary


def run_entry(
    argv: list[str] | None,
    method: str,
    script_cls: type,
    config_cls: type,
    trainer_cls: type,
    load_train_dataset: Callable[[object], Dataset],
) -> None:
    """Parse (recipe or flat config, plus flags), load the training data (``load_train_dataset(script_args)``),
    train, save, and mark a recipe's stage done."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s prefopt.train %(levelname)s %(message)s")
    argv, stage_dir = resolve_recipe_argv(argv, method)
    script_args, training_args, fields = TrlParser((script_cls, config_cls, ModelArguments)).parse_args_and_config(
        args=argv
    )
    path = script_args.model_name_or_path
    config = model_config(path, fields)
    tokenizer = load_policy_tokenizer(
        path, fields.chat_template, "chat_template", config.model_revision, training_args.trust_remote_code
    )
    training_args.model_init_kwargs = {**model_init_kwargs(config), **(training_args.model_init_kwargs or {})}
    trainer = trainer_cls(
        model=path,
        args=training_args,
        train_dataset=load_train_dataset(script_args),
        processing_class=tokenizer,
        peft_config=get_peft_config(config),
        quantization_config=get_quantization_config(config),
        callbacks=[MarkCompleteCheckpoints()],
    )
    add_stage_statistics(trainer, script_args.pairs_path)  # judge and pair statistics into the tracker's run
    summary = train_and_save(trainer, tokenizer, training_args.output_dir, path)
    if stage_dir is not None and trainer.accelerator.is_main_process:
        mark_complete(stage_dir, {"stage": "train", "launched_by_hand": True, "adapter": summary["adapter"]})
    finish(trainer)


def finish(trainer) -> None:
    """End a (possibly distributed) run without a teardown hang: with every rank still connected, drop the DDP
    wrapper (its reducer holds the process group) and collect it, then end the trackers and the process group as
    TRL's own scripts do (``trainer.end()``). Destroying the group first left a gloo rank joining a worker thread
    forever at exit, now and then."""
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    trainer.model_wrapped = trainer.model
    accelerator.free_memory()
    gc.collect()
    accelerator.wait_for_everyone()
    trainer.end()
