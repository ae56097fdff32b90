"""The Slurm scripts pass every value as its own word: run with stand-in srun/scontrol/accelerate/sbatch/prefopt."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
PRINT_ARGS = '#!/usr/bin/env python3\nimport json, os, sys\nopen(os.environ["LOG"], "a").write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")\n'


@pytest.fixture
def stand_ins(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nshift\nSLURM_NODEID=0 exec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho node-a\necho node-b\n")
    for tool in ("accelerate", "sbatch", "prefopt"):
        (bin_dir / tool).write_text(PRINT_ARGS)
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)}
    return env, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_train_script_launches_the_chosen_method_with_every_argument_intact(stand_ins, tmp_path):
    env, log = stand_ins
    env.update(SLURM_JOB_NODELIST="x", SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4", METHOD="kto")
    odd = f"train $(touch {tmp_path}/PWNED).yaml"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "train_slurm.sh"), "cfg dir/z3.yaml", odd, "--beta", "0.1 x"],
        env=env,
        check=True,
    )
    [call] = calls(log)
    assert call[:4] == ["accelerate", "launch", "--config_file", "cfg dir/z3.yaml"]
    assert call[call.index("--num_processes") + 1] == "8"  # 2 nodes x the 4 GPUs of the allocation
    assert call[call.index("-m") + 1] == "prefopt.training.kto" and call[call.index("--config") + 1] == odd
    assert call[-2:] == ["--beta", "0.1 x"] and not (tmp_path / "PWNED").exists()


def test_train_script_refuses_an_unknown_method(stand_ins):
    env, _ = stand_ins
    env.update(SLURM_JOB_NODELIST="x", SLURM_NNODES="1", SLURM_GPUS_ON_NODE="1", METHOD="ppo")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "train_slurm.sh"), "a.yaml", "b.yaml"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "METHOD must be dpo or kto" in result.stderr


def test_generate_script_takes_the_shard_count_from_its_argument(stand_ins, tmp_path):
    """The array index only picks the shard; the count is an argument, so resubmitting part of the array (here
    task 5 of an array of 2) keeps every shard's units where they were. Without --array it finishes and merges."""
    env, log = stand_ins
    recipe = f"my recipe $(touch {tmp_path}/PWNED).yaml"
    script = str(REPO / "scripts" / "generate_slurm.sh")
    array = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "1"}
    subprocess.run(["bash", script, recipe, "8", "--set", "name=a b"], env={**env, **array}, check=True)
    subprocess.run(["bash", script, recipe, "2", "--set", "name=a b"], env=env, check=True)  # the merge job
    assert calls(log) == [
        ["prefopt", "generate", recipe, "--shard", "5", "--num-shards", "8", "--set", "name=a b"],
        ["prefopt", "generate", recipe, "--shard", "0", "--num-shards", "2", "--set", "name=a b"],
        ["prefopt", "generate", recipe, "--shard", "1", "--num-shards", "2", "--set", "name=a b"],
    ]
    for count, task in (("8", "8"), ("x", "0")):
        result = subprocess.run(
            ["bash", script, recipe, count], env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True
        )
        assert result.returncode == 2, result.stderr
    assert len(calls(log)) == 3 and not (tmp_path / "PWNED").exists()
