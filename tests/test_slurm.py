"""Slurm scripts rendered from recipes: every full paper recipe's scripts parse (bash -n) and ask for what the recipe
says (#SBATCH lines); a rendered chain runs with stand-in sbatch/srun/scontrol/accelerate/prefopt, in order, with
every value intact; the resources section is checked on load; scripts/*_slurm.sh are the generated ones."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from prefopt.cli import main
from prefopt.errors import ConfigError
from prefopt.recipe import recipe_from_data
from prefopt.slurm import derived_gpus, generic_scripts, render_run, render_sweep
from prefopt.sweep import expand

from conftest import CI_RECIPE

REPO = Path(__file__).parents[1]
FULL = sorted((REPO / "recipes" / "paper").glob("*/full*.yaml"))

# What each full recipe's jobs must ask for, by hand from the recipe (GPUs per task or node).
EXPECTED_GPUS = {
    # generation: DeepSeek-R1 at tensor_parallel_size 8; the judge is a server; ZeRO-3 on 8; eval at TP 8
    "decomposing_delta": {"generate": 8, "judge": 0, "pairs": 0, "train": 8, "eval": 8},
    "sweet_spot": {"generate": 1, "judge": 1, "pairs": 0, "train": 8, "eval": 1},
    # pairs: margin_bayes trains its proxy on ZeRO-2's 8 GPUs; the all-pairs run has no proxy
    "less_is_more": {
        "generate": 1,
        "judge": 1,
        "pairs": lambda recipe: 8 if recipe.pairing.margin_bayes else 0,
        "train": 8,
        "eval": 1,
    },
    "reward_augmented": {"generate": 1, "judge": 1, "pairs": 0, "train": 8, "eval": 1},
    "hybrid_dpo_sft": {"generate": 1, "judge": 1, "pairs": 0, "train": 8, "eval": 1},
}


def sbatch_options(script: str) -> dict[str, str]:
    """The #SBATCH options of a script, as sbatch reads them: the lines before the first command."""
    options = {}
    for line in script.splitlines()[1:]:
        if not line.startswith("#"):
            break
        if line.startswith("#SBATCH "):
            word = line[len("#SBATCH ") :]
            assert len(word.split()) == 1, f"an #SBATCH value is one word: {line!r}"
            key, _, value = word.partition("=")
            assert key not in options, f"{key} twice"
            options[key] = value
    assert not any(line.startswith("#SBATCH") for line in script.split("\nset -euo pipefail", 1)[1].splitlines())
    return options


def stage_of(var: str) -> str:
    stage = var.split("_", 1)[1] if var.startswith("run") else var
    return {"generate_merge": "generate", "prepare": "eval", "collect": "collect"}.get(stage, stage)


def check_jobs(rendered, recipes_by_var, study: str) -> None:
    """Every script parses; its #SBATCH lines say what the recipe asks for."""
    for job in rendered.jobs:
        script = rendered.files[rendered.directory / job.filename]
        result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert result.returncode == 0, (job.var, result.stderr)
        options = sbatch_options(script)
        recipe = recipes_by_var(job.var)
        stage = stage_of(job.var)
        if stage == "collect":
            assert "--gres" not in options
            continue
        res = recipe.resources.stage(stage)
        expected = EXPECTED_GPUS[study][stage]
        expected = expected(recipe) if callable(expected) else expected
        assert options.get("--gres", "gpu:0") == f"gpu:{expected}", job.var
        assert options["--time"] == res["time"] and options["--mem"] == res["mem"], job.var
        assert options["--cpus-per-task"] == str(res["cpus_per_task"])
        assert options["--job-name"].endswith(job.var) and options["--output"].endswith(".out")
        if job.var.endswith("generate") and res["shards"] > 1:
            assert options["--array"] == f"0-{res['shards'] - 1}" and f"NUM_SHARDS={res['shards']}\n" in script
        else:
            assert "--array" not in options
        if stage == "train":
            assert options["--nodes"] == str(res["nodes"]) and options["--ntasks-per-node"] == "1"
            assert f"METHOD={recipe.training.method}\n" in script and "srun --kill-on-bad-exit=1" in script


