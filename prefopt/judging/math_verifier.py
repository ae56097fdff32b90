"""Math final-answer verification: does the completion's final answer equal the reference?

The final answer is the last ``\\boxed{...}`` (or ``\\fbox``), else what follows ``####``, else what follows
"final answer" / "answer is" / "answer:", else the last number in the text. References are read the same
way when they are whole solutions (GSM8K's ``... #### 72``). Two answers match when both are numbers that
are equal (integers, decimals, ``a/b``, ``\\frac{a}{b}``, thousands separators, a trailing ``%`` or
unit-free ``\\$``), or when their normalised text is equal (spaces, ``\\left``/``\\right``, ``\\text{}``,
``\\dfrac`` and enclosing ``$`` removed).

Dimensions: ``correctness`` (1 or 0) and ``answer_found`` (1 if a final answer could be read at all). A
candidate without a reference cannot be verified: its judgment is a recorded failure, not a zero.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction

from prefopt.judging.base import Judgment

DIMENSIONS = ("correctness", "answer_found")

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_ANSWER_IS = re.compile(r"(?:final answer|the answer is|answer\s*:)\s*(?:is\s*)?[:=]?\s*(.+)", re.IGNORECASE)


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}, braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer written in ``text``, or None."""
    if not text:
        return None
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    hashes = re.findall(r"####\s*(.+)", text)
    if hashes:
        return hashes[-1].strip()
    stated = _ANSWER_IS.findall(text)
    if stated:
        answer = stated[-1].strip()
        number = re.match(rf"\$?\s*({_NUMBER})", answer)
        return number.group(1) if number else answer.rstrip(". ")
    numbers = re.findall(_NUMBER, text)
    return numbers[-1] if numbers else None


def normalize(answer: str) -> str:
    text = answer.strip().strip("$").strip()
    text = re.sub(r"\\text\{([^}]*)\}|\\mathrm\{([^}]*)\}", lambda m: m.group(1) or m.group(2) or "", text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\left|\\right|\\!|\\,|\\;|\\ |\s+", "", text)
    return text.rstrip(".").lower()


def to_number(answer: str) -> Fraction | None:
    """The answer as an exact number, if it is one."""
    text = normalize(answer).replace("\\$", "").replace("\\%", "").rstrip("%")
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", text)
    if frac:
        value = Fraction(int(frac.group(2)), int(frac.group(3))) if int(frac.group(3)) else None
        return -value if value is not None and frac.group(1) else value
    ratio = re.fullmatch(r"(-?\d+)/(-?\d+)", text)
    if ratio:
        return Fraction(int(ratio.group(1)), int(ratio.group(2))) if int(ratio.group(2)) else None
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str, reference: str) -> bool:
    a, b = to_number(predicted), to_number(reference)
    if a is not None and b is not None:
        return a == b
    return normalize(predicted) == normalize(reference)


def reference_answer(reference: str) -> str:
    """The answer in a reference that may be a whole solution."""
    if "####" in reference or "\\boxed" in reference or "\\fbox" in reference:
        return extract_answer(reference) or reference
    return reference


def score_math(prompt: str, completion: str, reference: str | None) -> Judgment:
    if reference is None or not str(reference).strip():
        return Judgment(None, "", "no_reference: the math verifier needs the prompt's reference answer")
    gold = reference_answer(str(reference))
    answer = extract_answer(completion)
    correct = answer is not None and answers_match(answer, gold)
    scores = {"correctness": float(correct), "answer_found": float(answer is not None)}
    return Judgment(scores, json.dumps({"answer": answer, "reference": gold}), "ok")
