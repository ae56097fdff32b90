"""Sweeps: expansion, validation, dry runs, the Slurm script, and a real sweep whose runs share stages."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from prefopt.cli import main
from prefopt.errors import ConfigError
from prefopt.sweep import expand

from conftest import CI_RECIPE


def sweep_recipe(tmp_path, sweep: dict, **top) -> str:
    data = yaml.safe_load(CI_RECIPE.read_text())
    data.update(sweep=sweep, **top)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_product_and_zip_expansion(tmp_path):
    path = sweep_recipe(
        tmp_path,
        {
            "name": "s",
            "parameters": {"pairing.filter.top_fraction": [0.25, 0.5], "generation.generators[0].n": [1, 2, 3]},
        },
    )
    sweep, runs = expand(path)
    assert len(runs) == 6 and runs[4].label == "top_fraction=0.5,n=2"
    assert runs[4].recipe.pairing.filter.top_fraction == 0.5 and runs[4].recipe.generation.generators[0].n == 2
    assert runs[4].recipe.generation.generators[1].n == 2 and runs[4].recipe.name == "ci-tiny/top_fraction=0.5,n=2"
    path = sweep_recipe(
        tmp_path,
        {
            "name": "z",
            "mode": "zip",
            "labels": ["small", "large"],
            "parameters": {"pairing.filter.top_fraction": [0.25, 1.0], "training.trl.beta": [0.1, 0.5]},
        },
    )
    _, runs = expand(path)
    assert [r.label for r in runs] == ["small", "large"] and runs[1].recipe.training.trl["beta"] == 0.5


@pytest.mark.parametrize(
    "sweep, message",
    [
        (
            {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.5]}},
            "sweep run 1 (top_fraction=1.5): pairing.filter: top_fraction must be in (0, 1]",
        ),
        ({"name": "s", "mode": "zip", "parameters": {"a.b": [1, 2], "c.d": [1]}}, "lists of equal length"),
        (
            {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5]}, "labels": ["a", "b"]},
            "labels needs one entry per run (1)",
        ),
        ({"name": "s", "parameters": {"generation.generators[7].n": [2]}}, "generators[7] is not an item of a list"),
    ],
)
def test_bad_sweeps_name_the_file_and_the_run(tmp_path, sweep, message):
    path = sweep_recipe(tmp_path, sweep)
    with pytest.raises(ConfigError) as err:
        expand(path)
    assert path in str(err.value) and message in str(err.value)


def test_dry_run_shows_the_shared_stages(tmp_path, capsys):
    path = sweep_recipe(tmp_path, {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}})
    assert main(["sweep", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Distinct stage outputs: generate: 1, judge: 1, pairs: 2, train: 2 (for 2 runs)" in out


def test_slurm_script(tmp_path):
    path = sweep_recipe(
        tmp_path,
        {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}},
        output_dir=str(tmp_path / "out"),
    )
    assert main(["sweep", path, "--slurm", "--sbatch-args", "-p gpu"]) == 0
    script = (tmp_path / "out" / "sweeps" / "s" / "slurm.sh").read_text()
    assert "--array=0-1" in script and "--dependency=afterok:$prepare" in script
    assert "--dependency=afterany:$array" in script and "--run $SLURM_ARRAY_TASK_ID" in script
    assert script.count(" -p gpu ") == 3 and "--prepare" in script and "--collect" in script


def test_slurm_script_quotes_every_value_end_to_end(tmp_path):
    """Render the script for a recipe whose path and overrides hold shell syntax, run it with a stand-in `sbatch`,
    then run each job's --wrap command as Slurm would (sh -c) with a stand-in `prefopt`: every word arrives intact
    and nothing is executed."""
    import os
    import subprocess

    odd = tmp_path / "dir with $(touch PWNED) and 'q'"
    odd.mkdir()
    path = sweep_recipe(
        odd, {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}}, output_dir=str(tmp_path / "out")
    )
    assert main(["sweep", path, "--slurm", "--sbatch-args", "-p 'gpu x'", "--set", "name=a;b `touch PWNED`"]) == 0
    script = tmp_path / "out" / "sweeps" / "s" / "slurm.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        'open(os.environ["LOG"], "a").write(json.dumps(sys.argv[1:]) + "\\n")\nprint(7)\n'
    )
    (bin_dir / "prefopt").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        'open(os.environ["RAN"], "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "sbatch.log"),
        "RAN": str(tmp_path / "ran.log"),
    }
    assert subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    calls = [json.loads(line) for line in (tmp_path / "sbatch.log").read_text().splitlines()]
    assert len(calls) == 3 and all(["-p", "gpu x"] == c[c.index("-p") : c.index("-p") + 2] for c in calls)
    for call in calls:
        wrapped = call[call.index("--wrap") + 1]
        subprocess.run(["sh", "-c", wrapped], env={**env, "SLURM_ARRAY_TASK_ID": "1"}, check=True)
    ran = [json.loads(line) for line in (tmp_path / "ran.log").read_text().splitlines()]
    assert [r[:3] for r in ran] == [
        ["sweep", str(Path(path).resolve()), "--prepare"],
        ["sweep", str(Path(path).resolve()), "--run"],
        ["sweep", str(Path(path).resolve()), "--collect"],
    ]
    assert ran[1][3] == "1" and all("--set=name=a;b `touch PWNED`" in r for r in ran)
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize(
    "sweep, message",
    [
        (
            {"name": "../up", "parameters": {"pairing.filter.top_fraction": [0.5]}},
            "sweep.name: '../up' is not a safe name",
        ),
        (
            {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}, "labels": ["a b", "a_b"]},
            "would share the directory 'a_b'",
        ),
    ],
)
def test_unsafe_sweep_names_fail_at_load(tmp_path, sweep, message, capsys):
    assert main(["sweep", sweep_recipe(tmp_path, sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_label_of_dots_stays_inside_the_sweep(tmp_path):
    from prefopt.sweep import expand

    path = sweep_recipe(
        tmp_path, {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}, "labels": ["..", "."]}
    )
    _, runs = expand(path)
    assert [r.slug for r in runs] == ["_..", "_."]


def test_a_real_sweep_shares_its_stages_and_writes_the_table(tmp_path, tiny_models, capsys):
    out = tmp_path / "out"
    path = sweep_recipe(
        tmp_path, {"name": "gap", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}}, output_dir=str(out)
    )
    assert main(["sweep", path, "--run", "1"]) == 0  # as one array task would
    assert main(["sweep", path, "--collect"]) == 0
    assert "Not finished: top_fraction=0.5." in capsys.readouterr().out
    assert main(["sweep", path]) == 0
    assert [len(list((out / stage).iterdir())) for stage in ("generate", "judge", "pairs", "train")] == [1, 1, 2, 2]
    results = out / "sweeps" / "gap"
    rows = list(csv.DictReader(open(results / "results.csv")))
    assert [r["run"] for r in rows] == ["top_fraction=0.5", "top_fraction=1.0"]
    kept = [int(r["pairs_kept"]) for r in rows]
    assert rows[0]["pairs_built"] == rows[1]["pairs_built"] == "48"  # one judged pool, built the same way
    assert kept[0] == -(-kept[1] // 2)  # then the top half of what is kept without the filter
    assert json.loads((results / "results.json").read_text())["missing"] == []
    for column in ("in_domain_before", "in_domain_after", "out_of_domain_gain", "generator_gap_in_domain"):
        assert column in rows[0]
    table = (results / "results.md").read_text()
    assert "| top_fraction=0.5 |" in table and "generator gap (ID)" in table and "Not finished" not in table
    assert (results / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "runs" / "top_fraction=1.0" / "results.md").is_file()
