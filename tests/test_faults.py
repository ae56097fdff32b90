"""Fault injection (issue 14): kill -9 every stage at seeded random moments, tear checkpoints, damage shards and
data files, delete manifests, fill the disk; every rerun finishes with the result of an uninterrupted run.

The faults are real. A kill is SIGKILL of a real `prefopt` process and of everything it started (the accelerate
launcher and the training rank run in their own process group): the whole tree is frozen with SIGSTOP first, so
nothing starts or exits between the choice of the moment and the kill, as when a machine dies. The moment is
picked by a seeded random generator: a progress marker to wait for (the k-th shard file, the k-th checkpoint
directory, a stage's directory) and a random delay after it. "Survived" means the rerun finishes, its outputs
equal the uninterrupted run's (every data table, the final weights bit for bit, every report; paths and time
stamps aside), no row is duplicated, no temporary is left behind, and `prefopt verify` passes. A full disk is
simulated with RLIMIT_FSIZE in the child (SIGXFSZ ignored, so a write past the limit fails with EFBIG as a write
to a full disk fails with ENOSPC), since a real full file system needs privileges CI lacks.

Every test adds what it injected to a tally printed at the end of the module (`faults injected / survived`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from prefopt.cache import MANIFEST, read_manifest
from prefopt.cli import main
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe

from conftest import CI_RECIPE, alive, descendants

# The CI recipe cut finer, so that there are moments to kill at: 12 generation units, 12 judged shards and a
# checkpoint after each of 4 training steps.
SETS = [
    "generation.shard_size=4",
    "generation.batch_size=4",
    "judging.shard_size=8",
    "training.trl.save_strategy=steps",
    "training.trl.save_steps=1",
    "training.trl.max_steps=4",
]
ARGS = [str(CI_RECIPE), *[item for s in SETS for item in ("--set", s)]]
STEPS = 4
TALLY = {"injected": 0, "survived": 0}


@pytest.fixture(scope="module", autouse=True)
def tally(request):
    yield TALLY
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TALLY["injected"]:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntest_faults: faults injected {TALLY['injected']}, survived {TALLY['survived']}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models) -> Path:
    """One uninterrupted `prefopt run` of the finer-cut CI recipe: what every faulted run must end up equal to."""
    out = tmp_path_factory.mktemp("faults-reference")
    assert main(["run", *ARGS, "--output-dir", str(out)]) == 0
    return out


def stage_path(root: Path, stage: str) -> Path:
    pipeline = Pipeline(dataclasses.replace(load_recipe(CI_RECIPE, SETS), output_dir=str(root)))
    return pipeline.stage_dir(stage, getattr(pipeline, f"{stage}_key")())


def copy_stages(reference: Path, root: Path, *stages: str) -> Path:
    """A run directory holding the reference's finished ``stages`` (the inputs of the stage under test)."""
    for stage in stages:
        shutil.copytree(stage_path(reference, stage), stage_path(root, stage))
    return root


# -- what a finished run holds ------------------------------------------------------------------------------------

VOLATILE = {
    "state.json",  # a saved dataset's random fingerprint
    "trainer_state.json",  # run times
    "data_report.json",  # names the source path
    "train_config.yaml",  # names the output path
    "training_args.bin",  # likewise, pickled
    "prefopt_checkpoint_complete",  # records the sizes of the two above
    "README.md",  # TRL's model card: its tags are a set, listed in a per-process order
}


def _digest(file: Path, root: Path) -> str:
    data = file.read_bytes()
    if file.suffix in (".json", ".md", ".yaml", ".txt"):
        data = data.replace(str(root).encode(), b"<run>")
    return hashlib.sha256(data).hexdigest()[:16]


def outputs(root: Path, stages: tuple[str, ...] | None = None) -> dict[str, str]:
    """Every file of every finished output under ``root`` (relative path -> content digest; paths of ``root``
    inside text files made relative), with the few files that hold time stamps or random fingerprints left out."""
    found = {}
    for manifest in sorted(root.rglob(MANIFEST)):
        out = manifest.parent
        rel = out.relative_to(root)
        if stages is not None and rel.parts[0] not in stages:
            continue
        for name in read_manifest(out)["files"]:
            if Path(name).name not in VOLATILE:
                found[f"{rel}/{name}"] = _digest(out / name, root)
    for name in ("results.md", "results.json"):
        if (root / name).is_file() and stages is None:
            found[name] = _digest(root / name, root)
    return found


