"""lm-evaluation-harness on one model (``prefopt eval-harness``): its tasks (gsm8k, minerva_math, your own task YAMLs)
through ``lm_eval.simple_evaluate``, with its vLLM backend on a GPU and its transformers backend (``hf``) on CPU.

The results, each task's per-sample log and the table are written under ``<output_dir>/eval/<key>/`` beside
prefopt's own evaluations, keyed by the model's identity, lm_eval's version, the options and the task YAMLs given
with ``include_path`` (a cached run is printed again, not rerun). lm_eval is the optional extra ``prefopt[harness]``,
imported only when a run starts; its built-in tasks fetch their data from the Hub.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefopt.cache import atomic_output_dir, content_hash, file_fingerprint, is_complete
from prefopt.config_base import did_you_mean
from prefopt.errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("vllm", "hf")
RESULTS = "lm_eval_results.json"
TABLE = "table.md"


@dataclass(frozen=True)
class HarnessRun:
    """What lm_eval is asked to do (everything but the model)."""

    tasks: tuple[str, ...]
    backend: str
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: str = "auto"
    model_args: str = ""
    chat_template: bool = True
    system: str | None = None

    def __post_init__(self):
        if not self.tasks or not all(self.tasks):
            raise ConfigError(f"--tasks {','.join(self.tasks)!r}: expected lm-eval task names, e.g. gsm8k,minerva_math")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend}: expected one of {list(BACKENDS)}")
        if self.include_path is not None and not Path(self.include_path).exists():
            raise ConfigError(f"--include-path {self.include_path}: no such file or directory")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit {self.limit}: expected a number of problems per task >= 1")


def require_lm_eval():
    """The ``lm_eval`` module, or a one-line error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(
            'eval-harness: lm-evaluation-harness is not installed; run: pip install "prefopt[harness]" '
            "(or pip install lm_eval)"
        ) from None
    return lm_eval


def default_backend() -> str:
    """vLLM where a GPU is, else transformers."""
    import torch

    return "vllm" if torch.cuda.is_available() else "hf"


def run_harness(model_path: str, model_key: str, run: HarnessRun, stage_dir: Callable[[str], Path]) -> Path:
    """lm_eval's tasks on ``model_path``: the output directory (``lm_eval_results.json``, ``samples_<task>.jsonl``,
    ``table.md``) at ``stage_dir(key)``, reused when complete for this model, lm_eval version, options and task
    YAMLs."""
    lm_eval = require_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=run.include_path)
    for name in run.tasks:
        if name not in manager.all_tasks:
            raise ConfigError(
                f"--tasks {name}: not an lm-eval task or group{did_you_mean(name, manager.all_tasks)} "
                "(`lm_eval ls tasks` lists them; --include-path adds your own task YAMLs)"
            )
    own = file_fingerprint(run.include_path) if run.include_path else None
    out = stage_dir(content_hash("lm-eval", lm_eval.__version__, run, own, model_key))
    if is_complete(out):
        logger.info("[eval-harness] skipped: %s is complete for this model and these tasks", out)
        return out
    import torch
    from lm_eval.utils import handle_non_serializable, make_table

    model_args = f"pretrained={model_path},dtype=auto" + (f",{run.model_args}" if run.model_args else "")
    results = lm_eval.simple_evaluate(
        model=run.backend,
        model_args=model_args,
        tasks=list(run.tasks),
        task_manager=manager,
        num_fewshot=run.num_fewshot,
        batch_size=run.batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        limit=run.limit,
        apply_chat_template=run.chat_template,
        fewshot_as_multiturn=run.chat_template,
        system_instruction=run.system,
        log_samples=True,
    )
    with atomic_output_dir(out, {"stage": "eval lm-eval", "model": model_path, "tasks": list(run.tasks)}) as tmp:
        for task, samples in results.pop("samples").items():
            lines = [json.dumps(s, default=handle_non_serializable) for s in samples]
            (tmp / f"samples_{task}.jsonl").write_text("".join(line + "\n" for line in lines))
        (tmp / RESULTS).write_text(json.dumps(results, indent=2, default=handle_non_serializable))
        table = make_table(results) + ("\n" + make_table(results, "groups") if results.get("groups") else "")
        (tmp / TABLE).write_text(table)
    return out
