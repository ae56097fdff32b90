"""Shared, expensive fixtures: the tiny models are built once per test session into one cache directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

# Tests never reach the Hub (CI has no network beyond the package index): set before huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from prefopt.recipe import load_recipe  # noqa: E402

TESTS = Path(__file__).parent
CI_RECIPE = TESTS / "recipes" / "ci.yaml"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """A fresh model cache for the session (also seen by subprocesses and the CLI)."""
    path = Path(os.environ.get("PREFOPT_TEST_CACHE_DIR") or tmp_path_factory.mktemp("prefopt-cache"))
    os.environ["PREFOPT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def trackers_installed(monkeypatch):
    """The full recipes report to W&B, an optional extra (``prefopt[track]``) the test environment lacks: the
    recipe-load check finds each missing tracker as if installed, so that the rest of those recipes is tested
    (tests/test_tracking.py tests the check itself)."""
    import importlib.util
    import sys
    import types
    from importlib.machinery import ModuleSpec

    for name in ("wandb", "trackio"):
        if importlib.util.find_spec(name) is None:
            module = types.ModuleType(name)
            module.__spec__ = ModuleSpec(name, None)
            monkeypatch.setitem(sys.modules, name, module)


@pytest.fixture(scope="session")
def ci_recipe():
    return load_recipe(CI_RECIPE)


@pytest.fixture(scope="session")
def tiny_models(ci_recipe, model_cache) -> dict[str, str]:
    """Directories of the CI recipe's strong, weak and policy models, built once."""
    from prefopt.world.models import build_tiny_model

    return {name: str(build_tiny_model(spec, model_cache, desc=name)) for name, spec in ci_recipe.world.models.items()}


SMALL_VLLM = {"kv_cache_memory_bytes": 256 * 2**20, "max_model_len": 256}  # tiny models need a tiny KV cache


@pytest.fixture(scope="session")
def vllm_engine(tiny_models):
    """The one offline vLLM engine (CPU build here) of the session, serving the CI strong model."""
    from prefopt.engines.vllm import VLLMEngine

    engine = VLLMEngine(tiny_models["strong"], **SMALL_VLLM)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_models):
    """transformers' generate on the same model."""
    from prefopt.engines.transformers import TransformersEngine

    engine = TransformersEngine(tiny_models["strong"])
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, tiny_models) -> Path:
    """The CI recipe run end to end through the CLI once; later tests add stages beside its own."""
    from prefopt.cli import main

    out = tmp_path_factory.mktemp("run")
    assert main(["run", str(CI_RECIPE), "--output-dir", str(out)]) == 0
    return out


def ci_stage(run_dir: Path, stage: str) -> Path:
    """The CI recipe's own output directory of ``stage`` under ``run_dir`` (other tests add stages beside it)."""
    import dataclasses

    from prefopt.pipeline import Pipeline

    pipeline = Pipeline(dataclasses.replace(load_recipe(CI_RECIPE), output_dir=str(run_dir)))
    return pipeline.stage_dir(stage, getattr(pipeline, f"{stage}_key")())


def trainer_config(cls, output_dir, **overrides):
    """A TRL-style config (DPOConfig, KTOConfig or prefopt's) for tiny CPU runs in tests."""
    base = dict(
        output_dir=str(output_dir),
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=4,
        max_length=64,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    return cls(**{**base, **overrides})


def _loss_and_grads(trainer, batch):
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()}


def assert_same_loss_and_grads(ours, our_batch, stock, stock_batch, atol=1e-6):
    """Two trainers (on equal weights) give the same loss and the same gradient for every parameter."""
    import torch

    stock_loss, stock_grads = _loss_and_grads(stock, stock_batch)
    our_loss, our_grads = _loss_and_grads(ours, our_batch)
    assert torch.allclose(our_loss, stock_loss, atol=atol), (our_loss, stock_loss)
    for name, grad in stock_grads.items():
        assert torch.allclose(our_grads[name], grad, atol=atol), name


def two_cpu_ranks(module: str, config: Path) -> list[str]:
    """`accelerate launch` of two gloo ranks on the CPU: `--multi_gpu` with `use_cpu: true` in the training config
    (`--cpu --num_processes 2` starts one process)."""
    import sys

    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        module,
        "--config",
        str(config),
    ]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from ``ps``."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, out[::2]), map(int, out[1::2])):
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")
