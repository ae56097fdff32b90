"""The registry behind every extension point, and the engine names checked when a recipe loads."""

import subprocess
import sys
from pathlib import Path

import pytest

from prefopt.engines.registry import ENGINES
from prefopt.errors import ConfigError
from prefopt.recipe import load_recipe
from prefopt.registry import Registry, UnknownName, load_target, lookup

DEMO = Path(__file__).parents[1] / "recipes" / "demo" / "tiny.yaml"


def test_entries_carry_their_capabilities_and_defaults():
    reg = Registry("widget", fast=False, colour="grey")
    reg.register("a", print, fast=True, help="the quick one")
    reg.register("b", len)
    assert reg.get("a").fast is True and reg.get("a").colour == "grey" and reg.get("a").target is print
    assert reg.get("b").fast is False
    assert reg.names() == ["a", "b"] and reg.names(fast=True) == ["a"]
    assert "a" in reg and "c" not in reg and len(reg) == 2


def test_decorator_registers_and_returns_the_object():
    reg = Registry("loss")

    @reg.register("mine")
    def mine():
        return 1

    assert reg.get("mine").target is mine and mine() == 1


def test_unknown_names_list_the_valid_ones_and_suggest_the_closest():
    reg = Registry("strategy")
    for name in ("max_min", "max_random", "sweet_spot"):
        reg.register(name, name)
    with pytest.raises(
        UnknownName,
        match=r"unknown strategy 'max_mni' \(did you mean 'max_min'\?\); expected one of "
        r"\['max_min', 'max_random', 'sweet_spot'\]",
    ):
        reg.get("max_mni")
    with pytest.raises(UnknownName, match="unknown strategy 7;"):
        reg.get(7)
    with pytest.raises(ConfigError, match="^pairing.strategy: unknown strategy 'zzz'; expected"):
        lookup(reg, "zzz", "pairing.strategy", ConfigError)


def test_mistakes_in_registering_are_caught():
    reg = Registry("judge", needs_reference=False)
    reg.register("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 2)
    with pytest.raises(TypeError, match="unknown capabilities \\['needs_referenc'\\]"):
        reg.register("b", 3, needs_referenc=True)
    with pytest.raises(AttributeError, match="no capability 'colour'"):
        _ = reg.get("a").colour


def test_engine_targets_resolve_to_their_classes():
    for entry in ENGINES:
        cls = load_target(entry)
        assert cls.__name__.lower().startswith(entry.name) and callable(cls.generate)
    assert ENGINES.names(runs_local_weights=False) == ["server"]


def test_every_engine_is_one_declared_file_and_the_shared_modules_are_not_engines():
    import pkgutil

    import prefopt.engines as engines

    modules = sorted(m.name for m in pkgutil.iter_modules(engines.__path__))
    assert ENGINES.names() == sorted(
        set(modules) - set(ENGINES.shared)
    )  # each file declares the engine it is named after
    assert set(ENGINES.shared) <= set(modules)
    for entry in ENGINES:
        assert load_target(entry).__module__ == f"prefopt.engines.{entry.name}"


def test_engine_registry_imports_no_torch():
    code = "import sys, prefopt.engines.registry; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "generation.engine=vlm",
            "generation.engine: unknown engine 'vlm' (did you mean 'vllm'?); expected one of "
            "['server', 'transformers', 'vllm']",
        ),
        (
            "evaluation.engine=server",
            "evaluation.engine: 'server' does not load the evaluated model; expected one of ['transformers', 'vllm']",
        ),
    ],
)
def test_unknown_or_unfit_engine_fails_at_load_naming_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(DEMO, [override])
    assert str(err.value) == f"{DEMO}: {message}"