def assert_same_as(root: Path, reference: Path, stages: tuple[str, ...] | None = None) -> None:
    """``root`` holds what the uninterrupted run holds (for ``stages``, or all of it), without duplicates or
    leftovers, and verifies."""
    from datasets import load_from_disk

    expected, found = outputs(reference, stages), outputs(root, stages)
    assert found.keys() == expected.keys()
    assert {k: v for k, v in found.items() if v != expected[k]} == {}
    for stage, key in (("generate", "candidate_id"), ("judge", "candidate_id")):
        if stages is None or stage in stages:
            ids = load_from_disk(str(stage_path(root, stage) / "data"))[key]
            assert len(ids) == len(set(ids)) == 96, f"{stage}: duplicated or missing rows"
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [], "temporaries left behind"
    assert main(["verify", str(root)]) == 0


# -- killing a real prefopt ---------------------------------------------------------------------------------------


def start(command: list[str], log: Path, file_size_limit: int | None = None) -> subprocess.Popen:
    """`prefopt COMMAND` in a new process group (and, with ``file_size_limit``, unable to write a bigger file)."""

    def limit():
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "prefopt.cli", *command],
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit,
        )


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and everything it started, all frozen first: a crash of the whole job."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGSTOP)
    frozen: set[int] = set()
    while new := set(descendants(process.pid)) - frozen:
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= new
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    deadline = time.time() + 30
    while [pid for pid in frozen if alive(pid)]:
        assert time.time() < deadline, "killed processes still running"
        time.sleep(0.05)


def kill_at(process: subprocess.Popen, ready: Callable[[], bool], delay: float, timeout: float = 600) -> bool:
    """Kill the tree ``delay`` seconds after ``ready()`` first holds; False if the run ended before that."""
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            return False
        assert time.time() < deadline, "the progress marker never appeared"
        time.sleep(0.02)
    end = time.time() + delay
    while time.time() < end and process.poll() is None:
        time.sleep(0.01)
    if process.poll() is not None:
        return False
    kill_tree(process)
    return True


def _count(root: Path, pattern: str) -> int:
    return len(list(root.glob(pattern)))


def moment(stage: str, root: Path, rng: random.Random) -> tuple[str, Callable[[], bool], float]:
    """A seeded random moment in ``stage``: (its description, the progress marker to wait for, the delay after it)."""
    if stage in ("generate", "judge"):
        k = rng.randint(0, 11)
        shards = {"generate": "generate/*/shards/*/*.parquet", "judge": "judge/*/shards/*.parquet"}[stage]

        def ready() -> bool:  # the stage has started (k = 0) or written its k-th shard
            return _count(root, shards) >= k if k else _count(root, f"{stage}/*") >= 1

        return f"{stage} after {k} shards", ready, rng.uniform(0, 0.3 if stage == "generate" else 0.2)
    if stage == "pairs":
        return "pairs", lambda: _count(root, "pairs/*") >= 1, rng.uniform(0, 1.0)
    if stage == "train":
        k, mid_save = rng.randint(1, STEPS), rng.random() < 0.5
        return (
            f"train {'saving' if mid_save else 'after'} checkpoint-{k}",
            lambda: _count(root, f"train/*/checkpoint-{k}") >= 1,
            0.0 if mid_save else rng.uniform(0, 1.5),
        )
    k = rng.randint(1, 4)
    return f"eval after {k} models started", lambda: _count(root, "eval/*") >= k, rng.uniform(0, 0.5)


def where(root: Path) -> str:
    """The first stage of the run under ``root`` that is not finished."""
    for stage in ("generate", "judge", "pairs", "train"):
        if not (stage_path(root, stage) / MANIFEST).is_file():
            return stage
    return "eval"


# -- kill -9 ------------------------------------------------------------------------------------------------------


