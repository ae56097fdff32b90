"""Accuracy of a model on evaluation sets (tasks' own sets and benchmarks): greedy, and with
``evaluation.samples > 1`` sampled answers scored by pass@1, unbiased pass@k and maj@k.

A task's own sets (:mod:`prefopt.tasks`; the tiny world's ``in_domain`` and ``out_of_domain`` problems, from their
own seed ``evaluation.seed``, apart from the generation prompts) are scored as the task scores them (the tiny world:
the step verifier's correctness). A benchmark (GSM8K,
MATH-500 or alike; a local file or a Hub dataset) is scored by the math verifier (math-verify) against its answer
column; a reference it cannot read is an error naming the row. Output: per-problem predictions
(``prefopt.schemas.EVAL_PREDICTIONS``, with :data:`SAMPLED_COLUMNS` when sampling) and
``{set: {accuracy, n, domain}}`` (with ``samples``, ``pass@1``, ``pass@<k>`` and ``maj@<k>`` when sampling).

maj@k votes on each sample's extracted answer: as the task extracts it (the tiny world: the final ``. =<n>``);
math-verify's parse of a benchmark answer, as a string (answers equal only up to math-verify's equivalence vote
apart).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from prefopt.engines.base import GenerationEngine, SamplingParams
from prefopt.engines.registry import make_engine
from prefopt.evaluation.config import BenchmarkFile, EvaluationConfig
from prefopt.evaluation.metrics import maj_at_k, pass_at_1, pass_at_k
from prefopt.judging.math_verifier import VerifierFailure, parse_reference, score_math
from prefopt.schemas import DataError
from prefopt.tasks.registry import EvalSet, task
from prefopt.user_data import load_user_dataset

logger = logging.getLogger(__name__)

DOMAINS = ("in_domain", "out_of_domain")
# Columns of the predictions besides prefopt.schemas.EVAL_PREDICTIONS when evaluation.samples > 1.
SAMPLED_COLUMNS = {
    "samples": "the sampled completions (evaluation.samples of them)",
    "sample_correct": "each sampled completion's correctness",
    "sample_answers": "each sampled completion's extracted answer (maj@k's vote; null: none found)",
}


def _math_judge(problem: str, completion: str, answer: str) -> tuple[bool, str | None]:
    """The math verifier's correctness and parsed answer; a completion it could not judge (a time limit) is wrong,
    and logged."""
    judgment = score_math(problem, completion, answer)
    if judgment.scores is None:
        logger.warning(
            "math verifier could not judge a completion of %r, counted as wrong: %s", problem[:80], judgment.status
        )
        return False, None
    return bool(judgment.scores["correctness"]), json.loads(judgment.raw)["answer"]


def benchmark_set(bench: BenchmarkFile) -> EvalSet:
    """A benchmark (a local file or a Hub dataset, read as generation.prompts is); every row must have a non-empty
    problem and answer."""
    ds = load_user_dataset(bench.dataset_spec(), (bench.prompt_field, bench.answer_field))
    for column in (bench.prompt_field, bench.answer_field):
        if column not in ds.column_names:
            raise DataError(
                f"{bench.path}: missing column {column!r} (evaluation.benchmarks[{bench.name}]); it has "
                f"{ds.column_names}"
            )
    if bench.limit is not None:
        ds = ds.select(range(min(bench.limit, len(ds))))
    problems, answers = ds[bench.prompt_field], ds[bench.answer_field]
    for i, (problem, answer) in enumerate(zip(problems, answers)):
        text = isinstance(answer, (str, int, float)) and not isinstance(answer, bool)  # never str() of an object
        if not isinstance(problem, str) or not problem.strip() or not text or not str(answer).strip():
            raise DataError(
                f"{bench.path}: row {i}: needs a non-empty {bench.prompt_field!r} and {bench.answer_field!r}"
                f", got {problem!r} and {answer!r}"
            )
        try:
            readable = bool(parse_reference(str(answer)))
        except VerifierFailure as err:
            raise DataError(f"{bench.path}: row {i}: {bench.answer_field!r} {answer!r}: {err}") from None
        if not readable:
            raise DataError(
                f"{bench.path}: row {i}: math-verify reads no answer in {bench.answer_field!r} {answer!r}"
                " (expected a number, LaTeX, or a solution ending '#### <answer>' or with \\boxed{})"
            )
    prompts = [bench.prompt_template.replace("{prompt}", p) for p in problems]
    return EvalSet(bench.name, bench.domain, prompts, problems, [str(a) for a in answers], _math_judge)


def eval_sets(tasks: Mapping[str, Any], cfg: EvaluationConfig) -> list[EvalSet]:
    """The own sets of ``tasks`` (task name -> its settings), then ``cfg``'s benchmarks; set names must be unique."""
    sets = [s for name, settings in tasks.items() for s in task(name).eval_sets(settings, cfg)]
    sets += [benchmark_set(b) for b in cfg.benchmarks]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation set names must be unique, got {names}")
    return sets