@pytest.mark.parametrize("path", FULL, ids=lambda p: str(p.relative_to(REPO)))
def test_every_full_recipe_renders_checked_slurm_scripts(path, tmp_path, trackers_installed):
    sweep, runs = expand(path, output_dir=str(tmp_path / "out"))
    study = path.parent.name
    rendered = render_sweep(path, sweep, runs, tmp_path / "slurm", workdir=REPO)
    by_index = {run.index: run.recipe for run in runs}
    check_jobs(rendered, lambda v: by_index[int(v[3:].split("_")[0])] if v.startswith("run") else runs[0].recipe, study)
    vars_ = [job.var for job in rendered.jobs]
    # the stages every run shares are rendered once; each run has its own pairs, train and eval
    assert sum(v.endswith("_generate") for v in vars_) == 1 and sum(v.endswith("_judge") for v in vars_) == 1
    for suffix in ("pairs", "train", "eval"):
        assert sum(v.endswith(f"_{suffix}") for v in vars_) == len(runs)
    # each run's recipe file is the run itself: the swept values applied, no sweep section
    for run in runs:
        written = yaml.safe_load(rendered.files[tmp_path / "slurm" / "recipes" / f"{run.index:03d}.yaml"])
        assert "sweep" not in written and recipe_from_data(written) == run.recipe
    # one run alone, as `prefopt run RECIPE --slurm` writes it
    single = render_run(runs[0].recipe, {**runs[0].data}, path, workdir=REPO)
    assert [stage_of(j.var) for j in single.jobs if j.var != "generate_merge"] == [
        "generate",
        "judge",
        "pairs",
        "train",
        "eval",
    ]
    check_jobs(single, lambda var: runs[0].recipe, study)
    submit = single.files[single.directory / "submit.sh"]
    assert subprocess.run(["bash", "-n"], input=submit, text=True).returncode == 0
    assert '--dependency="afterany:${generate}"' in submit and '--dependency="afterok:${train}"' in submit