def test_kill_9_in_every_stage_of_prefopt_run_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    """`prefopt run` killed once in each stage in turn (seeded moments), rerun after each kill, then to the end."""
    rng = random.Random(14)
    root, log = tmp_path / "run", tmp_path / "log.txt"
    command = ["run", *ARGS, "--output-dir", str(root)]
    landed = []
    for stage in ("generate", "judge", "pairs", "train", "eval"):
        what, ready, delay = moment(stage, root, rng)
        if kill_at(start(command, log), ready, delay):
            landed.append(f"{what} (in {where(root)})")
    TALLY["injected"] += len(landed)
    assert len(landed) >= 4, landed
    assert start(command, log).wait(timeout=900) == 0, log.read_text()[-3000:]
    assert_same_as(root, reference)
    TALLY["survived"] += len(landed)


KILL_SERIES = {  # stage -> (the stages it reads, copied from the reference; the command)
    "generate": ((), "generate"),
    "judge": (("generate",), "judge"),
    "pairs": (("generate", "judge"), "pairs"),
    "train": (("generate", "judge", "pairs"), "train"),
    "eval": (("generate", "judge", "pairs", "train"), "eval"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_SERIES))
def test_kill_9_a_stage_three_times_then_rerun_equals_an_uninterrupted_run(stage, reference, tmp_path):
    """`prefopt STAGE` killed at three seeded moments in a row, each rerun resuming the last, then to the end."""
    inputs, command = KILL_SERIES[stage]
    root = copy_stages(reference, tmp_path / "run", *inputs)
    rng, log = random.Random(f"{stage}-14"), tmp_path / "log.txt"
    args = [command, *ARGS, "--output-dir", str(root)]
    kills = 0
    for _ in range(3):
        _, ready, delay = moment(stage, root, rng)
        kills += kill_at(start(args, log), ready, delay)
    TALLY["injected"] += kills
    assert kills >= 2
    assert start(args, log).wait(timeout=900) == 0, log.read_text()[-3000:]
    stages = (*inputs, stage) if stage != "eval" else None
    assert_same_as(root, reference, stages)
    TALLY["survived"] += kills


# -- torn checkpoints -------------------------------------------------------------------------------------------


def _killed_after_last_checkpoint(reference: Path, root: Path) -> Path:
    """The reference's run as a kill right after its last checkpoint left it: no final model, no manifest."""
    copy_stages(reference, root, "generate", "judge", "pairs", "train")
    train = stage_path(root, "train")
    (train / MANIFEST).unlink()
    shutil.rmtree(train / "model")
    return train


def _tear(checkpoint: Path, how: str) -> None:
    if how == "intact":  # killed after the last step's checkpoint, before the final model: nothing torn
        return
    if how == "truncated":
        weights = checkpoint / "optimizer.pt"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "deleted":
        (checkpoint / "model.safetensors").unlink()
    else:  # a save cut short before the marker: the trainer state not yet written
        from prefopt.training.checkpoints import COMPLETE_MARKER

        (checkpoint / COMPLETE_MARKER).unlink()
        (checkpoint / "trainer_state.json").unlink()


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "intact",
        pytest.param("deleted", marks=pytest.mark.slow),
        pytest.param("unmarked", marks=pytest.mark.slow),
    ],
)
def test_a_torn_newest_checkpoint_is_skipped_and_the_rerun_equals_an_uninterrupted_run(
    how, reference, tmp_path, caplog
):
    train = _killed_after_last_checkpoint(reference, tmp_path / "run")
    _tear(train / f"checkpoint-{STEPS}", how)
    TALLY["injected"] += 1
    assert main(["train", *ARGS, "--output-dir", str(tmp_path / "run")]) == 0
    assert_same_as(tmp_path / "run", reference, ("generate", "judge", "pairs", "train"))
    TALLY["survived"] += 1


# -- damaged shards, data files and manifests ----------------------------------------------------------------------


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _alter_readably(file: Path) -> None:
    """Same size, same rows, other bytes: the writer's name in the footer changed (the file still reads whole)."""
    data = file.read_bytes()
    assert b"parquet-cpp-arrow" in data
    file.write_bytes(data.replace(b"parquet-cpp-arrow", b"parquet-cpp-arrOw"))


def _flip_a_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


