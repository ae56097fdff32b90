"""Trust in finished runs: stage keys cover hand-given inputs, outputs are verified, secrets stay out."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from datasets import load_from_disk

from prefopt.cache import (
    MANIFEST,
    atomic_output_dir,
    cached_fingerprint,
    content_hash,
    is_complete,
    is_secret_key,
    mark_complete,
    verify_output,
)
from prefopt.cli import main
from prefopt.engines.server import ServerEngine
from prefopt.errors import ConfigError
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe

from conftest import CI_RECIPE, ci_stage


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "OPENAI_API_KEY",
        "hf_token",
        "wandb_token",
        "token",
        "password",
        "client_secret",
        "credentials",
        "access_token",
        "hub_token",
    ],
)
def test_secret_keys_are_recognised(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "max_new_tokens",
        "pad_token",
        "eos_token",
        "tokenizer",
        "api_key_env",
        "num_tokens",
        "secretary",
        "model",
        "tokens",
    ],
)
def test_ordinary_keys_are_not_secrets(key):
    assert not is_secret_key(key)


def test_secrets_never_enter_a_key_or_a_manifest(tmp_path):
    config = {"base_url": "http://x", "api_key": "sk-prefopt-secret-1"}
    assert content_hash(config) == content_hash({**config, "api_key": "sk-other"})
    assert content_hash(config) != content_hash({**config, "base_url": "http://y"})
    mark_complete(tmp_path, {"config": {"engine_options": config}})
    text = (tmp_path / MANIFEST).read_text()
    assert "sk-prefopt-secret-1" not in text and '"api_key": "***"' in text


def test_a_secret_in_a_recipe_is_refused_in_one_line(capsys):
    assert main(["plan", str(CI_RECIPE), "--set", "generation.engine_options.api_key=sk-prefopt-secret-2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sk-prefopt-secret-2" not in err
    assert err.startswith(f"prefopt: error: {CI_RECIPE}: generation.engine_options.api_key: a secret does not belong")


def test_the_server_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("MY_SERVER_KEY", "sk-from-env")
    assert ServerEngine("m", api_key_env="MY_SERVER_KEY").api_key == "sk-from-env"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    assert ServerEngine("m").api_key == "sk-default"


def test_damaged_outputs_are_not_complete_and_verify_names_the_file(tmp_path, caplog):
    out = tmp_path / "stage"
    with atomic_output_dir(out, {"stage": "x"}) as tmp:
        (tmp / "data").mkdir()
        (tmp / "data" / "part.bin").write_bytes(b"abcdef" * 100)
        (tmp / "stats.json").write_text("{}")
    assert is_complete(out) and verify_output(out) == []
    recorded = json.loads((out / MANIFEST).read_text())["files"]
    assert set(recorded) == {"data/part.bin", "stats.json"} and recorded["stats.json"]["size"] == 2
    part = out / "data" / "part.bin"
    part.write_bytes(b"abcdef" * 100 + b"!")  # same name, other size: an interrupted copy, a truncation
    assert not is_complete(out) and "data/part.bin: 601 bytes, 600 recorded" in caplog.text
    part.write_bytes(b"abcdeX" + b"abcdef" * 99)  # same size, other bytes: only the checksum sees it
    assert is_complete(out) and verify_output(out) == ["data/part.bin: content differs from the recorded checksum"]
    part.unlink()
    assert verify_output(out) == ["data/part.bin: missing"]


def test_a_local_model_is_keyed_by_its_content_not_its_path(tmp_path, tiny_models, model_cache):
    pipeline = Pipeline(load_recipe(CI_RECIPE))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["weak"], copy)
    assert pipeline.model_key(str(copy)) == pipeline.model_key(tiny_models["weak"])
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    assert pipeline.model_key(str(copy)) != pipeline.model_key(tiny_models["weak"])
    assert cached_fingerprint(copy, model_cache) == cached_fingerprint(copy, model_cache)


def _half_of(judged: Path, out: Path) -> Path:
    data = load_from_disk(str(judged / "data"))
    prompts = sorted(set(data["prompt_id"]))[::2]  # every other prompt, with all its candidates
    data.filter(lambda row: row["prompt_id"] in prompts).save_to_disk(str(out / "data"))
    return out


def test_a_stage_given_other_input_does_not_reuse_a_result(run_dir, tmp_path, capsys):
    judged = ci_stage(run_dir, "judge")
    half = _half_of(judged, tmp_path / "half")
    args = ["pairs", str(CI_RECIPE), "--output-dir", str(run_dir)]
    assert main([*args, "--input", str(judged)]) == 0
    full_out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*args, "--input", str(half)]) == 0
    half_out = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert half_out != full_out
    full_stats = json.loads((full_out / "stats.json").read_text())
    half_stats = json.loads((half_out / "stats.json").read_text())
    assert half_stats["pairs_built"] < full_stats["pairs_built"]
    moved = shutil.copytree(half, tmp_path / "moved")  # the same data elsewhere is the same input
    assert main([*args, "--input", str(moved)]) == 0
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]) == half_out
    recipe = dataclasses.replace(load_recipe(CI_RECIPE), output_dir=str(run_dir))
    assert Pipeline(recipe, inputs={"pairs": half}).train_key() != Pipeline(recipe).train_key()


def test_an_unreadable_input_leaves_no_output_behind(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data").write_text("not a dataset")
    before = sorted((run_dir / "judge").iterdir())
    assert main(["judge", str(CI_RECIPE), "--output-dir", str(run_dir), "--input", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("prefopt: error:")
    assert sorted((run_dir / "judge").iterdir()) == before


def test_plan_and_verify_a_finished_run(run_dir, tmp_path, capsys):
    assert main(["plan", str(CI_RECIPE), "--output-dir", str(run_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["stage"] for r in rows][:4] == ["generate", "judge", "pairs", "train"]
    assert {r["status"] for r in rows} == {"complete"}, rows
    assert rows[2]["path"] == str(ci_stage(run_dir, "pairs"))
    assert main(["verify", str(ci_stage(run_dir, "pairs"))]) == 0
    assert capsys.readouterr().out.strip().endswith("1 of 1 outputs verified")
    copy = shutil.copytree(ci_stage(run_dir, "pairs"), tmp_path / "pairs-copy")
    (copy / "stats.json").write_text((copy / "stats.json").read_text().replace("1", "2", 1))
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "stats.json" in out
    partial = tmp_path / "partial"
    assert main(["plan", str(CI_RECIPE), "--output-dir", str(partial)]) == 0
    assert capsys.readouterr().out.split()[2] == "missing"


@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "", "x" * 101, "two words"])
def test_names_that_become_paths_must_be_safe(name):
    with pytest.raises(ConfigError, match=r"generation.generators\[0\].name: .* is not a safe name"):
        load_recipe(CI_RECIPE, [f"generation.generators[0].name={json.dumps(name)}"])


def test_a_non_terminal_log_gets_few_progress_updates(run_dir, tmp_path):
    """stderr to a file: prefopt's bars update at most every 30 s and the libraries' own bars are off."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "HF_DATASETS_DISABLE", "HF_HUB_DISABLE"))}
    command = [
        sys.executable,
        "-m",
        "prefopt.cli",
        "judge",
        str(CI_RECIPE),
        "--set",
        "judging.shard_size=8",
        "--input",
        str(ci_stage(run_dir, "generate")),
        "--output",
        str(tmp_path / "judged"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Saving the dataset" not in result.stderr and "Loading weights" not in result.stderr
    bar_updates = [line for line in result.stderr.replace("\r", "\n").splitlines() if "shard/s" in line]
    assert 0 < len(bar_updates) <= 4, bar_updates  # the first and last state of the 12-shard bar, not 12 updates
