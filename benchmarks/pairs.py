"""Pair construction at scale: every strategy on 1,000,000 scored candidates (100,000 prompts x 10).

    python benchmarks/pairs.py                        # the full size (goal: < 30 s and < 4 GiB per strategy)
    python benchmarks/pairs.py --prompts 10000        # a quick look

The candidates are a judgments dataset as the judge stage writes it (5 rubric dimensions scored 1-5, texts of
60-300 characters, two generators of 5 samples each), saved once and memory-mapped like a real stage input.
Each strategy then runs in a fresh process, as `prefopt pairs` does: load the judgments, build and select the
pairs, convert them to the output dataset; its wall time and the process's peak RSS are printed. margin_bayes
is timed on precomputed implicit margins (scoring them is model inference, not pair construction).

The reference column is the same rule written the usual hand-rolled way (a pandas ``groupby().apply`` with a
Python function per prompt), on the same data in the same kind of fresh process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from common import peak_rss_bytes

DIMENSIONS = ("factuality", "strategy_coherence", "step_coherence", "numerical_precision", "signal_to_noise")


def write_judgments(prompts: int, per_generator: int, directory: Path) -> None:
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    rng = np.random.default_rng(0)
    n = prompts * 2 * per_generator
    prompt = np.repeat(np.arange(prompts), 2 * per_generator)
    generator = np.tile(np.repeat(np.array(["strong", "weak"]), per_generator), prompts)
    sample = np.tile(np.arange(per_generator), 2 * prompts)
    strength = np.where(generator == "strong", 0.8, -0.8)
    scores = {d: np.clip(np.rint(3 + strength + rng.normal(0, 1.2, n)), 1, 5) for d in DIMENSIONS}
    aggregate = np.mean(list(scores.values()), axis=0)
    aggregate[rng.random(n) < 0.002] = np.nan  # a few judge failures
    text = "".join(chr(97 + i % 26) for i in range(400))
    lengths = rng.integers(60, 300, n)
    starts = rng.integers(0, 100, n)
    prompt_ids = pa.array([f"p{p:06d}" for p in prompt])
    table = pa.table(
        {
            "candidate_id": pa.array([f"p{p:06d}/{g}/{s}" for p, g, s in zip(prompt, generator, sample)]),
            "prompt_id": prompt_ids,
            "prompt": pa.array([f"Question {p}: what is {p} * 7?" for p in prompt]),
            "reference": pa.nulls(n, pa.string()),
            "generator": pa.array(generator),
            "model": pa.array(generator),
            "sample_index": pa.array(sample),
            "completion": pa.array([text[a : a + b] for a, b in zip(starts, lengths)]),
            "finish_reason": pa.array(["stop"] * n),
            "judge": pa.array(["llm"] * n),
            "scores": pa.StructArray.from_arrays([pa.array(scores[d]) for d in DIMENSIONS], names=list(DIMENSIONS)),
            "aggregate": pa.array(aggregate, from_pandas=True),
            "raw_judgment": pa.array([""] * n),
            "parse_status": pa.array(["ok"] * n),
        }
    )
    Dataset(table).save_to_disk(str(directory))


def configs() -> dict:
    from prefopt.pairing.config import (
        DeltaFilterConfig,
        KTOLabelConfig,
        MarginBayesConfig,
        PairingConfig,
        ProxyConfig,
        RewardAugmentConfig,
    )

    top30 = DeltaFilterConfig(dimension="step_coherence", top_fraction=0.3)
    return {
        "generator_delta": PairingConfig(),
        "generator_delta + sample_delta top 30%": PairingConfig(filter=top30),
        "max_min": PairingConfig(strategy="max_min"),
        "max_random": PairingConfig(strategy="max_random"),
        "sweet_spot (max, mu-2sigma)": PairingConfig(strategy="sweet_spot"),
        "max_random + margin_bayes top 10%": PairingConfig(
            strategy="max_random", margin_bayes=MarginBayesConfig(proxy=ProxyConfig(model="proxy"))
        ),
        "max_random + reward_augmented": PairingConfig(
            strategy="max_random", reward_augmented=RewardAugmentConfig(score_range=[1, 5])
        ),
        "kto_unpaired": PairingConfig(strategy="kto_unpaired", kto=KTOLabelConfig(desirable_min=3.0)),
    }


def reference_rule(name: str):
    """The rule as a hand-rolled script would write it: a Python function applied per prompt group."""
    import numpy as np

    def max_min(group):
        best, worst = group["aggregate"].idxmax(), group["aggregate"].idxmin()
        return (group.at[best, "candidate_id"], group.at[worst, "candidate_id"])

    def sweet_spot(group):
        scores = group["aggregate"]
        best = scores.idxmax()
        target = scores.mean() - 2 * scores.std(ddof=0)
        worst = (scores.drop(best) - target).abs().idxmin()
        return (group.at[best, "candidate_id"], group.at[worst, "candidate_id"])

    def max_random(group):
        best = group["aggregate"].idxmax()
        return (group.at[best, "candidate_id"], np.random.default_rng(0).choice(group["candidate_id"].drop(best)))

    rules = {"max_min": max_min, "sweet_spot (max, mu-2sigma)": sweet_spot, "max_random": max_random}
    return rules.get(name)


def run_one(name: str, data_dir: str, implicit: bool, reference: bool, queue) -> None:
    """One strategy in this fresh process: load, build, convert; report seconds, pairs and peak RSS."""
    import logging

    import numpy as np
    import pandas as pd
    from datasets import disable_progress_bars, load_from_disk

    from prefopt.pairing.build import base_pairs, build_pairs

    logging.disable(logging.WARNING)
    disable_progress_bars()
    cfg = configs()[name]
    margins = None
    if implicit:  # precomputed, outside the timing: the proxy's forward passes are not pair construction
        pairs = base_pairs(cfg, load_from_disk(data_dir))
        margins = pd.Series(np.random.default_rng(1).normal(0, 2, len(pairs)), index=pairs["pair_id"].to_numpy())
        del pairs
    start = time.perf_counter()
    judgments = load_from_disk(data_dir)
    if reference:
        judged = judgments.flatten().to_pandas()
        judged = judged[judged["aggregate"].notna()]
        judged = judged[judged.groupby("prompt_id")["prompt_id"].transform("size") >= 2]
        picked = judged.groupby("prompt_id", sort=False).apply(reference_rule(name), include_groups=False)
        count = len(picked)
    else:
        count = len(build_pairs(cfg, judgments, margins).dataset)
    seconds = time.perf_counter() - start
    queue.put((seconds, count, peak_rss_bytes() / 2**30))


def measure(name: str, data_dir: str, reference: bool = False) -> tuple[float, int, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_one, args=(name, data_dir, "margin_bayes" in name, reference, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--per-generator", type=int, default=5, help="samples per generator (two generators)")
    parser.add_argument("--no-reference", action="store_true", help="skip the groupby().apply reference")
    parser.add_argument("--only", nargs="+", help="strategies to run (names as printed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "judgments"
        start = time.perf_counter()
        write_judgments(args.prompts, args.per_generator, data)
        candidates = args.prompts * 2 * args.per_generator
        print(
            f"{candidates:,} judged candidates ({args.prompts:,} prompts x {2 * args.per_generator}) written in "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )
        rows = []
        for name in args.only or configs():
            seconds, count, peak = measure(name, str(data))
            reference = None
            if not args.no_reference and reference_rule(name) is not None:
                reference = measure(name, str(data), reference=True)
            rows.append((name, count, seconds, peak, reference))
            print(
                f"{name}: {count:,} rows in {seconds:.1f}s, peak RSS {peak:.2f} GiB"
                + (f" (groupby-apply: {reference[0]:.1f}s)" if reference else ""),
                flush=True,
            )

    print(
        f"\n{candidates:,} candidates; {multiprocessing.cpu_count()} CPU cores. Time: load judgments, build, select, "
        "convert to the output dataset; peak RSS of that process.\n"
    )
    print(
        "| strategy | output rows | time (s) | peak RSS (GiB) | under 30 s and 4 GiB | groupby-apply reference (s) "
        "| speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, count, seconds, peak, reference in rows:
        ok = "yes" if seconds < 30 and peak < 4 else "no"
        ref = f"{reference[0]:.1f}" if reference else "-"
        speedup = f"{reference[0] / seconds:.0f}x" if reference else "-"
        print(f"| {name} | {count:,} | {seconds:.1f} | {peak:.2f} | {ok} | {ref} | {speedup} |")


if __name__ == "__main__":
    main()
