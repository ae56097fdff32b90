"""LLM-as-a-judge on any generation engine (vLLM offline, an OpenAI-compatible server, transformers).

Pointwise: the rubric's prompt asks for every dimension's score of one response; ``samples`` answers per
candidate are averaged (their spread is the self-consistency). Pairwise: the rubric's pairwise prompt asks
which of two responses is better. Where the engine can, decoding is constrained (the rubric's JSON schema;
the choices A/B); otherwise the free text is parsed tolerantly (:mod:`prefopt.judging.parsing`).

An answer that cannot be parsed is asked again, up to ``max_retries`` times (greedy judges retry at
``retry_temperature``, since a greedy retry repeats itself). A candidate still without an answer keeps
null scores, every raw answer, and the reason: it never becomes a zero or a dropped row.

Reasoning judges: ``reasoning_effort`` and ``chat_template_kwargs`` reach the server's request or the local chat
template; ``reasoning_budget`` tokens are allowed on top of ``max_new_tokens``; the thoughts are removed before
parsing (``reasoning``, :func:`prefopt.judging.parsing.final_answer`), and an answer that is all thoughts (cut off
while reasoning, or a server's empty content beside its reasoning_content) is a failure, ``reasoning_unterminated``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from prefopt.engines.base import GenerationEngine, SamplingParams
from prefopt.engines.registry import make_engine
from prefopt.judging.base import JudgeItem, Judgment
from prefopt.judging.config import JudgingConfig, LLMJudgeConfig
from prefopt.judging.parsing import final_answer, parse_choice, parse_scores
from prefopt.judging.rubrics import Rubric, load_rubric

if TYPE_CHECKING:
    from prefopt.judging.registry import ModelPath

logger = logging.getLogger(__name__)

JUDGE = {
    "name": "llm",
    "is_model": True,
    "config_section": "llm",
    "supports_pairwise": True,
    "help": "An LLM judge on a rubric (judging.llm).",
}


@dataclass(frozen=True)
class Asked:
    """What asking one prompt until it parsed gave."""

    values: list  # parsed answers (up to the number wanted)
    raws: list[str]  # every answer, failed ones included
    attempts: int  # engine calls it took
    status: str  # "ok", or the last failure's reason


@dataclass(frozen=True)
class PairwiseVerdict:
    """Which response the judge preferred with the first shown as A, and with it shown as B."""

    first_shown_first: str | None  # "first" / "second" / None (no usable answer)
    first_shown_second: str | None
    raws: list[str]
    status: str


class LLMJudge:
    """Scores candidates on a rubric with a language model behind a generation engine; closing the judge closes
    the engine only if the judge owns it."""

    def __init__(
        self,
        cfg: LLMJudgeConfig,
        engine: GenerationEngine,
        rubric: Rubric | None = None,
        name: str | None = None,
        owns_engine: bool = False,
    ):
        self.cfg, self.engine, self.owns_engine = cfg, engine, owns_engine
        self.rubric = rubric or load_rubric(cfg.rubric)
        self.name = name or f"llm({cfg.model}, {self.rubric.name})"
        self.dimensions = self.rubric.names
        self.batch_size = cfg.batch_size
        if cfg.structured_output and (cfg.reasoning_budget or cfg.reasoning_effort not in (None, "none")):
            logger.warning(
                "judging.llm: a reasoning judge with structured_output: the schema constrains decoding from the first "
                "token, leaving no room to think, unless the engine constrains only the answer (a server run with "
                "--reasoning-parser, or vLLM's structured_outputs_config.reasoning_parser); else set "
                "structured_output: false"
            )

    def _params(self, n: int, attempt: int, seed: int, **constraint) -> SamplingParams:
        c = self.cfg
        temperature = c.temperature if attempt == 0 or c.temperature > 0 else c.retry_temperature
        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens + c.reasoning_budget,
            seed=c.seed + seed,
            reasoning_effort=c.reasoning_effort,
            chat_template_kwargs=c.chat_template_kwargs or None,
            **constraint,
        )

    def ask(
        self,
        prompts: list[str],
        parse: Callable[[str], tuple[object | None, str]],
        want: int,
        constraint: dict,
        desc: str,
    ) -> list[Asked]:
        """Ask every prompt until ``want`` answers parse (or the retries run out); ``parse`` reads each final
        answer, its reasoning removed (:func:`prefopt.judging.parsing.final_answer`)."""
        values: list[list] = [[] for _ in prompts]
        raws: list[list[str]] = [[] for _ in prompts]
        attempts, status = [0] * len(prompts), ["ok"] * len(prompts)
        for attempt in range(self.cfg.max_retries + 1):
            todo = [i for i in range(len(prompts)) if len(values[i]) < want]
            if not todo:
                break
            if attempt:
                logger.info(
                    "%s: asking %d of %d again (retry %d of %d)",
                    desc,
                    len(todo),
                    len(prompts),
                    attempt,
                    self.cfg.max_retries,
                )
            for need in sorted({want - len(values[i]) for i in todo}):
                group = [i for i in todo if want - len(values[i]) == need]
                for start in tqdm(
                    range(0, len(group), self.batch_size),
                    desc=desc,
                    unit="batch",
                    disable=len(group) <= self.batch_size,
                ):
                    batch = group[start : start + self.batch_size]
                    params = self._params(need, attempt, 1_000_003 * attempt + batch[0], **constraint)
                    for i, outs in zip(batch, self.engine.generate([prompts[i] for i in batch], params)):
                        attempts[i] += 1
                        for out in outs:
                            raws[i].append(out.text)
                            answer, why = final_answer(out.text, self.cfg.reasoning, out.reasoning)
                            value, reason = (None, why) if answer is None else parse(answer)
                            if value is not None:
                                values[i].append(value)
                            else:
                                cut = " (cut off at max_new_tokens)" if out.finish_reason == "length" else ""
                                status[i] = reason + cut
        return [
            Asked(v[:want], r, a, "ok" if len(v) >= want else s) for v, r, a, s in zip(values, raws, attempts, status)
        ]

    def score(self, items: list[JudgeItem]) -> list[Judgment]:
        prompts = [self.rubric.pointwise_prompt(i.context, i.completion, i.reference) for i in items]
        constraint = {"json_schema": self.rubric.json_schema()} if self.cfg.structured_output else {}

        def parse(text: str):
            parsed = parse_scores(text, self.rubric, "none")  # the reasoning is already removed
            return parsed.scores, parsed.status

        judgments = []
        for asked in self.ask(prompts, parse, self.cfg.samples, constraint, "judge"):
            scores = None
            if asked.status == "ok":
                scores = {d: sum(s[d] for s in asked.values) / len(asked.values) for d in self.dimensions}
            judgments.append(
                Judgment(
                    scores,
                    json.dumps(asked.raws),
                    asked.status if scores else f"parse_failed: {asked.status}",
                    asked.attempts,
                    list(asked.values),
                )
            )
        return judgments

    def compare(self, pairs: list[tuple[JudgeItem, JudgeItem]]) -> list[PairwiseVerdict]:
        """Each pair asked in both orders (first as A, then first as B)."""
        prompts = [
            self.rubric.pairwise_prompt(a.context, x.completion, y.completion, a.reference)
            for a, b in pairs
            for x, y in ((a, b), (b, a))
        ]
        constraint = {"choices": ("A", "B")} if self.cfg.structured_output else {}

        def parse(text: str):
            choice = parse_choice(text, "none")  # the reasoning is already removed
            return choice, "ok" if choice else "no_choice: names neither A nor B"

        asked = self.ask(prompts, parse, 1, constraint, "pairwise judge")
        verdicts = []
        for k in range(len(pairs)):
            ab, ba = asked[2 * k], asked[2 * k + 1]
            first = {"A": "first", "B": "second"}.get(ab.values[0]) if ab.values else None
            second = {"A": "second", "B": "first"}.get(ba.values[0]) if ba.values else None
            status = "ok" if first and second else f"parse_failed: {ab.status if not first else ba.status}"
            verdicts.append(PairwiseVerdict(first, second, ab.raws + ba.raws, status))
        return verdicts

    def close(self) -> None:
        if self.owns_engine:
            self.engine.close()


def make(cfg: JudgingConfig, model_path: ModelPath) -> LLMJudge:
    engine = make_engine(cfg.llm.engine, model_path(cfg.llm.model), **cfg.llm.engine_options)
    return LLMJudge(cfg.llm, engine, owns_engine=True)
