"""The tiny world's step verifier: scores a trace on rubric dimensions, like an LLM judge would.

Dimensions (each in [0, 1]):
- ``correctness``: the final answer equals the true result.
- ``step_accuracy``: fraction of the true steps that the trace states correctly, in order; a trace with
  more steps than the problem has is divided by its own step count, so padding is penalised.
- ``format``: 1 if the trace has the exact shape ``a op b=c;...;x op y=z. =z``, 0.5 if only the final
  ``. =<n>`` is there, else 0.
"""

from __future__ import annotations

import json
import re

from prefopt.judging.base import Judgment
from prefopt.world.tasks import solve

_STEP = r"-?\d+[+\-*]\d+=-?\d+"
_FULL_RE = re.compile(rf"^{_STEP}(?:;{_STEP})*\. =-?\d+$")
_FINAL_RE = re.compile(r"\. =(-?\d+)\s*$")
_STEP_RE = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")


def final_answer(completion: str) -> str | None:
    """The trace's final answer (the ``n`` of its closing ``. =n``), or None where it states none."""
    final = _FINAL_RE.search(completion.strip())
    return final.group(1) if final else None


def score_trace(problem: str, completion: str, reference: str | None = None) -> Judgment:
    """Score one completion of ``problem`` (the truth is recomputed, so ``reference`` is not needed); a problem
    that is not chained arithmetic is a failure."""
    try:
        truth = solve(problem)
    except ValueError as err:
        return Judgment(None, "", f"unjudgeable_prompt: {err}")
    text = completion.strip()
    final = _FINAL_RE.search(text)
    correctness = float(final is not None and int(final.group(1)) == truth[-1].result)
    body = text[: final.start()] if final else text
    stated = [s.strip() for s in body.split(";") if s.strip()]
    correct_steps = 0
    for step, want in zip(stated, truth):
        match = _STEP_RE.match(step)
        if match and (int(match[1]), match[2], int(match[3]), int(match[4])) == (
            want.left,
            want.op,
            want.right,
            want.result,
        ):
            correct_steps += 1
    step_accuracy = correct_steps / max(len(truth), len(stated))
    fmt = 1.0 if _FULL_RE.match(text) else (0.5 if final else 0.0)
    scores = {"correctness": correctness, "step_accuracy": step_accuracy, "format": fmt}
    return Judgment(scores, json.dumps(scores), "ok")
