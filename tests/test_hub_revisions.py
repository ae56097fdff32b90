"""Hub ids in stage keys: by the commit their revision resolves to (here: the local Hugging Face cache, offline)."""

import pytest
from huggingface_hub import constants

from prefopt import hub
from prefopt.pipeline import Pipeline
from prefopt.recipe import load_recipe
from prefopt.user_data import DatasetSpec, source_key

from conftest import CI_RECIPE

A, B = "a" * 40, "b" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never reach the network in tests
    hub.resolve_revision.cache_clear()
    yield tmp_path
    hub.resolve_revision.cache_clear()


def _push(cache, repo, commit, kind="models", revision="main"):
    refs = cache / f"{kind}--{repo.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / revision).write_text(commit)
    hub.resolve_revision.cache_clear()


def test_a_model_key_follows_the_commit_its_name_resolves_to(hub_cache):
    recipe = load_recipe(CI_RECIPE, check_trainers=False)
    unresolved = Pipeline(recipe).model_key("org/model")  # not cached, no Hub: the id as written
    _push(hub_cache, "org/model", A)
    at_a = Pipeline(recipe).model_key("org/model")
    assert at_a != unresolved and Pipeline(recipe).model_key("org/model") == at_a  # stable while main stays
    _push(hub_cache, "org/model", B)
    assert Pipeline(recipe).model_key("org/model") not in (at_a, unresolved)  # a new push to main: a new key
    assert Pipeline(recipe).model_key("served-name") == Pipeline(recipe).model_key("served-name")  # not a hub id


def test_a_hub_dataset_key_follows_its_revision(hub_cache):
    spec = DatasetSpec("org/data", split="train")
    _push(hub_cache, "org/data", A, kind="datasets")
    first = source_key(spec)
    _push(hub_cache, "org/data", B, kind="datasets")
    assert source_key(spec) != first
    assert hub.resolve_revision("org/data", B, "dataset") == B  # a commit given is already resolved
    assert hub.resolve_revision("org/data", "v1", "dataset") is None  # nothing cached for that branch


def test_local_paths_and_served_names_are_not_hub_ids(tmp_path):
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    assert hub.looks_like_hub_id("org/model")
    assert not hub.looks_like_hub_id(str(tmp_path / "org" / "model"))
    assert not hub.looks_like_hub_id("tiny") and not hub.looks_like_hub_id("world:policy")
