"""Tolerant parsing of a judge's answer into one score per rubric dimension, or a stated reason it failed.

Judges answer in many shapes: clean JSON, JSON in a code fence after some reasoning, single-quoted
pseudo-JSON, nested ``{"score": 4, "reason": ...}`` objects, markdown bullets (``**Factuality**: 4/5``),
tables, or a bare ``7.5`` for a one-dimension rubric. The parser tries, in order: every JSON object in the
text (the last one that has every dimension wins; models often echo the example first), then "label ...
number" lines, then (one-dimension rubrics) an explicit score anywhere. Keys match dimensions by name,
alias, or by containing the name's words (``Numerical/Computational Precision`` -> ``numerical_precision``).
``a/b`` and ``a out of b`` are read as a on the rubric's scale when b is its top, else rescaled (a/b x top).

It never guesses a score: a missing dimension, an out-of-range value, an empty or ambiguous answer is a
failure whose status says so (``missing: ...``, ``out_of_range: ...``), for the caller to retry or record.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from prefopt.judging.rubrics import Rubric

NUMBER = r"[-+]?\d+(?:\.\d+)?"
SCORE = re.compile(rf"(?P<num>{NUMBER})(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?", re.IGNORECASE)
_SCALE_NOTE = re.compile(r"[(\[]\s*\d+(?:\.\d+)?\s*(?:-|–|to)\s*\d+(?:\.\d+)?\s*[)\]]")  # "(1-5)", "[1 to 10]"
_MARKUP = re.compile(r"\*\*|__|`|#+|^\s*>+", re.MULTILINE)
_SEPARATOR = r"[\"']?\s*(?:[:=|\-–—]+|\bis\b|\bscore[sd]?\b|\bof\b)\s*[\"'|]?\s*"
_EXPLICIT = [re.compile(rf"\[\[\s*({SCORE.pattern})\s*\]\]", re.IGNORECASE),
             re.compile(rf"(?:score|rating|grade|verdict)\s*(?:is|of|:|=)?\s*\**\s*({SCORE.pattern})", re.IGNORECASE),
             re.compile(rf"\*\*\s*({SCORE.pattern})\s*\*\*")]


@dataclass(frozen=True)
class ParsedScores:
    scores: dict[str, float] | None  # every dimension, or None
    status: str  # "ok", or why the answer could not be used


def normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class _Matcher:
    """Maps the keys a judge writes onto the rubric's dimension names."""

    def __init__(self, rubric: Rubric):
        self.exact: dict[str, str] = {}
        self.words: list[tuple[str, set[str]]] = []
        self.patterns: list[tuple[str, re.Pattern]] = []
        for d in rubric.dimensions:
            for label in (d.name, *d.aliases):
                self.exact[normalize(label)] = d.name
                words = normalize(label).split("_")
                self.words.append((d.name, set(words)))
                self.patterns.append((d.name, re.compile(r"\b" + r"[\s_/\-]*".join(map(re.escape, words)) + r"\b",
                                                         re.IGNORECASE)))

    def match(self, key: str) -> str | None:
        key = normalize(str(key))
        if key in self.exact:
            return self.exact[key]
        found = {name for name, words in self.words if words <= set(key.split("_"))}
        return found.pop() if len(found) == 1 else None


def _scale(num: str, den: str | None, high: float) -> float:
    value = float(num)
    if den is None or float(den) == high:
        return value
    return value / float(den) * high if float(den) else value


