"""The pair strategies: names and capabilities, without importing any of them.

``pairing.strategy`` is validated against :data:`STRATEGIES` when a recipe loads, and code asks an entry's
capabilities (``STRATEGIES.get(name).needs_generator_labels``) instead of comparing names. Each target
(``module:function``) runs the strategy from a ``PairingConfig`` and the flattened judgments and returns a
:class:`prefopt.pairing.strategies.Built`; :func:`strategy_function` imports it only when pairs are built.
This module imports nothing heavier than :mod:`prefopt.registry`, so ``prefopt.pairing.config`` can import it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from prefopt.registry import Registry

STRATEGIES: Registry[str] = Registry(
    "pair strategy",
    needs_generator_labels=False,  # pairs by generator label: reads generator_pairs, not generators
    within_prompt=False,  # pairs candidates of one prompt pooled from `generators`, by their scores
    unpaired=False,  # makes KTO examples (prefopt.schemas.UNPAIRED), not pairs
    settings=None,  # the PairingConfig field holding the strategy's settings (recorded in stats' strategy)
)
STRATEGIES.register(
    "generator_delta",
    "prefopt.pairing.build:run_generator_delta",
    needs_generator_labels=True,
    help="Chosen from the stronger generator of each generator_pairs entry, sample i against sample i.",
)
STRATEGIES.register(
    "max_min",
    "prefopt.pairing.build:run_max_min",
    within_prompt=True,
    help="Per prompt: the best candidate against the worst other one.",
)
STRATEGIES.register(
    "max_random",
    "prefopt.pairing.build:run_max_random",
    within_prompt=True,
    help="Per prompt: the best candidate against a seeded random other one.",
)
STRATEGIES.register(
    "sweet_spot",
    "prefopt.pairing.build:run_sweet_spot",
    within_prompt=True,
    settings="sweet_spot",
    help="Per prompt: the candidates nearest mu + k sigma of its scores (Finding the Sweet Spot).",
)
STRATEGIES.register(
    "kto_unpaired",
    "prefopt.pairing.build:run_kto_unpaired",
    unpaired=True,
    settings="kto",
    help="Every candidate a KTO example, desirable or not by its absolute score.",
)


def strategy_function(name: str) -> Callable:
    """The function running strategy ``name`` (imported now, with pandas and datasets)."""
    module, _, attr = STRATEGIES.get(name).target.partition(":")
    return getattr(importlib.import_module(module), attr)
