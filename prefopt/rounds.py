"""Iterative on-policy rounds (``rounds: {count: K}``): generate, judge, pairs and train K times, each round from the
previous round's trained policy.

Round 1 is the recipe itself. Round k > 1 is :func:`prefopt.recipe.round_recipe` of it: every generator whose model
is ``training.model`` samples from round k-1's trained policy (``<output_dir>/train/<key>/model``), the other
generators stay if ``rounds.keep_generators``, pairs are built from that round's candidates only, and training starts
from those final weights, which TRL also takes as the reference (iterative DPO: Xiong et al. 2024; Pang et al. 2024).
Each round is an ordinary one-round :class:`~prefopt.pipeline.Pipeline`, so its stages have their own keys, and those
include the previous round's train key (the identity of the model they sample from and train, see
``Pipeline.model_key``): a rerun skips finished rounds and resumes the one that was stopped. Every round's policy is
evaluated; the report adds a table of accuracy per round, round 0 being the untrained policy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prefopt.cache import is_complete
from prefopt.layout import FINAL_MODEL_DIR
from prefopt.recipe import RoundsConfig, round_recipe
from prefopt.tables import pct, pp

if TYPE_CHECKING:
    from prefopt.pipeline import Pipeline

logger = logging.getLogger(__name__)


class Rounds:
    """The one-round pipelines of a recipe's rounds, run, planned, evaluated and reported together."""

    def __init__(self, pipeline: Pipeline):
        self.recipe = pipeline.recipe
        make = type(pipeline)
        first = make(dataclasses.replace(self.recipe, rounds=RoundsConfig()), pipeline.cache_dir, pipeline.inputs)
        self.pipelines = [first]
        for _ in range(1, self.recipe.rounds.count):
            model = str(self.trained(len(self.pipelines)) / FINAL_MODEL_DIR)
            self.pipelines.append(make(round_recipe(self.recipe, model), pipeline.cache_dir))
        for p in self.pipelines:
            p.outcomes = pipeline.outcomes  # one record of what ran or was found done, as for one round

    def trained(self, k: int) -> Path:
        """Round ``k``'s train stage directory."""
        p = self.pipelines[k - 1]
        return p.stage_dir("train", p.train_key())

    def label(self, k: int) -> str:
        """The policy after round ``k`` in the tables: round 0 is the policy before training, the last round the
        policy after it."""
        before, after = self.pipelines[0].model_labels()
        return before if k == 0 else after if k == len(self.pipelines) else f"policy (round {k})"

    def run(self, report_dir: Path | None = None) -> Path:
        """Every round's stages in order, each round's policy evaluated as soon as it is trained; then the report."""
        for k, p in enumerate(self.pipelines, 1):
            logger.info("Round %d of %d", k, len(self.pipelines))
            p.generate()
            p.judge()
            p.pairs()
            p.train()
            self.evaluate_round(k)
        return self.report(self.evaluate(), report_dir)

    def evaluate_round(self, k: int) -> dict:
        """Round ``k``'s trained policy on every evaluation set (cached like any evaluation)."""
        p = self.pipelines[k - 1]
        return p.evaluate_model(self.label(k), str(self.trained(k) / FINAL_MODEL_DIR), p.train_key(), trained=True)

    def evaluate(self) -> dict[str, dict]:
        """The generators and the untrained policy (as one round has them), then the policy after every trained
        round."""
        first = self.pipelines[0]
        results = {
            label: first.evaluate_model(label, first.model_path(ref), first.model_key(ref), policy=policy)
            for label, (ref, policy) in first.evaluated_models().items()
        }
        for k in range(1, len(self.pipelines) + 1):
            if is_complete(self.trained(k)):
                results[self.label(k)] = self.evaluate_round(k)
        return results

    def eval_keys(self) -> dict[str, str]:
        """Label -> eval key: the generators and round 0, then each round's trained policy."""
        first = self.pipelines[0]
        keys = first.eval_keys()
        del keys[first.model_labels()[1]]
        for k, p in enumerate(self.pipelines, 1):
            keys[self.label(k)] = p.eval_key(p.train_key(), trained=True)
        return keys

    def eval_dirs(self) -> dict[str, Path]:
        """Label -> output directory of every finished evaluation."""
        dirs = {label: self.pipelines[0].stage_dir("eval", key) for label, key in self.eval_keys().items()}
        return {label: path for label, path in dirs.items() if is_complete(path)}

    def evaluated(self) -> dict[str, dict]:
        """The summaries of every finished evaluation, running nothing."""
        return {label: json.loads((path / "summary.json").read_text()) for label, path in self.eval_dirs().items()}

    def plan(self) -> list[dict]:
        """Each round's stages (``generate (round 2)``, ...) and its policy's evaluation, then the evaluations of the
        generators and the untrained policy (round 0); each row with its ``round``."""
        after = f"eval {self.pipelines[0].model_labels()[1]}"
        rows, untrained = [], []
        for k, p in enumerate(self.pipelines, 1):
            for row in p.plan():
                if row["stage"] == after:
                    rows.append({**row, "stage": f"eval {self.label(k)}", "round": k})
                elif not row["stage"].startswith("eval "):
                    rows.append({**row, "stage": f"{row['stage']} (round {k})", "round": k})
                elif k == 1:
                    untrained.append({**row, "round": 0})
        return rows + untrained

    def pair_stats(self, k: int) -> dict | None:
        """Round ``k``'s pairs statistics (``stats.json``), None before its pairs stage has run."""
        p = self.pipelines[k - 1]
        out = p.stage_dir("pairs", p.pairs_key())
        return json.loads((out / "stats.json").read_text()) if is_complete(out) else None

    def report(self, accuracies: dict[str, dict], report_dir: Path | None = None, figures: bool = False) -> Path:
        """results.md / results.json as for one round (the policy before training against the last round's; pair
        statistics and training metrics of the last round), plus the table of rounds (``rounds`` in the JSON)."""
        from prefopt.evaluation.report import columns, load_scores, value, write_report

        last = len(self.pipelines)
        scores = {label: load_scores(path) for label, path in self.eval_dirs().items() if label in accuracies}
        state = self.trained(last) / "trainer_state.json"
        history = json.loads(state.read_text()).get("log_history", []) if state.is_file() else None
        root = report_dir or self.pipelines[0].root
        labels = self.pipelines[0].model_labels()
        md = write_report(root, self.recipe, accuracies, self.pair_stats(last), labels, scores, history, figures)
        cols = columns(accuracies)
        rows = []
        for k in range(last + 1):
            if self.label(k) not in accuracies:
                continue
            p = self.pipelines[k - 1] if k else None
            stats = self.pair_stats(k) if k else None
            rows.append(
                {
                    "round": k,
                    "model": self.label(k),
                    "accuracy": {key: value(accuracies[self.label(k)], key) for key, _ in cols},
                    "generators": {g.name: g.model for g in p.recipe.generation.generators} if p else None,
                    "pairs_kept": stats.get("pairs_kept") if stats else None,
                    "train_dir": str(self.trained(k)) if p else None,
                }
            )
        md.write_text(md.read_text() + "\n" + rounds_markdown(rows, cols))
        results = md.with_name("results.json")
        results.write_text(json.dumps({**json.loads(results.read_text()), "rounds": rows}, indent=2))
        return md


def rounds_markdown(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """The table of rounds: each round's accuracy, with its change from the round before, and its pairs."""
    lines = [
        "## Rounds",
        "",
        "Round 0 is the policy before training; round k trained from round k-1's policy on pairs of its samples.",
        "",
        "| round | model | " + " | ".join(h for _, h in cols) + " | pairs kept |",
        "| --- " * (len(cols) + 3) + "|",
    ]
    previous: dict | None = None
    for row in rows:
        cells = []
        for key, _ in cols:
            x, before = row["accuracy"][key], (previous or {}).get(key)
            cells.append(pct(x) + ("" if x is None or before is None else f" ({pp(x - before)})"))
        kept = "-" if row["pairs_kept"] is None else str(row["pairs_kept"])
        lines.append(f"| {row['round']} | {row['model']} | " + " | ".join(cells) + f" | {kept} |")
        previous = row["accuracy"]
    return "\n".join(lines) + "\n"
