"""The pairs stage and margin_bayes's proxy stage as units (:mod:`prefopt.stage`): judgments in, pairs out."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from prefopt.stage import Stage, StageContext


@dataclass(frozen=True)
class Proxy(Stage):
    """margin_bayes's proxy, in place (resumable): seed pairs, the proxy's DPO run, implicit margins. It reads what
    the pairs stage reads."""

    name = "proxy"
    version = 2
    reads = "judge"
    given_as = "pairs"
    resumable = True
    makes_training_data = True

    def used(self, recipe) -> bool:
        return super().used(recipe) and recipe.pairing.margin_bayes is not None

    def config(self, ctx: StageContext):
        return ctx.recipe.pairing.margin_bayes.proxy

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        """The proxy depends on the pairs it is trained on and scores, not on how margin_bayes then selects."""
        p = ctx.recipe.pairing
        base = dataclasses.replace(p, margin_bayes=None, reward_augmented=None)
        return base, p.margin_bayes.proxy, upstream, ctx.model_key(p.margin_bayes.proxy.model)

    def run(self, ctx: StageContext, source: Path, out: Path) -> bool:
        from prefopt.pairing.build import base_pairs
        from prefopt.pairing.proxy import run_proxy
        from prefopt.schemas import JUDGMENTS, load_stage_dataset

        cfg = ctx.recipe.pairing
        pairs = base_pairs(cfg, load_stage_dataset(source, JUDGMENTS, "judgments"))
        run_proxy(cfg.margin_bayes.proxy, pairs, ctx.model_path(cfg.margin_bayes.proxy.model), out, cfg.seed)
        return True


@dataclass(frozen=True)
class Pairs(Stage):
    """Pairs, their statistics and report, written whole. ``proxy``: the proxy stage's output, with margin_bayes."""

    name = "pairs"
    version = 2  # exact fraction counts and seeded ties
    reads = "judge"
    schema = "PAIRS"
    makes_training_data = True
    proxy: Path | None = None

    def output_schema(self, recipe) -> str:
        """UNPAIRED when the strategy makes KTO examples (``kto_unpaired``), else PAIRS."""
        from prefopt.pairing.registry import STRATEGIES

        return "UNPAIRED" if STRATEGIES.get(recipe.pairing.strategy).unpaired else "PAIRS"

    def config(self, ctx: StageContext):
        return ctx.recipe.pairing

    def key_parts(self, ctx: StageContext, upstream: str | None) -> tuple:
        return ctx.recipe.pairing, upstream

    def run(self, ctx: StageContext, source: Path, out: Path) -> bool:
        from prefopt.pairing.build import build_pairs
        from prefopt.pairing.proxy import load_implicit_margins
        from prefopt.pairing.report import REPORT_DIR, write_pairs_report
        from prefopt.schemas import JUDGMENTS, load_stage_dataset, save_stage_dataset

        implicit = load_implicit_margins(self.proxy) if self.proxy is not None else None
        result = build_pairs(ctx.recipe.pairing, load_stage_dataset(source, JUDGMENTS, "judgments"), implicit)
        save_stage_dataset(result.dataset, out)
        (out / "stats.json").write_text(json.dumps(result.stats, indent=2))
        write_pairs_report(out / REPORT_DIR, result.kept, result.stats, result.built, result.scored)
        return True
