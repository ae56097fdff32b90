"""The pair strategies: names and capabilities.

``pairing.strategy`` is validated against :data:`STRATEGIES` when a recipe loads, and code asks an entry's
capabilities (``STRATEGIES.get(name).needs_generator_labels``) instead of comparing names. Each strategy is a
module of :mod:`prefopt.pairing.strategies` that declares itself (``STRATEGY = {"name": ..., <capabilities>}``) and
defines ``run(cfg, judged) -> Built`` (a :class:`prefopt.pairing.candidates.Built`); the registry reads the
declarations without importing the modules, so validating a recipe imports no pandas.
"""

from __future__ import annotations

from collections.abc import Callable

from prefopt.registry import Registry, load_target

STRATEGIES: Registry[Callable] = Registry(
    "pair strategy",
    plugins="prefopt.pairing.strategies",  # each module there declares its strategy (STRATEGY = {...}) and its run
    declared="STRATEGY",
    needs_generator_labels=False,  # pairs by generator label: reads generator_pairs, not generators
    within_prompt=False,  # pairs candidates of one prompt pooled from `generators`, by their scores
    unpaired=False,  # makes KTO examples (prefopt.schemas.UNPAIRED), not pairs
    settings=None,  # the PairingConfig field holding the strategy's settings (recorded in stats' strategy)
)


def strategy_function(name: str) -> Callable:
    """The function running strategy ``name``: ``run(cfg, judged) -> Built`` (imported now, with pandas)."""
    return load_target(STRATEGIES.get(name))
