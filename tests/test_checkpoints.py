"""Crash-safe training: kill -9 at any moment, a torn checkpoint left behind, rerun: the final weights equal an
uninterrupted run's, bit for bit (CPU)."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from prefopt.training.checkpoints import COMPLETE_MARKER, resume_checkpoint
from prefopt.world.tasks import Difficulty, sample_problems


@pytest.fixture
def pairs():
    """16 tiny-world pairs: the worked solution against one with its last digit changed."""
    from datasets import Dataset

    rows = sample_problems(16, Difficulty(min_ops=1, max_ops=2), seed=3)
    wrong = [r["solution"][:-1] + str((int(r["solution"][-1]) + 1) % 10) for r in rows]
    return Dataset.from_dict(
        {
            "prompt": [r["problem"] for r in rows],
            "chosen": [r["solution"] for r in rows],
            "rejected": wrong,
            "margin": [i / 15 for i in range(16)],
        }
    )


def _config(tmp_path: Path, pairs_dir: Path, model: str, out: Path, steps: int) -> Path:
    cfg = {
        "pairs_path": str(pairs_dir),
        "model_name_or_path": model,
        "output_dir": str(out),
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "per_device_train_batch_size": 2,
        "max_length": 64,
        "save_strategy": "steps",
        "save_steps": 1,
        "max_steps": steps,
        "logging_steps": 1,
        "seed": 0,
        "pref_loss": "weighted",
        "learning_rate": 1e-3,
    }
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prefopt.training.dpo", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_resume_skips_and_removes_torn_checkpoints(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / COMPLETE_MARKER).write_text(str(step))
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint
    assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-6").exists() and (tmp_path / "checkpoint-2").exists()
    assert resume_checkpoint(tmp_path / "missing") is None


def test_a_checkpoint_at_max_steps_is_not_resumed_from(tmp_path):
    """The Trainer resumed at max_steps would take one more step; the checkpoint before it is resumed instead."""

    def checkpoint(step: int) -> None:
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / COMPLETE_MARKER).write_text(str(step))
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))

    checkpoint(3), checkpoint(4)
    assert resume_checkpoint(tmp_path, max_steps=6) == str(tmp_path / "checkpoint-4")  # training goes on
    assert resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")  # epochs, not max_steps, end the run
    assert resume_checkpoint(tmp_path, max_steps=4) == str(tmp_path / "checkpoint-3")
    assert not (tmp_path / "checkpoint-4").exists()
    shutil.rmtree(tmp_path / "checkpoint-3")
    checkpoint(4)
    assert resume_checkpoint(tmp_path, max_steps=4) is None  # nothing before it: train from the start


def test_killed_after_the_last_checkpoint_the_rerun_ends_at_max_steps(pairs, tiny_models, tmp_path):
    """A kill between the last step's checkpoint and the final model (max_steps 6, not a whole number of the 8
    steps of an epoch): the rerun ends at step 6 with the uninterrupted run's weights, no checkpoint-7."""
    pairs_dir = tmp_path / "pairs"
    pairs.save_to_disk(str(pairs_dir / "data"))
    whole = tmp_path / "whole"
    assert _train(_config(tmp_path, pairs_dir, tiny_models["policy"], whole, 6)).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed, ignore=shutil.ignore_patterns("model", "*.yaml"))
    assert _train(_config(tmp_path, pairs_dir, tiny_models["policy"], killed, 6)).wait(timeout=600) == 0
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == sorted(p.name for p in whole.glob("checkpoint-*"))
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 6
    expected, resumed = (
        load_file(whole / "model" / "model.safetensors"),
        load_file(killed / "model" / "model.safetensors"),
    )
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert resumed[name].equal(tensor), name


@pytest.mark.slow
def test_kill_9_mid_training_then_rerun_equals_an_uninterrupted_run(pairs, tiny_models, tmp_path):
    pairs_dir = tmp_path / "pairs"
    pairs.save_to_disk(str(pairs_dir / "data"))
    steps = 6
    whole = tmp_path / "whole"
    assert _train(_config(tmp_path, pairs_dir, tiny_models["policy"], whole, steps)).wait(timeout=600) == 0
    expected = load_file(whole / "model" / "model.safetensors")

    killed = tmp_path / "killed"
    config = _config(tmp_path, pairs_dir, tiny_models["policy"], killed, steps)
    process = _train(config)
    deadline = time.time() + 300
    while not (killed / "checkpoint-3" / COMPLETE_MARKER).exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in killed.glob("checkpoint-*"))
    assert "checkpoint-6" not in done and not (killed / "model").exists()
    torn = killed / "checkpoint-5"  # what a kill during a save leaves: some files, no marker
    if not torn.exists():
        shutil.copytree(killed / "checkpoint-3", torn)
        (torn / COMPLETE_MARKER).unlink()
        (torn / "trainer_state.json").unlink()
        weights = torn / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    assert _train(config).wait(timeout=600) == 0
    resumed = load_file(killed / "model" / "model.safetensors")
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert resumed[name].equal(tensor), name
