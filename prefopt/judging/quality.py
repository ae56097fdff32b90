"""Judge quality figures, written with every judging run (``quality.json``, ``quality.md``).

- parse failures: the share of candidates left without scores, and why (by kind); per dimension, how many
  failed and how (missing, not a number, not finite, out of range, ambiguous); retries used;
- self-consistency (``samples`` > 1): per dimension, how often every sample agreed, and the mean spread;
- generator ranking: for each pair of generators (in pool order), how often the judge scores the first's
  trace above, equal to, or below the second's, sample i against sample i of the same prompt;
- pairwise (an audit was asked for): how often the verdict flips when the two responses swap places
  (position bias), how often the first-shown response wins, and the first generator's consistent win rate;
- agreement with a reference verifier (``judging.reference_judge``): rank correlation of the aggregates,
  and how often judge and verifier order a generator pair's traces the same way.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from prefopt.judging.parsing import DIMENSION_FAILURES, dimension_failures
from prefopt.tables import mean, pct


def _spearman(a: pd.Series, b: pd.Series) -> float | None:
    """Rank correlation (Pearson on average ranks); None when either side is constant or too short."""
    both = pd.concat([a, b], axis=1).dropna()
    if len(both) < 3 or both.iloc[:, 0].nunique() < 2 or both.iloc[:, 1].nunique() < 2:
        return None
    ranks = both.rank()
    return float(np.corrcoef(ranks.iloc[:, 0], ranks.iloc[:, 1])[0, 1])


def generator_ranking(judged: pd.DataFrame, column: str = "aggregate") -> list[dict]:
    """Per generator pair (pool order): how often the first's trace scores above / equal / below the second's."""
    generators = list(dict.fromkeys(judged["generator"]))
    table = judged.pivot_table(index=["prompt_id", "sample_index"], columns="generator", values=column, aggfunc="first")
    rows = []
    for a, b in combinations(generators, 2):
        if a not in table or b not in table:
            continue
        both = table[[a, b]].dropna()
        rows.append(
            {
                "first": a,
                "second": b,
                "pairs": len(both),
                "first_higher": mean(both[a] > both[b]),
                "equal": mean(both[a] == both[b]),
                "second_higher": mean(both[a] < both[b]),
            }
        )
    return rows


def self_consistency(sample_scores: pd.Series, dimensions: tuple[str, ...]) -> dict:
    """Per dimension over candidates with two or more valid samples: all samples equal, and the mean std."""
    samples = sample_scores.explode().dropna()
    if samples.empty:
        return {}
    frame = pd.DataFrame(samples.tolist(), index=samples.index)
    grouped = frame.groupby(level=0)
    counts = grouped.size()
    several = counts[counts >= 2].index
    out = {}
    for d in dimensions:
        spread = grouped[d].agg(lambda v: float(np.std(v))).loc[several]
        out[d] = {"exact_agreement": mean(spread == 0), "mean_std": mean(spread)}
    out["overall"] = {
        key: None if not several.size else float(np.mean([out[d][key] for d in dimensions]))
        for key in ("exact_agreement", "mean_std")
    }
    return out


def failures_by_dimension(statuses: pd.Series, dimensions: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per dimension, how many failed statuses name it, by failure kind (dimensions without failures left out)."""
    counts = {d: dict.fromkeys(DIMENSION_FAILURES, 0) for d in dimensions}
    for status in statuses:
        for d, kind in dimension_failures(status, dimensions).items():
            counts[d][kind] += 1
    return {d: {k: n for k, n in c.items() if n} for d, c in counts.items() if any(c.values())}


def judge_quality(judged: pd.DataFrame, dimensions: tuple[str, ...], samples: int = 1) -> dict:
    ok = judged["parse_status"] == "ok"
    attempts = judged["attempts"] if "attempts" in judged else pd.Series(1, index=judged.index)
    quality = {
        "candidates": len(judged),
        "judged": int(ok.sum()),
        "parse_failure_rate": mean(~ok),
        "failure_reasons": judged.loc[~ok, "parse_status"].str.split(":").str[0].value_counts().to_dict(),
        "dimension_failures": failures_by_dimension(judged.loc[~ok, "parse_status"], dimensions),
        "mean_attempts": None if judged.empty else float(attempts.mean()),
        "retried_rate": mean(attempts > 1),
        "generator_ranking": generator_ranking(judged),
    }
    if samples > 1 and "sample_scores" in judged:
        quality["self_consistency"] = self_consistency(judged["sample_scores"], dimensions)
    return quality