def to_score(value, high: float) -> float | None:
    """A score from a JSON value: a number, a numeric string ("4", "4/5"), ``{"score": 4}`` or ``[4, ...]``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = _SCALE_NOTE.sub(" ", value)
        match = SCORE.search(text)
        return _scale(match["num"], match["den"], high) if match else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if normalize(str(key)) in ("score", "rating", "value", "grade", "points"):
                return to_score(inner, high)
        return None
    if isinstance(value, list) and value:
        return to_score(value[0], high)
    return None


def json_objects(text: str) -> list[dict]:
    """Every top-level ``{...}`` in ``text`` that parses as JSON (or, leniently, as a Python literal)."""
    objects, depth, start, in_string, quote, escaped = [], 0, None, False, "", False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                in_string = False
            continue
        if ch in "\"'" and depth:
            in_string, quote = True, ch
        elif ch == "{":
            depth, start = depth + 1, i if depth == 0 else start
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                parsed = _loads(text[start:i + 1])
                if isinstance(parsed, dict):
                    objects.append(parsed)
    return objects


def _loads(blob: str):
    try:
        return json.loads(blob)
    except ValueError:
        pass
    lenient = re.sub(r",\s*([}\]])", r"\1", blob)  # trailing commas
    try:
        return json.loads(lenient)
    except ValueError:
        pass
    try:  # single quotes, True/False/None
        return ast.literal_eval(lenient)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _from_object(obj: dict, matcher: _Matcher, high: float) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in obj.items():
        name = matcher.match(key)
        if name is not None:
            score = to_score(value, high)
            if score is not None:
                found[name] = score
        elif isinstance(value, dict):  # {"scores": {...}}
            found.update(_from_object(value, matcher, high))
    return found


def _from_lines(text: str, matcher: _Matcher, high: float) -> dict[str, float]:
    """Scores from "label <separator> number" mentions; a later mention wins, a separated one over a loose one."""
    clean = _SCALE_NOTE.sub(" ", _MARKUP.sub("", text))
    strict: dict[str, float] = {}
    loose: dict[str, float] = {}
    for line in clean.splitlines():
        for name, pattern in matcher.patterns:
            for mention in pattern.finditer(line):
                rest = line[mention.end():]
                separated = re.match(_SEPARATOR + SCORE.pattern, rest, re.IGNORECASE)
                if separated:
                    strict[name] = _scale(separated["num"], separated["den"], high)
                    continue
                # "rate factuality as a solid 4", but never past a comma, quote or brace into the next item
                anywhere = re.match(r"[^\d\n,;{}\"']{0,40}?(" + SCORE.pattern + ")", rest, re.IGNORECASE)
                if anywhere:
                    loose[name] = _scale(anywhere["num"], anywhere["den"], high)
    return {**loose, **strict}


def _single_score(text: str, high: float) -> float | None:
    clean = _SCALE_NOTE.sub(" ", text).strip()
    whole = SCORE.fullmatch(clean.strip(" .*[]\"'"))
    if whole:
        return _scale(whole["num"], whole["den"], high)
    for pattern in _EXPLICIT:
        matches = list(pattern.finditer(clean))
        if matches:
            last = SCORE.search(matches[-1].group(1))
            return _scale(last["num"], last["den"], high)
    numbers = list(SCORE.finditer(clean))
    if len(numbers) == 1:
        return _scale(numbers[0]["num"], numbers[0]["den"], high)
    return None


def parse_scores(text: str, rubric: Rubric) -> ParsedScores:
    """Every dimension's score from a judge's answer, or the reason there is none."""
    if not text or not text.strip():
        return ParsedScores(None, "empty")
    matcher, high, names = _Matcher(rubric), rubric.high, rubric.names
    objects = [_from_object(obj, matcher, high) for obj in json_objects(text)]  # in text order
    lines = _from_lines(text, matcher, high)
    complete = [found for found in objects if set(found) == set(names)]
    if complete:
        scores = complete[-1]
    elif set(lines) == set(names):
        scores = lines
    elif len(names) == 1 and not any(objects) and (single := _single_score(text, high)) is not None:
        scores = {names[0]: single}
    else:
        best = max([*objects, lines], key=len)
        if not best:
            return ParsedScores(None, "no_scores: no score for any dimension")
        return ParsedScores(None, f"missing: {', '.join(n for n in names if n not in best)}")
    bad = [f"{n}={scores[n]:g}" for n in names if not rubric.low - 1e-9 <= scores[n] <= rubric.high + 1e-9]
    if bad:
        return ParsedScores(None, f"out_of_range: {', '.join(bad)} (scale {rubric.low:g}-{rubric.high:g})")
    return ParsedScores({n: scores[n] for n in names}, "ok")


_CHOICE = [
    re.compile(r"\[\[\s*([AB])\s*\]\]"),
    re.compile(r"(?:better|best|winner|prefer(?:red)?|choose|choice|pick|verdict|answer)\W+(?:is\W+)?"
               r"(?:response|answer|output|assistant|option)?\s*\(?([AB])\b\)?", re.IGNORECASE),
    re.compile(r"\b(?:response|answer|output|assistant|option)\s*\(?([AB])\)?\s+is\s+(?:better|the better|best)",
               re.IGNORECASE),
]


def parse_choice(text: str) -> str | None:
    """'A' or 'B' from a pairwise judge's answer; None when it names neither or both without a verdict."""
    if not text:
        return None
    bare = text.strip().strip(" .*\"'()[]:").upper()
    if bare in ("A", "B"):
        return bare
    bare = re.sub(r"^(?:RESPONSE|ANSWER|OUTPUT|ASSISTANT|OPTION)\s*", "", bare).strip(" .*\"'()[]:")
    if bare in ("A", "B"):
        return bare
    for pattern in _CHOICE:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].upper()
    letters = set(re.findall(r"\b([AB])\b", text))
    return letters.pop() if len(letters) == 1 else None
