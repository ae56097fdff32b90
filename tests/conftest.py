"""Shared, expensive fixtures: the tiny models are built once per test session into one cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefopt.configs import load_recipe

TESTS = Path(__file__).parent
CI_RECIPE = TESTS / "recipes" / "ci.yaml"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """A fresh model cache for the session (also seen by subprocesses and the CLI)."""
    path = Path(os.environ.get("PREFOPT_TEST_CACHE_DIR") or tmp_path_factory.mktemp("prefopt-cache"))
    os.environ["PREFOPT_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def ci_recipe():
    return load_recipe(CI_RECIPE)


@pytest.fixture(scope="session")
def tiny_models(ci_recipe, model_cache) -> dict[str, str]:
    """Directories of the CI recipe's strong, weak and policy models, built once."""
    from prefopt.world.models import build_tiny_model

    return {name: str(build_tiny_model(spec, model_cache, desc=name)) for name, spec in ci_recipe.world.models.items()}
