"""The recipe's sections that belong to no stage: ``sweep:`` (runs over lists of values) and ``rounds:`` (iterative
on-policy rounds)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from prefopt.config_base import check_name, described


@dataclass(frozen=True)
class SweepConfig:
    """Runs that differ in a few recipe fields; they share every stage whose inputs they share."""

    name: str = described("Sweep name: results go to <output_dir>/sweeps/<name>/.")
    parameters: dict[str, list[Any]] = described(
        "Dotted recipe field (list items as name[i]) -> the values it takes, e.g. "
        "{pairing.filter.top_fraction: [0.1, 0.3, 1.0]}."
    )
    mode: Literal["product", "zip"] = described(
        "'product': every combination; 'zip': the i-th value of every list together (lists of equal length).",
        default="product",
    )
    labels: list[str] = described("A label per run for tables and plots (default: the values).", default_factory=list)
    x: str | None = described("The parameter on the plot's x axis (default: the first).", default=None)
    x_values: list[float] = described(
        "Numeric x positions per run when the values themselves are not numbers (e.g. each run's generator gap).",
        default_factory=list,
    )
    seeds: list[int] = described(
        "Train every run (arm) once per seed: the seed sets training.trl.seed and pairing.seed (generation and "
        "judging stay shared); tables give each arm's mean with a 95% interval over problems and seeds.",
        default_factory=list,
    )
    baseline: str | None = described(
        "The arm (its label) every other arm's difference is measured from, paired on the same problems "
        "(default: the first).",
        default=None,
    )

    def __post_init__(self):
        check_name(self.name, "name")
        if any(not isinstance(v, list) or not v for v in self.parameters.values()) or not (
            self.parameters or self.seeds
        ):
            raise ValueError("parameters must map each field to a non-empty list of values")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        clash = [k for k in self.parameters if k in ("training.trl.seed", "pairing.seed")]
        if clash and self.seeds:
            raise ValueError(f"seeds sets {clash[0]}: drop it from parameters, or seeds")
        sizes = [len(v) for v in self.parameters.values()] or [1]
        if self.mode == "zip" and len(set(sizes)) != 1:
            raise ValueError(f"mode zip needs lists of equal length, got {sizes}")
        runs = sizes[0] if self.mode == "zip" else math.prod(sizes)
        for name in ("labels", "x_values"):
            if getattr(self, name) and len(getattr(self, name)) != runs:
                raise ValueError(f"{name} needs one entry per run ({runs}), got {len(getattr(self, name))}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        if self.x is not None and self.x not in self.parameters:
            raise ValueError(f"x {self.x!r} is not one of the parameters {list(self.parameters)}")
        if self.baseline is not None and self.labels and self.baseline not in self.labels:
            raise ValueError(f"baseline {self.baseline!r} is not one of the labels {self.labels}")


@dataclass(frozen=True)
class RoundsConfig:
    """Iterative on-policy DPO/KTO (:mod:`prefopt.rounds`): generate, judge, pairs and train again from each round's
    trained policy. No stage key hashes this section, so one round is the plain recipe, stage for stage."""

    count: int = described(
        "Rounds of generate -> judge -> pairs -> train. Round k > 1 samples from round k-1's trained policy (every "
        "generator whose model is training.model gets it), builds pairs from those candidates only, and trains "
        "from its final weights, which are also the DPO/KTO reference (as in iterative DPO). Same prompts every "
        "round. 1: the recipe as without this section.",
        default=1,
    )
    keep_generators: bool = described(
        "Rounds after the first keep the pool's other generators (those not sampling from the policy) beside the "
        "on-policy ones; false: only the previous round's policy samples.",
        default=True,
    )

    def __post_init__(self):
        if isinstance(self.count, bool) or self.count < 1:
            raise ValueError(f"count: expected an integer >= 1, got {self.count!r}")