def test_cli_help_imports_no_heavy_library():
    code = (
        "import runpy, sys\nsys.argv = ['prefopt', '--help']\ntry:\n    runpy.run_module('prefopt.cli', "
        "run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'vllm', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: prefopt" in out and out.strip().endswith("[]")


def test_a_plugin_package_registers_its_entries_when_first_asked(tmp_path, monkeypatch):
    package = tmp_path / "my_plugins"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from prefopt.registry import Registry\nTHINGS = Registry('thing', plugins=__name__, fast=False)\n"
    )
    (package / "slow_one.py").write_text("from my_plugins import THINGS\nTHINGS.register('slow', len)\n")
    (package / "fast_one.py").write_text("from my_plugins import THINGS\nTHINGS.register('fast', abs, fast=True)\n")
    (package / "_private.py").write_text("raise RuntimeError('a private module is not a plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from my_plugins import THINGS

    assert THINGS._entries == {}  # nothing imported until a name is needed
    assert THINGS.names() == ["fast", "slow"] and THINGS.names(fast=True) == ["fast"]
    assert THINGS.get("slow").target is len and "fast" in THINGS and len(THINGS) == 2
    with pytest.raises(UnknownName, match="did you mean 'slow'"):
        THINGS.get("slwo")


def test_every_pair_loss_is_one_file_that_registers_itself():
    import pkgutil

    import prefopt.training.losses as losses

    modules = [m.name for m in pkgutil.iter_modules(losses.__path__)]
    assert set(losses.PAIR_LOSSES.names()) == {"stock", "sigmoid", "weighted", "offset", "soft_label"}
    for entry in losses.PAIR_LOSSES:
        assert entry.target.__module__.rsplit(".", 1)[1] in modules  # registered by its own file


def test_declared_plugins_are_read_without_importing_them(tmp_path, monkeypatch):
    package = tmp_path / "declared_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rule_a.py").write_text(
        "import this_module_does_not_exist  # importing it would fail\n"
        "RULE = {'name': 'a', 'help': 'the first', 'paired': False}\n"
        "def run():\n    return 'ran a'\n"
    )
    (package / "rule_b.py").write_text("RULE = {'name': 'b', 'help': 'the second'}\ndef run():\n    return 'ran b'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = Registry("rule", plugins="declared_plugins", declared="RULE", paired=True)
    assert rules.names() == ["a", "b"] and rules.names(paired=False) == ["a"] and rules.get("a").help == "the first"
    assert "declared_plugins.rule_a" not in sys.modules
    assert load_target(rules.get("b"))() == "ran b"
    (package / "rule_c.py").write_text("RULE = dict(name='c')\n")  # not a literal
    with pytest.raises(TypeError, match="declares itself as RULE"):
        Registry("rule", plugins="declared_plugins", declared="RULE", paired=True).names()


def test_every_strategy_is_one_declared_file_whose_run_builds_pairs():
    import pkgutil

    import prefopt.pairing.strategies as strategies
    from prefopt.pairing.registry import STRATEGIES, strategy_function

    modules = sorted(m.name for m in pkgutil.iter_modules(strategies.__path__))
    assert STRATEGIES.names() == modules  # each file declares the strategy it is named after
    assert all(callable(strategy_function(name)) for name in modules)


def test_a_declared_plugin_names_its_entry_and_the_shared_modules_are_skipped(tmp_path, monkeypatch):
    package = tmp_path / "entry_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("import this_module_does_not_exist  # what the plugins share\n")
    (package / "kind_a.py").write_text("KIND = {'name': 'a'}\ndef make():\n    return 'made a'\n")
    (package / "kind_b.py").write_text("KIND = {'name': 'b', 'entry': 'B'}\nclass B:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = Registry("kind", plugins="entry_plugins", declared="KIND", entry="make", shared=("base",))
    assert kinds.names() == ["a", "b"] and "entry_plugins.base" not in sys.modules
    assert load_target(kinds.get("a"))() == "made a" and load_target(kinds.get("b")).__name__ == "B"
    with pytest.raises(TypeError, match=r"^entry_plugins.base: a plugin module declares itself as KIND"):
        Registry("kind", plugins="entry_plugins", declared="KIND").names()  # base is not listed as shared


@pytest.mark.parametrize(
    "declaration, error",
    [
        ("KIND = {'help': 'no name'}", r"kind_c: a plugin module declares itself as KIND = \{'name': \.\.\., \.\.\.\}"),
        (
            "KIND = {'name': 'c', 'fsat': True}",
            r"kind_c: kind 'c': unknown capabilities \['fsat'\]; known: \['fast'\]$",
        ),
        ("KIND = {'name': 'a'}", r"kind_c: kind 'a' is registered twice$"),
        ("KIND = ['c']", r"kind_c: a plugin module declares itself as KIND = "),
        ("", r"kind_c: a plugin module declares itself as KIND = "),
    ],
)
def test_a_malformed_declaration_is_one_line_naming_its_module(tmp_path, monkeypatch, declaration, error):
    name = "plugins_" + tmp_path.name.replace("[", "_").replace("]", "_").replace("-", "_")
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "kind_a.py").write_text("KIND = {'name': 'a'}\n")
    (package / "kind_c.py").write_text(declaration + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises((TypeError, ValueError), match=f"^{name}.{error}"):
        Registry("kind", plugins=name, declared="KIND", fast=False).names()
