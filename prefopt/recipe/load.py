"""Loading a recipe: its YAML (duplicate keys refused), ``--set`` overrides, no secrets, then the validated
:class:`~prefopt.recipe.config.Recipe`.

:func:`load_recipe` rejects unknown keys, wrong types and bad values with a :class:`ConfigError` naming the file
and the dotted field path (``recipes/x.yaml: generation.generators[1].temperature: expected a number, got 'hot'``).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from prefopt.cache import is_secret_key
from prefopt.config_base import from_dict
from prefopt.errors import ConfigError
from prefopt.recipe.before_run import check_trainer_configs
from prefopt.recipe.config import Recipe

_SEGMENT = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")


def set_path(data: dict, path: str, value: Any) -> None:
    """Set ``value`` at a dotted path of a raw recipe mapping; ``name[i]`` indexes a list
    (``generation.generators[0].n``). Missing mappings on the way are created."""
    node: Any = data
    steps: list[str | int] = []
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if not match:
            raise ConfigError(f"{path}: {part!r} is not a field name (with optional [index])")
        steps.append(match.group(1))
        steps += [int(i) for i in re.findall(r"\d+", match.group(2))]

    def named(upto: int) -> str:  # the path up to a step, for errors
        return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[:upto]).lstrip(".")

    for i, step in enumerate(steps[:-1]):
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise ConfigError(f"{path}: {named(i + 1)} is not an item of a list")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: {named(i + 1)} is not a mapping")
            node = node.setdefault(step, [] if isinstance(steps[i + 1], int) else {})
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"{path}: no item {last} to set")
    elif not isinstance(node, dict):
        raise ConfigError(f"{path}: the parent of {last!r} is not a mapping")
    node[last] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw recipe mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({yaml_problem(err)})") from None
        try:
            set_path(data, key, value)
        except ConfigError as err:
            raise ConfigError(f"--set {item!r}: {err}") from None
    return data


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                twice = key in seen
            except TypeError:  # an unhashable key: construct_mapping says so
                break
            if twice:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line and column, from 1) and what."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    what = " ".join(str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join((what or str(err)).split())


def read_recipe_data(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The raw mapping of a recipe file, with ``dotted.key=value`` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found" + (" (a directory)" if path.is_dir() else ""))
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); a recipe is a YAML text file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping, got {type(data).__name__}")
    try:
        data = apply_overrides(data, overrides or [])
        reject_secrets(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return data


def reject_secrets(data: Any, where: str = "") -> None:
    """Refuse a secret written into a recipe (it would end up in version control, logs and run manifests)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, value in items:
        path = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        if is_secret_key(key) and value not in (None, ""):
            raise ConfigError(
                f"{path}: a secret does not belong in a recipe (it would be written to logs and "
                "manifests); put it in an environment variable (servers: engine_options.api_key_env "
                "names it, default OPENAI_API_KEY)"
            )
        reject_secrets(value, path)


def recipe_from_data(data: dict) -> Recipe:
    """A validated recipe from its raw mapping: types and values, the names and types of TRL fields (against a
    snapshot of TRL's configs, see :mod:`prefopt.training.trl_fields`), the judge's rubric, the chat template
    file. Imports no torch; :func:`check_trainer_configs` adds what needs TRL itself."""
    from prefopt.engines.base import chat_template_text
    from prefopt.training.trl_fields import check_model_args, check_trl_section

    recipe = from_dict(Recipe, data)
    t = recipe.training
    config = "PrefKTOConfig" if t.method == "kto" else "PrefDPOConfig"
    training = dataclasses.replace(
        t,
        trl=check_trl_section(t.trl, config, "training.trl"),
        model_args=check_model_args(t.model_args, "training.model_args"),
        chat_template=None
        if t.chat_template is None
        else chat_template_text(t.chat_template, "training.chat_template"),
    )
    recipe = dataclasses.replace(recipe, training=training)
    if recipe.judging.llm is not None:
        from prefopt.judging.rubrics import load_rubric

        try:
            load_rubric(recipe.judging.llm.rubric)
        except ConfigError as err:
            raise ConfigError(f"judging.llm.rubric: {err}") from None
    mb = recipe.pairing.margin_bayes
    if mb is not None:
        proxy = dataclasses.replace(
            mb.proxy, trl=check_trl_section(mb.proxy.trl, "PrefDPOConfig", "pairing.margin_bayes.proxy.trl")
        )
        recipe = dataclasses.replace(
            recipe, pairing=dataclasses.replace(recipe.pairing, margin_bayes=dataclasses.replace(mb, proxy=proxy))
        )
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_trainers: bool = True) -> Recipe:
    """Load and validate a recipe YAML file, with optional ``dotted.key=value`` overrides. ``check_trainers``:
    also build the trainers' configs (:func:`check_trainer_configs`; imports torch and TRL, about 8 s)."""
    data = read_recipe_data(path, overrides)
    try:
        recipe = recipe_from_data(data)
        if check_trainers:
            check_trainer_configs(recipe)
        return recipe
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
