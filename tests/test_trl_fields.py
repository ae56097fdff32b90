"""Recipe validation without torch: TRL's config fields from a snapshot that matches the installed TRL, the same
checked values (and stage keys) as with TRL imported, and TRL's own checks before any stage runs."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from prefopt.errors import ConfigError
from prefopt.pipeline import Pipeline
from prefopt.recipe import check_trainer_configs, load_recipe
from prefopt.training import trl_fields

from conftest import CI_RECIPE

DEMO = Path(__file__).parents[1] / "recipes" / "demo" / "tiny.yaml"


def test_the_snapshot_equals_the_installed_trl():
    assert json.loads(trl_fields.SNAPSHOT.read_text()) == trl_fields.snapshot(), (
        "TRL's configs changed: run `python -m prefopt.training.trl_fields` and commit trl_fields.json"
    )


def test_every_described_type_rebuilds_to_one_that_converts_the_same(tmp_path):
    import typing

    from prefopt.config_base import _convert
    from prefopt.training.dpo_trainer import PrefDPOConfig

    hints = typing.get_type_hints(PrefDPOConfig)
    samples = {
        "learning_rate": "5e-5",
        "lr_scheduler_type": "cosine",
        "save_strategy": "steps",
        "report_to": "none",
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "loss_type": ["sigmoid"],
        "beta": 1,
    }
    rebuilt = trl_fields.field_types("PrefDPOConfig")
    for key, value in samples.items():
        live = _convert(value, hints[key], key)
        live = getattr(live, "value", live)
        assert _convert(value, rebuilt[key], key) == live, key


def test_plan_imports_no_torch_and_answers_in_a_second(tmp_path):
    code = (
        "import sys, time\nfrom prefopt.cli import main\nt = time.time()\n"
        f"rc = main(['plan', {str(DEMO)!r}, '--output-dir', {str(tmp_path)!r}, '--json'])\n"
        "print('ELAPSED', time.time() - t, rc)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'vllm', 'pandas') if m in sys.modules))"
    )
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out[-300:]
    assert " 0\n" in out and time.time() - started < 20  # loose bound for a loaded CI machine; README states ~0.3 s


def test_stage_keys_are_the_same_with_and_without_trl_imported(tmp_path):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["training"]["trl"].update({"learning_rate": "5e-5", "lr_scheduler_type": "cosine", "save_strategy": "no"})
    data["training"]["model_args"] = {"use_peft": True, "lora_target_modules": "all-linear"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    light = load_recipe(path, check_trainers=False)
    full = load_recipe(path)
    assert light == full
    assert [r["key"] for r in Pipeline(light).plan()] == [r["key"] for r in Pipeline(full).plan()]


@pytest.mark.parametrize(
    ("trl", "message"),
    [
        ({"pref_loss": "weigthed"}, "did you mean 'weighted'"),  # prefopt's own name check, in the config class
        ({"sft_route_threshold": 0.1, "sft_route_quantile": 0.5}, "set at most one of sft_route_threshold"),
    ],
)
def test_trl_checks_still_run_before_any_stage(tmp_path, trl, message):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["training"]["trl"].update(trl)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path, check_trainers=False)  # names and types are fine
    with pytest.raises(ConfigError, match=message):
        check_trainer_configs(recipe)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_unknown_trl_field_gets_a_did_you_mean_without_trl(tmp_path):
    data = yaml.safe_load(CI_RECIPE.read_text())
    data["training"]["trl"]["learning_rat"] = 1e-4
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(
        ConfigError,
        match=r"training\.trl\.learning_rat: unknown field of PrefDPOConfig .*\(did you mean 'learning_rate'\?\)",
    ):
        load_recipe(path, check_trainers=False)