DAMAGE = {
    # fault -> (stages copied from the reference, the stage to rerun, what to damage in it, how, finished?)
    "generation unit truncated": (("generate",), "generate", "shards/strong/00001.parquet", _truncate, True),
    "generation unit corrupted": (("generate",), "generate", "shards/weak/00003.parquet", _flip_a_byte, True),
    "generation unit altered, still readable": (
        ("generate",),
        "generate",
        "shards/weak/00004.parquet",
        _alter_readably,
        True,
    ),
    "generation unit truncated, run unfinished": (
        ("generate",),
        "generate",
        "shards/weak/00005.parquet",
        _truncate,
        False,
    ),
    "judged shard corrupted, run unfinished": (
        ("generate", "judge"),
        "judge",
        "shards/00004.parquet",
        _flip_a_byte,
        False,
    ),
    "judged shard truncated": (("generate", "judge"), "judge", "shards/00007.parquet", _truncate, True),
    "candidates data corrupted": (("generate",), "generate", "data/data-00000-of-00001.arrow", _flip_a_byte, True),
    "judgments data truncated": (("generate", "judge"), "judge", "data/data-00000-of-00001.arrow", _truncate, True),
    "pairs data corrupted": (
        ("generate", "judge", "pairs"),
        "pairs",
        "data/data-00000-of-00001.arrow",
        _flip_a_byte,
        True,
    ),
    "judge manifest deleted": (("generate", "judge"), "judge", MANIFEST, Path.unlink, True),
    "pairs manifest deleted": (("generate", "judge", "pairs"), "pairs", MANIFEST, Path.unlink, True),
}


@pytest.mark.parametrize("fault", list(DAMAGE))
def test_a_damaged_output_is_redone_with_one_warning_and_equals_an_uninterrupted_run(
    fault, reference, tmp_path, caplog
):
    stages, stage, name, damage, finished = DAMAGE[fault]
    root = copy_stages(reference, tmp_path / "run", *stages)
    out = stage_path(root, stage)
    if not finished:
        (out / MANIFEST).unlink()
    damage(out / name)
    TALLY["injected"] += 1
    with caplog.at_level(logging.INFO):
        assert main([stage, *ARGS, "--output-dir", str(root)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("prefopt")]
    if name == MANIFEST:
        assert warnings == []
    else:
        assert len(warnings) == 1 and name in warnings[0], warnings
    assert_same_as(root, reference, stages)
    TALLY["survived"] += 1


def test_verify_reports_row_counts_and_checksums(reference, tmp_path, capsys):
    root = copy_stages(reference, tmp_path / "run", "generate")
    out = stage_path(root, "generate")
    records = read_manifest(out)["files"]
    assert records["data/data-00000-of-00001.arrow"]["rows"] == 96
    assert {records[f"shards/{g}/{i:05d}.parquet"]["rows"] for g in ("strong", "weak") for i in range(6)} == {8}
    _flip_a_byte(out / "shards/strong/00002.parquet")
    assert main(["verify", str(root)]) == 1
    report = capsys.readouterr().out
    assert "FAILED" in report and "shards/strong/00002.parquet: content differs" in report


# -- a full disk ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stage, limit",
    [
        ("judge", 30_000),  # the judged data (38 kB) cannot be written
        pytest.param("train", 400_000, marks=pytest.mark.slow),  # a checkpoint's optimizer state (580 kB) cannot
    ],
)
def test_a_full_disk_is_a_clear_error_and_a_rerun_after_freeing_space_equals_an_uninterrupted_run(
    stage, limit, reference, tmp_path
):
    inputs = {"judge": ("generate",), "train": ("generate", "judge", "pairs")}[stage]
    root = copy_stages(reference, tmp_path / "run", *inputs)
    log = tmp_path / "log.txt"
    TALLY["injected"] += 1
    process = start([stage, *ARGS, "--output-dir", str(root)], log, file_size_limit=limit)
    assert process.wait(timeout=600) != 0
    text = log.read_text()
    assert not (stage_path(root, stage) / MANIFEST).exists()
    if stage == "judge":
        assert process.returncode == 1 and "Traceback" not in text, text[-2000:]
        last = text.strip().splitlines()[-1]
        assert last.startswith("prefopt: error:") and "File too large" in last and "rerun" in last, last
    assert main([stage, *ARGS, "--output-dir", str(root)]) == 0  # space freed: no limit
    assert_same_as(root, reference, (*inputs, stage))
    TALLY["survived"] += 1