@pytest.fixture
def stand_ins(tmp_path):
    """sbatch (records its arguments, answers job ids as 'id;cluster'), srun (runs the command on every node of
    SLURM_NNODES with its SLURM_NODEID), scontrol, accelerate and prefopt (record their arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = (
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        'open(os.environ["LOG"], "a").write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")\n'
    )
    (bin_dir / "sbatch").write_text(
        record + 'n = sum(1 for _ in open(os.environ["LOG"]))\nprint(f"{100 + n};cluster1")\n'
    )
    (bin_dir / "srun").write_text(
        '#!/usr/bin/env bash\nshift\nfor ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@"; done\n'
    )
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho node-a\necho node-b\n")
    for tool in ("accelerate", "prefopt"):
        (bin_dir / tool).write_text(record)
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "calls.log"
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)}, log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def dependency(call: list[str]) -> str | None:
    return next((a.split("=", 1)[1] for a in call if a.startswith("--dependency=")), None)


def odd_recipe(tmp_path, **resources) -> Path:
    """The CI recipe in a directory whose name holds shell syntax, with a resources section."""
    odd = tmp_path / "dir with $(touch PWNED) and 'q'"
    odd.mkdir()
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["output_dir"] = str(odd / "out")
    data["resources"] = {
        "time": "01:00:00",
        "partition": "gpu",
        "sbatch_args": ["--account=proj-1"],
        "log_dir": str(odd / "my logs"),
        **resources,
    }
    path = odd / "recipe $(touch PWNED).yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_rendered_chain_submits_in_order_and_every_job_gets_its_words(tmp_path, stand_ins):
    env, log = stand_ins
    path = odd_recipe(tmp_path, generate={"shards": 3, "gpus": 2}, train={"nodes": 2, "gpus": 4, "time": "2-00:00:00"})
    assert main(["run", str(path), "--slurm", "--sbatch-args", "--qos 'a b'", "--set", "name=ci run"]) == 0
    directory = path.parent / "out" / "slurm" / "ci_run"
    submit = directory / "submit.sh"
    assert subprocess.run(["bash", str(submit)], cwd=tmp_path, env=env, check=True).returncode == 0
    assert (path.parent / "my logs").is_dir()  # created before any job could write there
    submitted = calls(log)
    scripts = [Path(c[-1]).name for c in submitted]
    assert scripts == ["generate.sh", "generate_merge.sh", "judge.sh", "pairs.sh", "train.sh", "eval.sh"]
    ids = {name: str(101 + i) for i, name in enumerate(scripts)}  # the cluster suffix is dropped
    deps = [dependency(c) for c in submitted]
    assert deps == [
        None,
        f"afterany:{ids['generate.sh']}",
        f"afterok:{ids['generate_merge.sh']}",
        f"afterok:{ids['judge.sh']}",
        f"afterok:{ids['pairs.sh']}",
        f"afterok:{ids['train.sh']}",
    ]
    for call in submitted:
        assert call[call.index("--qos") + 1] == "a b" and "--parsable" in call
    generate = sbatch_options((directory / "generate.sh").read_text())
    assert generate["--array"] == "0-2" and generate["--gres"] == "gpu:2" and generate["--account"] == "proj-1"
    train = sbatch_options((directory / "train.sh").read_text())
    assert train["--nodes"] == "2" and train["--gres"] == "gpu:4" and train["--time"] == "2-00:00:00"
    assert train["--partition"] == "gpu" and "--output" not in train  # a path with spaces: on the sbatch line
    assert sbatch_options((directory / "pairs.sh").read_text()).get("--gres") is None  # CPU stage, tiny world

    # Each job as Slurm would run it: the array's tasks, the merge, the stages, training on two nodes.
    log.unlink()
    recipe = str(directory / "recipe.yaml")
    for shard in ("2", "0"):  # any subset of the array: the shard count stays 3
        subprocess.run(["bash", str(directory / "generate.sh")], env={**env, "SLURM_ARRAY_TASK_ID": shard}, check=True)
    bad = subprocess.run(
        ["bash", str(directory / "generate.sh")], env={**env, "SLURM_ARRAY_TASK_ID": "3"}, capture_output=True
    )
    assert bad.returncode == 2 and b"shards 0 to 2" in bad.stderr
    for name in ("generate_merge", "judge", "pairs"):
        subprocess.run(["bash", str(directory / f"{name}.sh")], env=env, check=True)
    slurm = {"SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242"}
    subprocess.run(["bash", str(directory / "train.sh")], env={**env, **slurm}, check=True)
    subprocess.run(["bash", str(directory / "eval.sh")], env=env, check=True)
    ran = calls(log)
    assert ran[:2] == [
        ["prefopt", "generate", recipe, "--shard", "2", "--num-shards", "3"],
        ["prefopt", "generate", recipe, "--shard", "0", "--num-shards", "3"],
    ]
    assert ran[2:5] == [["prefopt", "generate", recipe, "--shard", str(i), "--num-shards", "3"] for i in range(3)]
    assert ran[5:7] == [["prefopt", "judge", recipe], ["prefopt", "pairs", recipe]]
    launches = ran[7:9]
    for rank, call in enumerate(launches):
        assert call[:4] == ["accelerate", "launch", "--config_file", str(REPO / "accelerate_configs" / "cpu.yaml")]
        flags = dict(zip(call[4::2], call[5::2]))
        assert flags["--num_machines"] == "2" and flags["--num_processes"] == "8"  # 2 nodes x 4 GPUs
        assert flags["--machine_rank"] == str(rank) and flags["--main_process_ip"] == "node-a"
        assert flags["--main_process_port"] == str(29500 + 4242 % 1000)
        assert call[call.index("-m") + 1] == "prefopt.training.dpo" and call[-2:] == ["--config", recipe]
    assert ran[9:] == [["prefopt", "eval", recipe]]
    assert not list(tmp_path.rglob("PWNED"))
    # the recipe file the jobs run is the recipe with its overrides applied
    written = yaml.safe_load(Path(recipe).read_text())
    assert written["name"] == "ci run" and written["resources"]["generate"]["shards"] == 3


def test_a_sweep_chain_shares_its_stages_and_collects_after_every_run(tmp_path, stand_ins):
    env, log = stand_ins
    path = odd_recipe(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["sweep"] = {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(path), "--slurm", "--set", "name=a;b `touch PWNED`"]) == 0
    directory = path.parent / "out" / "sweeps" / "s" / "slurm"
    subprocess.run(["bash", str(directory / "submit.sh")], cwd=tmp_path, env=env, check=True)
    submitted = calls(log)
    names = [Path(c[-1]).stem for c in submitted]
    assert names == [
        "run0_generate",
        "run0_judge",
        "run0_pairs",
        "run0_train",
        "run1_pairs",
        "run1_train",
        "prepare",
        "run0_eval",
        "run1_eval",
        "collect",
    ]
    ids = {name: str(101 + i) for i, name in enumerate(names)}
    deps = {n: dependency(c) for n, c in zip(names, submitted)}
    assert deps["run1_pairs"] == f"afterok:{ids['run0_judge']}"  # the judged candidates are shared
    assert deps["run1_eval"] == f"afterok:{ids['run1_train']}:{ids['prepare']}"
    assert deps["collect"] == f"afterany:{ids['run0_eval']}:{ids['run1_eval']}"
    log.unlink()
    for name in ("prepare", "run1_eval", "collect"):
        subprocess.run(["bash", str(directory / f"{name}.sh")], env=env, check=True)
    base = ["prefopt", "sweep", str(path.resolve()), "--set=name=a;b `touch PWNED`"]
    assert calls(log) == [[*base, "--prepare"], [*base, "--run", "1"], [*base, "--collect"]]
    assert not list(tmp_path.rglob("PWNED"))


def test_slurm_dry_runs_print_every_script_and_write_nothing(tmp_path, capsys):
    path = odd_recipe(tmp_path, generate={"shards": 2})
    assert main(["run", str(path), "--slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("# ==> ") == 7 and "#SBATCH --array=0-1" in out and "submit.sh <==" in out
    data = yaml.safe_load(path.read_text())
    data["sweep"] = {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(path), "--slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("# ==> ") == 12 and "collect.sh <==" in out and "--prepare" in out
    assert not (path.parent / "out").exists()
    assert main(["sweep", str(path), "--slurm", "--run", "0"]) == 2


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"time": 43200}, 'resources.time: got the number 43200: quote it (time: "12:00:00")'),
        ({"time": "tomorrow"}, "resources.time: expected Slurm's minutes"),
        ({"mem": "lots"}, "resources.mem: expected a size such as 200G"),
        ({"sbatch_args": ["--account=a b"]}, "resources.sbatch_args: each item is one option word"),
        ({"sbatch_args": ["--comment=$(id)"]}, "resources.sbatch_args: each item is one option word"),
        ({"partition": "gpu;rm"}, "resources.partition: expected letters"),
        ({"judge": {"nodes": 2}}, "judge.nodes: only the train stage runs on several nodes"),
        ({"train": {"shards": 4}}, "train.shards: only the generate stage is split into shards"),
        ({"generate": {"gpus": -1}}, "resources.generate.gpus: expected >= 0"),
        ({"gpu": 2}, "resources.gpu: unknown field"),
    ],
)
def test_bad_resources_fail_at_load(resources, message):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["resources"] = resources
    with pytest.raises(ConfigError) as err:
        recipe_from_data(data)
    assert message in str(err.value)


def test_gpus_follow_the_engines_and_the_launch_config():
    data = yaml.safe_load(CI_RECIPE.read_text())
    recipe = recipe_from_data(data)
    assert [derived_gpus(recipe, s) for s in ("generate", "judge", "pairs", "train", "eval")] == [0, 0, 0, 0, 0]
    data["generation"].update(engine="vllm", engine_options={"tensor_parallel_size": 2}, data_parallel_size=3)
    data["generation"]["generators"][0].update(model="org/big", engine_options={"tensor_parallel_size": 4})
    data["training"].update(model="org/policy", accelerate_config="accelerate_configs/fsdp2.yaml")
    data["evaluation"].update(engine="vllm", engine_options={"tensor_parallel_size": 2})
    data["world"]["models"] = {k: v for k, v in data["world"]["models"].items() if k == "weak"}
    data["judging"] = {"judge": "reward_model", "reward_model": {"model": "org/rm"}, "aggregate": "reward"}
    recipe = recipe_from_data(data)
    assert derived_gpus(recipe, "generate") == 4 * 3  # the largest tensor parallelism x the workers
    assert derived_gpus(recipe, "generate", shards=8) == 4  # an array task starts no workers of its own
    assert [derived_gpus(recipe, s) for s in ("judge", "pairs", "train", "eval")] == [1, 0, 8, 2]
    data["generation"]["engine"] = "server"
    data["generation"]["engine_options"] = {"base_url": "http://x/v1"}
    data["generation"]["generators"][0]["engine_options"] = {}
    assert derived_gpus(recipe_from_data(data), "generate") == 0


def test_the_scripts_in_scripts_are_the_generated_ones():
    for name, text in generic_scripts().items():
        assert (REPO / "scripts" / name).read_text() == text, f"run: python -m prefopt.slurm (scripts/{name})"