def pairwise_quality(verdicts: pd.DataFrame, first_generator: str) -> dict:
    """``verdicts``: one row per pair, ``first_shown_first`` / ``first_shown_second`` in {first, second, None}."""
    valid = verdicts.dropna(subset=["first_shown_first", "first_shown_second"])
    consistent = valid[valid["first_shown_first"] == valid["first_shown_second"]]
    shown_first_wins = pd.concat([valid["first_shown_first"] == "first", valid["first_shown_second"] == "second"])
    return {
        "pairs": len(verdicts),
        "both_orders_answered": len(valid),
        "position_bias_rate": mean(valid["first_shown_first"] != valid["first_shown_second"]),
        "shown_first_win_rate": mean(shown_first_wins),
        f"{first_generator}_consistent_win_rate": mean(consistent["first_shown_first"] == "first"),
    }


def reference_agreement(judged: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """The judge against a verifier's judgments of the same candidates (same row order)."""
    out = {"aggregate_spearman": _spearman(judged["aggregate"], reference["aggregate"])}
    for column in [c for c in judged.columns if c.startswith("scores.") and c in reference.columns]:
        out[f"{column[len('scores.') :]}_spearman"] = _spearman(judged[column], reference[column])
    agree, n = 0, 0
    pairs = judged[["prompt_id", "sample_index", "generator"]].assign(
        judge=judged["aggregate"], truth=reference["aggregate"].to_numpy()
    )
    for a, b in combinations(list(dict.fromkeys(judged["generator"])), 2):
        m = pairs[pairs["generator"] == a].merge(pairs[pairs["generator"] == b], on=["prompt_id", "sample_index"])
        m = m[(m["truth_x"] != m["truth_y"]) & m[["judge_x", "judge_y", "truth_x", "truth_y"]].notna().all(axis=1)]
        agree += int((np.sign(m["judge_x"] - m["judge_y"]) == np.sign(m["truth_x"] - m["truth_y"])).sum())
        n += len(m)
    out["pair_order_agreement"] = agree / n if n else None
    out["pairs_compared"] = n
    return out


def quality_markdown(quality: dict) -> str:
    q = quality
    attempts = "n/a" if q["mean_attempts"] is None else f"{q['mean_attempts']:.2f}"
    lines = [
        "## Judge quality",
        "",
        f"Judge: `{q['judge']}`",
        "",
        "| candidates | judged | parse failures | retried | mean attempts |",
        "| --- | --- | --- | --- | --- |",
        f"| {q['candidates']} | {q['judged']} | {pct(q['parse_failure_rate'])} | {pct(q['retried_rate'])} | "
        f"{attempts} |",
    ]
    if q["failure_reasons"]:
        lines += ["", "Failure reasons: " + ", ".join(f"{k} ({v})" for k, v in q["failure_reasons"].items())]
    if q.get("dimension_failures"):
        kinds = [k for k in DIMENSION_FAILURES if any(k in c for c in q["dimension_failures"].values())]
        lines += ["", f"| dimension | failed | {' | '.join(kinds)} |", "| --- " * (len(kinds) + 2) + "|"]
        lines += [
            f"| {d} | {sum(c.values())} | {' | '.join(str(c.get(k, 0)) for k in kinds)} |"
            for d, c in q["dimension_failures"].items()
        ]
    if q["generator_ranking"]:
        lines += [
            "",
            "| first | second | pairs | first scored higher | equal | second scored higher |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['first']} | {r['second']} | {r['pairs']} | {pct(r['first_higher'])} | {pct(r['equal'])} | "
            f"{pct(r['second_higher'])} |"
            for r in q["generator_ranking"]
        ]
    if q.get("self_consistency"):
        lines += ["", "| dimension | all samples agree | mean std |", "| --- | --- | --- |"]
        lines += [
            f"| {d} | {pct(v['exact_agreement'])} | "
            f"{'n/a' if v['mean_std'] is None else format(v['mean_std'], '.3f')} |"
            for d, v in q["self_consistency"].items()
        ]
    if q.get("pairwise"):
        p = q["pairwise"]
        lines += [
            "",
            "| pairs | both orders answered | position bias (verdict flips with order) | first shown wins |",
            "| --- | --- | --- | --- |",
            f"| {p['pairs']} | {p['both_orders_answered']} | {pct(p['position_bias_rate'])} | "
            f"{pct(p['shown_first_win_rate'])} |",
        ]
    if q.get("reference_agreement"):
        r = q["reference_agreement"]
        rho = r["aggregate_spearman"]
        lines += [
            "",
            f"Against the reference verifier: aggregate Spearman {'n/a' if rho is None else f'{rho:.3f}'}, "
            f"same order on {pct(r['pair_order_agreement'])} of {r['pairs_compared']} generator pairs.",
        ]
    return "\n".join(lines) + "\n"