def evaluate_model(
    model_path: str,
    tasks: Mapping[str, Any],
    cfg: EvaluationConfig,
    engine: GenerationEngine | None = None,
    system: str | None = None,
) -> tuple[Dataset, dict[str, dict]]:
    """Greedy-decode every problem of the own sets of ``tasks`` (task name -> its settings; the pipeline gives those
    of ``cfg.tasks``) and of ``cfg``'s benchmarks (and with ``cfg.samples > 1`` sample that many answers too); return
    predictions and ``{set: {accuracy, n, domain}}`` (see :func:`summarize`).

    ``engine`` (already serving ``model_path``) is used as it is; otherwise one is made and closed again.
    ``system`` is the system message (default: ``cfg.system_prompt``). Sampled batches are seeded by
    ``cfg.seed`` and their position, so a rerun with the same engine draws the same samples.
    """
    system = cfg.system_prompt if system is None else system
    sets = eval_sets(tasks, cfg)  # read (and checked) before any model is loaded
    own = engine is None
    engine = make_engine(cfg.engine, model_path, **cfg.engine_options) if own else engine
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    rows = []
    batch = 0
    try:
        for s in sets:
            for start in tqdm(range(0, len(s.prompts), cfg.batch_size), desc=f"eval {s.name}", unit="batch"):
                prompts = s.prompts[start : start + cfg.batch_size]
                outputs = engine.generate(prompts, params, system)
                sampled = (
                    engine.generate(
                        prompts,
                        SamplingParams(
                            n=cfg.samples,
                            temperature=cfg.temperature,
                            top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens,
                            seed=cfg.seed + 1_000_003 * batch,
                        ),
                        system,
                    )
                    if cfg.samples > 1
                    else [None] * len(prompts)
                )
                batch += 1
                for problem, answer, out, samples in zip(s.problems[start:], s.answers[start:], outputs, sampled):
                    row = {
                        "set": s.name,
                        "domain": s.domain,
                        "problem": problem,
                        "answer": answer,
                        "completion": out[0].text,
                        "correct": s.judge(problem, out[0].text, answer)[0],
                    }
                    if samples is not None:
                        judged = [s.judge(problem, c.text, answer) for c in samples]
                        row["samples"] = [c.text for c in samples]
                        row["sample_correct"] = [c for c, _ in judged]
                        row["sample_answers"] = [a for _, a in judged]
                    rows.append(row)
    finally:
        if own:
            engine.close()
    summary = summarize(rows, sets, cfg)
    logger.info("%s: %s", model_path, ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in summary.items()))
    return Dataset.from_list(rows), summary


def summarize(rows: list[dict], sets: list[EvalSet], cfg: EvaluationConfig) -> dict[str, dict]:
    """``{set: {accuracy, n, domain}}``: greedy accuracy; with samples, also ``samples``, ``pass@1`` (the mean over
    samples), and ``pass@<k>`` (unbiased) and ``maj@<k>`` for each of ``cfg.ks``."""
    summary = {}
    for s in sets:
        mine = [r for r in rows if r["set"] == s.name]
        correct = [r["correct"] for r in mine]
        summary[s.name] = {"accuracy": sum(correct) / len(correct), "n": len(correct), "domain": s.domain}
        if cfg.samples > 1:
            hits = [r["sample_correct"] for r in mine]
            counts = [sum(h) for h in hits]
            entry = {"samples": cfg.samples, "pass@1": float(pass_at_1(hits).mean())}
            for k in cfg.ks:
                entry[f"pass@{k}"] = float(pass_at_k([cfg.samples] * len(hits), counts, k).mean())
                entry[f"maj@{k}"] = float(maj_at_k([r["sample_answers"] for r in mine], hits, k).mean())
            summary[s.name].update(entry)
    return summary


def domain_means(summary: dict[str, dict]) -> dict[str, float | None]:
    """The mean accuracy of the sets of each domain (None for a domain without sets)."""
    out = {}
    for domain in DOMAINS:
        values = [v["accuracy"] for name, v in summary.items() if v.get("domain", name) == domain]
        out[domain] = sum(values) / len(values) if values else None
    return out
