"""Sweeps: expansion, validation, dry runs, the Slurm script, and a real sweep whose runs share stages."""

import csv
import json

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
    "sweep, fragments",
    [
        (
            {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.5]}},
            ("sweep run 1 (top_fraction=1.5): pairing.filter.top_fraction: ", "must be in (0, 1]"),
        ),
        ({"name": "s", "mode": "zip", "parameters": {"a.b": [1, 2], "c.d": [1]}}, ("lists of equal length",)),
        (
            {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5]}, "labels": ["a", "b"]},
            ("sweep.labels: ", "needs one entry per run (1)"),
        ),
        ({"name": "s", "parameters": {"generation.generators[7].n": [2]}}, ("generators[7] is not an item of a list",)),
    ],
)
def test_bad_sweeps_name_the_file_and_the_run(tmp_path, sweep, fragments):
    path = sweep_recipe(tmp_path, sweep)
    with pytest.raises(ConfigError) as err:
        expand(path)
    assert str(err.value).startswith(f"{path}: ") and all(f in str(err.value) for f in fragments), str(err.value)


def test_dry_run_shows_the_shared_stages(tmp_path, capsys):
    path = sweep_recipe(tmp_path, {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}})
    assert main(["sweep", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Distinct stage outputs: generate: 1, judge: 1, pairs: 2, train: 2 (for 2 runs)" in out


def test_slurm_jobs_and_the_dry_run_resources(tmp_path, capsys):
    """--slurm writes a job per stage under the sweep's slurm/ (tests/test_slurm.py runs them); the dry run lists
    what each stage's job would take."""
    path = sweep_recipe(
        tmp_path,
        {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}},
        output_dir=str(tmp_path / "out"),
        resources={"time": "02:00:00", "train": {"nodes": 2, "gpus": 4}, "generate": {"shards": 4}},
    )
    assert main(["sweep", path, "--slurm", "--sbatch-args", "-p gpu"]) == 0
    directory = tmp_path / "out" / "sweeps" / "s" / "slurm"
    submit = (directory / "submit.sh").read_text()
    jobs = [line for line in submit.splitlines() if "=$(submit" in line]
    assert len(jobs) == 11 and all(
        " -p gpu " in line for line in jobs
    )  # generate, merge, judge, 2 x 3, prepare, collect
    assert "#SBATCH --array=0-3" in (directory / "run0_generate.sh").read_text()
    assert "#SBATCH --nodes=2" in (directory / "run1_train.sh").read_text()
    assert sorted(p.name for p in (directory / "recipes").iterdir()) == ["000.yaml", "001.yaml"]
    capsys.readouterr()
    assert main(["sweep", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "| train | 1 | 2 | 4 | 8 | 02:00:00 |" in out and "| generate | 4 (array) + merge | 1 | 0 | 0 |" in out


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
    assert main(["sweep", path, "--prepare"]) == 0  # what every run reads, the baselines' evaluations too
    assert [len(list((out / stage).iterdir())) for stage in ("generate", "judge", "eval")] == [1, 1, 3]
    assert not (out / "pairs").exists()
    assert main(["sweep", path, "--run", "1"]) == 0  # as one run's job would
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
