"""The stage units (prefopt/stage.py): one interface for every stage, and the generic runner."""

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

import prefopt.schemas
from prefopt.cache import is_complete, read_manifest
from prefopt.layout import STAGES
from prefopt.stage import Stage, execute
from prefopt.stage_keys import ORDER, UNITS


def test_every_stage_is_a_unit_of_one_shape():
    assert set(UNITS) == set(STAGES) and list(UNITS)[: len(ORDER)] == [s.name for s in ORDER]
    for stage in UNITS.values():
        assert stage.reads is None or stage.reads in UNITS, stage.name
        assert stage.given_as is None or stage.given_as in UNITS, stage.name
        assert stage.schema is None or isinstance(getattr(prefopt.schemas, stage.schema), dict), stage.name
        assert isinstance(stage.version, int) and isinstance(stage.resumable, bool)


@dataclass(frozen=True)
class Toy(Stage):
    name = "toy"
    version = 1
    finish: bool = True
    fail: bool = False

    def config(self, ctx):
        return {"n": 1}

    def key_parts(self, ctx, upstream):
        return ctx.recipe, upstream

    def run(self, ctx, source, out: Path) -> bool:
        (out / "part.txt").write_text(source)
        if self.fail:
            raise RuntimeError("stopped")
        return self.finish


@dataclass(frozen=True)
class ResumableToy(Toy):
    resumable = True


def context():
    return SimpleNamespace(recipe="r", outcomes=[])


@pytest.mark.parametrize("kind", [Toy, ResumableToy])
def test_execute_writes_once_then_finds_it_complete(tmp_path, kind):
    ctx, out = context(), tmp_path / "toy" / "k"
    assert execute(kind(), ctx, "data", out) == out and is_complete(out)
    assert read_manifest(out)["stage"] == "toy" and read_manifest(out)["input"] == "data"
    execute(kind(), ctx, "other", out, label="toy again")
    assert [(o.name, o.status) for o in ctx.outcomes] == [("toy", "ran"), ("toy again", "cached")]
    assert (out / "part.txt").read_text() == "data"


def test_a_resumable_stage_keeps_its_partial_output_until_it_says_complete(tmp_path):
    ctx, out = context(), tmp_path / "k"
    execute(ResumableToy(finish=False), ctx, "data", out)
    assert (out / "part.txt").is_file() and not is_complete(out) and ctx.outcomes == []
    with pytest.raises(RuntimeError):
        execute(ResumableToy(fail=True), ctx, "data", tmp_path / "failed")
    assert (tmp_path / "failed" / "part.txt").is_file()  # partial progress is kept for a rerun


def test_a_stage_written_whole_leaves_nothing_when_it_fails(tmp_path):
    with pytest.raises(RuntimeError):
        execute(Toy(fail=True), context(), "data", tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_the_key_hashes_name_version_and_parts():
    assert Toy().key(context(), "up") == Toy().key(context(), "up") != Toy().key(context(), "other")
    assert ResumableToy().key(context(), "up") == Toy().key(context(), "up")  # same name, version and parts


@pytest.mark.parametrize(("strategy", "schema"), [("kto_unpaired", "UNPAIRED"), ("generator_delta", "PAIRS")])
def test_the_pairs_schema_follows_the_strategy(strategy, schema):
    recipe = SimpleNamespace(pairing=SimpleNamespace(strategy=strategy))
    assert UNITS["pairs"].output_schema(recipe) == schema
    assert UNITS["judge"].output_schema(recipe) == "JUDGMENTS"


@pytest.mark.parametrize(
    ("dataset", "margin_bayes", "used"),
    [
        (None, None, ["generate", "judge", "pairs", "train"]),
        (None, object(), ["generate", "judge", "proxy", "pairs", "train"]),
        ("pairs.jsonl", object(), ["train"]),  # training reads the recipe's own data: nothing makes it
    ],
)
def test_the_stages_a_recipe_runs(dataset, margin_bayes, used):
    recipe = SimpleNamespace(
        training=SimpleNamespace(dataset=dataset), pairing=SimpleNamespace(margin_bayes=margin_bayes)
    )
    assert [stage.name for stage in ORDER if stage.used(recipe)] == used
