"""Math final-answer verification with Hugging Face's math-verify: is the completion's final answer the reference?

The completion is parsed by ``math_verify.parse`` with LaTeX extraction (``\\boxed{}`` first, then "final
answer is ...", "answer: ...", then any ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``) and plain-expression extraction
(numbers with thousands separators, ``1/2``, percentages, currency signs), the rightmost match of the most
specific kind winning; before that, a Unicode minus becomes ``-`` and a currency sign after a minus is dropped
(``-$20``). The reference is read the same way after these steps: a GSM8K solution keeps what follows its last
``####``; a solution with ``\\boxed{}`` or ``$`` is parsed as written; a bare answer (``72``, ``\\frac{3}{4}``,
``[2,5)``) as if it were boxed. ``math_verify.verify`` compares the two (numerically to 6 decimals,
symbolically, as sets, intervals, equations, matrices; a relation such as ``x \\geq 0`` may equal an interval).

Dimensions: ``correctness`` (1 or 0) and ``answer_found`` (1 if math-verify read an answer in the completion).
A candidate without a reference, with a reference math-verify cannot read, or whose parse or comparison runs
past its time limit (or fails) is a recorded failure (no scores, the reason in its status), never a zero.

math-verify's time limits use ``signal.alarm``, which works only in a process's main thread: :func:`score_math`
refuses to run in any other thread (a worker process's main thread is fine).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from functools import lru_cache

import math_verify
from math_verify.errors import TimeoutException

from prefopt.judging.base import Judgment

PARSE_TIMEOUT_S = 5  # per parse of a completion or a reference
COMPARE_TIMEOUT_S = 5  # per comparison of two parsed answers
EXTRACTION = (math_verify.LatexExtractionConfig(boxed_match_priority=0), math_verify.ExprExtractionConfig())

_MINUS_CURRENCY = re.compile(r"(?<!\\)-\s?\$(?=\d)")
_DOLLAR = re.compile(r"(?<!\\)\$")


class VerifierFailure(Exception):
    """math-verify ran past its time limit (kind ``timeout``) or failed (kind ``verifier_error``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def prenormalize(text: str) -> str:
    """What math-verify misreads, rewritten: the Unicode minus, a currency sign after a minus (``-$20``)."""
    return _MINUS_CURRENCY.sub("-", text.replace("\u2212", "-"))


def reference_text(reference: str) -> str:
    """The text of a reference that math-verify parses: GSM8K's answer after ``####``; a bare answer boxed."""
    text = prenormalize(reference.strip())
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    if "\\boxed" in text or "\\fbox" in text or _DOLLAR.search(text):
        return text
    return f"\\boxed{{{text}}}"


def _check_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "math_verifier: math-verify's time limits use signal.alarm, which works only in a "
            "process's main thread; run the math verifier there (or in a worker process)"
        )


def parse_answer(text: str) -> list:
    """math-verify's parse of ``text`` (a parsed expression, then the matched string), ``[]`` when none."""
    _check_thread()
    try:
        return math_verify.parse(text, EXTRACTION, parsing_timeout=PARSE_TIMEOUT_S, raise_on_error=True)
    except TimeoutException:
        raise VerifierFailure("timeout", f"math-verify's parse took over {PARSE_TIMEOUT_S} s") from None
    except Exception as err:  # noqa: BLE001 - recorded as the candidate's failure, not a crash of the stage
        raise VerifierFailure("verifier_error", f"math-verify's parse raised {type(err).__name__}") from None


@lru_cache(maxsize=4096)
def parse_reference(reference: str) -> tuple:
    """The parsed reference (references repeat across a prompt's candidates, so parses are cached)."""
    return tuple(parse_answer(reference_text(reference)))


def answers_match(gold: list | tuple, answer: list | tuple) -> bool:
    """math-verify's verdict on two parsed answers: does any form of the answer equal any form of the gold? A
    comparison that raises is no match (math-verify's rule); one that runs out of time raises
    :class:`VerifierFailure`."""
    _check_thread()
    for g, a in itertools.product(gold, answer):
        try:
            if math_verify.verify(
                g, a, timeout_seconds=COMPARE_TIMEOUT_S, allow_set_relation_comp=True, raise_on_error=True
            ):
                return True
        except TimeoutException:
            raise VerifierFailure("timeout", f"math-verify's comparison took over {COMPARE_TIMEOUT_S} s") from None
        except Exception:  # noqa: BLE001 - math-verify's own rule: an error in a comparison is no match
            continue
    return False


def _shown(parsed: list | tuple) -> str | None:
    """The answer as math-verify matched it (its string), else as it parsed it."""
    if not parsed:
        return None
    return parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0])


def score_math(prompt: str, completion: str, reference: str | None) -> Judgment:
    """Correctness and answer_found of one completion against its reference, or the reason there are none."""
    if reference is None or not str(reference).strip():
        return Judgment(None, "", "no_reference: the math verifier needs the prompt's reference answer")
    try:
        gold = parse_reference(str(reference))
    except VerifierFailure as err:
        return Judgment(None, "", f"{err.kind}: {err} on the reference")
    if not gold:
        return Judgment(
            None,
            json.dumps({"reference": str(reference)}),
            "unreadable_reference: math-verify reads no answer in the reference",
        )
    raw = {"answer": None, "reference": _shown(gold)}
    try:
        answer = parse_answer(prenormalize(completion or ""))
        raw["answer"] = _shown(answer)
        correct = bool(answer) and answers_match(gold, answer)
    except VerifierFailure as err:
        return Judgment(None, json.dumps(raw), f"{err.kind}: {err} on the completion")
    return Judgment({"correctness": float(correct), "answer_found": float(bool(answer))}, json.dumps(raw), "ok")
