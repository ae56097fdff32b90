"""Seeds as a sweep axis: each arm trained per seed, and the arms' table with intervals over problems and seeds."""

import csv
import json

import numpy as np
import pytest
import yaml

from prefopt.cli import main
from prefopt.errors import ConfigError
from prefopt.sweep import expand, stage_keys

from conftest import CI_RECIPE


def sweep_recipe(tmp_path, sweep: dict, **top) -> str:
    data = yaml.safe_load(CI_RECIPE.read_text())
    data.update(sweep=sweep, **top)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_each_arm_runs_once_per_seed_sharing_generation_and_judging(tmp_path):
    path = sweep_recipe(
        tmp_path, {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}, "seeds": [3, 4, 5]}
    )
    _, runs = expand(path)
    assert [r.label for r in runs][:4] == [
        "top_fraction=0.5,seed=3",
        "top_fraction=0.5,seed=4",
        "top_fraction=0.5,seed=5",
        "top_fraction=1.0,seed=3",
    ]
    assert [(r.arm, r.seed) for r in runs][2:4] == [("top_fraction=0.5", 5), ("top_fraction=1.0", 3)]
    assert all(r.recipe.training.trl["seed"] == r.seed == r.recipe.pairing.seed for r in runs)
    assert runs[0].values == {"pairing.filter.top_fraction": 0.5}  # the seed is not a swept value
    keys = [stage_keys(r) for r in runs]
    assert len({k["generate"] for k in keys}) == len({k["judge"] for k in keys}) == 1
    assert len({k["train"] for k in keys}) == 6
    # Seeds alone: the recipe itself, once per seed.
    _, runs = expand(sweep_recipe(tmp_path, {"name": "s", "parameters": {}, "seeds": [0, 1]}))
    assert [(r.label, r.arm) for r in runs] == [("seed=0", "recipe"), ("seed=1", "recipe")]


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"name": "s", "parameters": {}}, "parameters must map each field to a non-empty list"),
        ({"name": "s", "parameters": {"training.trl.seed": [1, 2]}, "seeds": [0]}, "seeds sets training.trl.seed"),
        ({"name": "s", "parameters": {}, "seeds": [1, 1]}, "seeds must be distinct"),
        (
            {"name": "s", "parameters": {"pairing.filter.top_fraction": [0.5, 1.0]}, "baseline": "top_fraction=0.7"},
            "sweep.baseline: 'top_fraction=0.7' is not one of the arms",
        ),
    ],
)
def test_bad_seed_settings(tmp_path, sweep, message):
    with pytest.raises(ConfigError) as err:
        expand(sweep_recipe(tmp_path, sweep))
    assert message in str(err.value)


def test_arm_intervals_stack_seeds_and_pair_problems():
    from prefopt.evaluation.metrics import bootstrap_ci, paired_bootstrap_ci
    from prefopt.evaluation.report import arm_intervals

    rng = np.random.default_rng(1)
    base = [{"in_domain": {"greedy": rng.integers(0, 2, 30).astype(float)}} for _ in range(2)]
    arm = [{"in_domain": {"greedy": rng.integers(0, 2, 30).astype(float)}} for _ in range(3)]
    before = {"in_domain": {"greedy": rng.integers(0, 2, 30).astype(float)}}
    out = arm_intervals({"a": base, "b": arm}, "a", before)
    stacked = np.stack([s["in_domain"]["greedy"] for s in arm])
    other = np.stack([s["in_domain"]["greedy"] for s in base])
    assert out["b"]["sets"]["in_domain"]["greedy"] == bootstrap_ci(stacked).as_dict()
    assert out["b"]["vs_baseline"]["in_domain"]["greedy"] == paired_bootstrap_ci(stacked, other).as_dict()
    assert out["b"]["vs_baseline"]["in_domain"]["greedy"]["mean"] == pytest.approx(stacked.mean() - other.mean())
    assert out["a"]["vs_baseline"] == {} and "greedy" in out["a"]["vs_before"]["in_domain"]
    # Problems that differ (a swept evaluation) are not paired.
    short = [{"in_domain": {"greedy": np.ones(10)}}]
    assert arm_intervals({"a": base, "c": short}, "a")["c"]["vs_baseline"] == {}


@pytest.mark.slow  # minutes: a real run (make test runs it within SLOW_BUDGET)
def test_a_seeded_sweep_reports_arms_with_intervals(tmp_path, run_dir, capsys):
    """Two arms x two seeds on the CI run's generation and judging: four trainings, one table of arms."""
    path = sweep_recipe(
        tmp_path,
        {
            "name": "seeded",
            "parameters": {"training.trl.learning_rate": [1.0e-3, 1.0e-2]},
            "seeds": [1, 2],
            "baseline": "learning_rate=0.001",
        },
        output_dir=str(run_dir),
    )
    assert main(["sweep", path]) == 0
    results = run_dir / "sweeps" / "seeded"
    data = json.loads((results / "results.json").read_text())
    rows = list(csv.DictReader(open(results / "results.csv")))
    assert [r["run"] for r in rows] == [
        "learning_rate=0.001,seed=1",
        "learning_rate=0.001,seed=2",
        "learning_rate=0.01,seed=1",
        "learning_rate=0.01,seed=2",
    ]
    assert all(r["optimizer_steps"] == "3" for r in rows) and all(int(r["tokens_trained"]) > 0 for r in rows)
    arms = {a["arm"]: a for a in data["arms"]}
    assert list(arms) == ["learning_rate=0.001", "learning_rate=0.01"] and data["baseline"] == "learning_rate=0.001"
    low, high = arms["learning_rate=0.01"], arms["learning_rate=0.001"]
    assert low["seeds"] == [1, 2] and low["optimizer_steps"] == 3
    after = [float(r["in_domain_after"]) for r in rows]
    cell = low["sets"]["in_domain"]["greedy"]
    assert cell["mean"] == pytest.approx(np.mean(after[2:])) and cell["low"] <= cell["mean"] <= cell["high"]
    diff = low["vs_baseline"]["in_domain"]["greedy"]
    assert diff["mean"] == pytest.approx(np.mean(after[2:]) - np.mean(after[:2]))
    assert high["vs_baseline"] == {} and "greedy" in high["vs_before"]["in_domain"]
    table = (results / "results.md").read_text()
    assert "### Arms" in table and "| learning_rate=0.001 | 2 |" in table and "baseline" in table
    assert (results / "intervals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # `prefopt report` rebuilds the same tables and plots from disk, running nothing.
    assert main(["report", path, "--output", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.md").read_text() == table
    assert (tmp_path / "again" / "intervals.png").is_file()
    capsys.readouterr()
