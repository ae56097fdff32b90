"""Strict parsing of a judge's answer into one score per rubric dimension, with a counted reason per failure.

Reasoning comes off first (:func:`final_answer`): ``<think>...</think>`` blocks (R1, Qwen, QwQ; a template that opens
the block in the prompt leaves only the closing tag), gpt-oss's harmony analysis channel (with its special tokens, or
decoded without them as ``analysis...assistantfinal...``), so only the final answer is parsed. Reasoning that never
ends (cut off, or a block never closed) is a failure ``reasoning_unterminated``, never thoughts read as scores.

Only the rubric's own dimension names and declared aliases are read, matched after normalising case, spaces and
punctuation (``Numerical/Computational Precision`` -> ``numerical_computational_precision``); every other key,
field or sentence is ignored, so a number in a reasoning field or a refusal never becomes a score. Sources, in
order of preference:

1. JSON objects (in a code fence or not; single quotes and trailing commas tolerated): a dimension key at the top
   level or inside a ``scores`` / ``ratings`` object; its value a number, a numeric string (``"4"``, ``"4/5"``)
   or ``{"score": 4, ...}``. The last object with every dimension valid wins (judges often echo the example).
2. ``label <separator> score`` statements at the start of a line, list item, table row or clause
   (``**Factuality**: 4/5``, ``| Step coherence | 3 |``, ``factual_accuracy=4, clarity=5``).
3. One-dimension rubrics only: an explicit score (the whole answer is a score, ``[[8]]``, ``Score: 7``,
   ``rate ... 6 out of 10``, a leading ``7/10``); several that disagree are ambiguous.

A score ``a/b`` or ``a out of b`` counts only when ``b`` is the rubric's top. A dimension that is absent, not a
number, NaN or infinite, outside the scale, or given two different values is a failure of that dimension; the
status names each (``missing: a, b; out_of_range: c=7 (scale 1-5)``) and :func:`dimension_failures` reads it
back for counting. Answers over :data:`MAX_ANSWER_CHARS` characters and JSON nested deeper than
:data:`MAX_JSON_DEPTH` levels are refused with a reason, so no answer can crash the stage.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field

from prefopt.judging.rubrics import Rubric, normalize_label

MAX_ANSWER_CHARS = 32_768  # longer answers are refused ("too_long")
MAX_OUTPUT_CHARS = 1_000_000  # longer outputs, reasoning included, are refused before it is removed
MAX_JSON_DEPTH = 8  # objects and lists nested deeper are refused ("too_deep")
# Per-dimension failure kinds, in the order a status lists them.
DIMENSION_FAILURES = ("missing", "not_a_number", "not_finite", "out_of_range", "ambiguous")

_NUM = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)|nan|[-+]?inf(?:inity)?"
_VALUE = rf"(?P<num>{_NUM})(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?"
_END = r"(?=$|[\s,;:!?)|*\]}\"']|\.(?!\d))"
VALUE = re.compile(_VALUE, re.IGNORECASE)
_MARKUP = re.compile(r"\*\*|__|`|^\s*#+|^\s*>+", re.MULTILINE)
_STATEMENT = re.compile(
    r"(?:^|[.;,{]\s*)[ \t]*\|?[ \t]*(?:[-*+•][ \t]+|\d+[.)][ \t]+)?[\"']?(?P<label>[A-Za-z][\w /&'\-]*?)[\"']?"
    r"(?:\s*[(\[]\s*\d+(?:\.\d+)?\s*(?:-|–|to)\s*\d+(?:\.\d+)?\s*[)\]])?"  # a scale note: "(1-5)"
    rf"\s*(?:[:=|]|[-–—]+|\bis\b)\s*[\"']?{_VALUE}{_END}",
    re.IGNORECASE | re.MULTILINE,
)
_EXPLICIT = [
    re.compile(rf"\[\[\s*{_VALUE}\s*\]\]", re.IGNORECASE),
    re.compile(rf"\b(?:score|rating|grade)\s*(?:is|of|:|=)\s*{_VALUE}{_END}", re.IGNORECASE),
    re.compile(
        r"\brat(?:e|ed|ing)\b[^\n\d]{0,40}?(?P<num>\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*"
        rf"(?P<den>\d+(?:\.\d+)?){_END}",
        re.IGNORECASE,
    ),
    re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?)" + _END, re.IGNORECASE),
]
_CONTAINERS = ("scores", "ratings")
_SCORE_KEYS = ("score", "rating", "value")


REASONING_MODES = ("auto", "think", "none")
_THINK_OPEN = re.compile(r"<(?:think|thinking)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking)>", re.IGNORECASE)
_HARMONY_FINAL = re.compile(r"<\|channel\|>\s*final\s*(?:<\|constrain\|>[^<]*)?<\|message\|>")
_HARMONY_END = re.compile(r"<\|(?:return|end|call)\|>")
_HARMONY_ANALYSIS = re.compile(r"^\s*(?:<\|start\|>assistant)?\s*<\|channel\|>\s*(?:analysis|commentary)")
_DECODED_FINAL = "assistantfinal"  # harmony decoded without special tokens: "analysis<thoughts>assistantfinal<answer>"
_DECODED_ANALYSIS = re.compile(r"^\s*analysis(?=[A-Z])")  # "analysisWe need to ...": no space after the channel
UNTERMINATED = "reasoning_unterminated"


def final_answer(text: str, reasoning: str = "auto", separate: str | None = None) -> tuple[str | None, str]:
    """The final answer of a judge's output with its reasoning removed, and "ok"; or None and why there is none.

    ``separate``: a server's reasoning, returned apart from the text (``reasoning_content``); a blank text beside
    it means the reasoning never ended (``reasoning_unterminated``).

    ``auto``: ``<think>``/``<thinking>`` blocks and harmony's analysis channel are removed where present; a block
    opened and never closed (or an analysis channel with no final one) is ``reasoning_unterminated``. ``think``:
    the answer must follow a closing ``</think>`` (for chat templates that open the block in the prompt, as R1's
    distills and QwQ do); none is ``reasoning_unterminated``. ``none``: the text as it is. Linear in the text."""
    if separate is not None:  # the server split the reasoning off: the text needs no closing </think>
        if not (text or "").strip():
            return None, f"{UNTERMINATED}: the server's answer is all reasoning"
        reasoning = "auto" if reasoning == "think" else reasoning
    if reasoning == "none" or not text:
        return text, "ok"
    if reasoning not in REASONING_MODES:
        raise ValueError(f"reasoning: expected one of {REASONING_MODES}, got {reasoning!r}")
    finals = list(_HARMONY_FINAL.finditer(text))
    if finals:
        answer = text[finals[-1].end() :]
        end = _HARMONY_END.search(answer)
        return (answer[: end.start()] if end else answer), "ok"
    if _HARMONY_ANALYSIS.match(text):
        return None, f"{UNTERMINATED}: the analysis channel never reached a final one"
    cut = text.rfind(_DECODED_FINAL)
    if cut >= 0 and text.lstrip().startswith("analysis"):
        return text[cut + len(_DECODED_FINAL) :], "ok"
    if _DECODED_ANALYSIS.match(text):
        return None, f"{UNTERMINATED}: harmony analysis text with no final answer"
    closes = list(_THINK_CLOSE.finditer(text))
    answer = text[closes[-1].end() :] if closes else text
    if _THINK_OPEN.search(answer):
        return None, f"{UNTERMINATED}: a <think> block is never closed"
    if not closes and reasoning == "think":
        return None, f"{UNTERMINATED}: no </think> ends the reasoning"
    return answer, "ok"


@dataclass(frozen=True)
class ParsedScores:
    scores: dict[str, float] | None  # every dimension, or None
    status: str  # "ok", or why the answer could not be used (per dimension: see dimension_failures)


@dataclass
class _Reading:
    """What one source (a JSON object, the statements, an explicit score) says about each dimension."""

    values: dict[str, float] = field(default_factory=dict)
    bad: dict[str, tuple[str, str]] = field(default_factory=dict)  # dimension -> (kind, detail)

    def add(self, name: str, value: float | None, kind: str = "", detail: str = "") -> None:
        if value is None:
            self.bad.setdefault(name, (kind, detail))
        elif name in self.values and self.values[name] != value:
            self.bad[name] = ("ambiguous", f"{name} ({self.values[name]:g} and {value:g})")
        else:
            self.values[name] = value

    def mentioned(self) -> int:
        return len(set(self.values) | set(self.bad))


def labels(rubric: Rubric) -> dict[str, str]:
    """Normalised dimension name or alias -> dimension name."""
    return {normalize_label(label): d.name for d in rubric.dimensions for label in (d.name, *d.aliases)}


def _number(num: str, den: str | None, rubric: Rubric, name: str) -> tuple[float | None, str, str]:
    """A score from a matched value, or (None, failure kind, detail)."""
    try:
        value = float(num)
    except (ValueError, OverflowError):
        return None, "not_a_number", name
    if not math.isfinite(value):
        return None, "not_finite", f"{name}={value}"
    scale = f"(scale {rubric.low:g}-{rubric.high:g})"
    if den is not None and float(den) != rubric.high:
        return None, "out_of_range", f"{name}={value:g}/{float(den):g} {scale}"
    if not rubric.low - 1e-9 <= value <= rubric.high + 1e-9:
        return None, "out_of_range", f"{name}={value:g} {scale}"
    return value, "", ""


def _from_value(value, rubric: Rubric, name: str) -> tuple[float | None, str, str]:
    """A dimension's JSON value as a score: a number, a numeric string, or ``{"score": ...}``."""
    if isinstance(value, dict):
        inner = [v for k, v in value.items() if normalize_label(str(k)) in _SCORE_KEYS]
        return _from_value(inner[0], rubric, name) if len(inner) == 1 else (None, "not_a_number", name)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, "not_a_number", name
    if isinstance(value, str):
        match = VALUE.fullmatch(value.strip())
        return _number(match["num"], match["den"], rubric, name) if match else (None, "not_a_number", name)
    try:
        return _number(str(float(value)), None, rubric, name)
    except OverflowError:
        return None, "not_finite", f"{name}=overflow"


def _read_object(obj: dict, rubric: Rubric, keys: dict[str, str]) -> _Reading:
    reading = _Reading()
    inner = [v for k, v in obj.items() if normalize_label(str(k)) in _CONTAINERS and isinstance(v, dict)]
    for container in [obj, *inner]:
        for key, value in container.items():
            name = keys.get(normalize_label(str(key)))
            if name is not None:
                reading.add(name, *_from_value(value, rubric, name))
    return reading


def json_objects(text: str) -> tuple[list[dict], list[tuple[int, int]], bool]:
    """Every top-level ``{...}`` of ``text`` that parses, their spans, and whether one was nested deeper than
    :data:`MAX_JSON_DEPTH` (and so not parsed). Linear in the text, no recursion."""
    objects, spans, too_deep = [], [], False
    depth, deepest, start, quote, escaped = 0, 0, 0, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'" and depth:
            quote = ch
        elif ch in "{[" and (depth or ch == "{"):
            start = i if depth == 0 else start
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]" and depth:
            depth -= 1
            if depth == 0:
                if deepest > MAX_JSON_DEPTH:
                    too_deep = True
                elif isinstance(parsed := _loads(text[start : i + 1]), dict):
                    objects.append(parsed)
                    spans.append((start, i + 1))
                deepest = 0
    return objects, spans, too_deep


def _loads(blob: str):
    try:
        return json.loads(blob)
    except (ValueError, RecursionError):
        pass
    lenient = re.sub(r",\s*([}\]])", r"\1", blob)  # trailing commas
    try:
        return json.loads(lenient)
    except (ValueError, RecursionError):
        pass
    try:  # single quotes, True/False/None
        return ast.literal_eval(lenient)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _read_statements(text: str, rubric: Rubric, keys: dict[str, str]) -> _Reading:
    reading = _Reading()
    for match in _STATEMENT.finditer(_MARKUP.sub("", text)):
        name = keys.get(normalize_label(match["label"]))
        if name is not None:
            reading.add(name, *_number(match["num"], match["den"], rubric, name))
    return reading


def _read_explicit(text: str, rubric: Rubric) -> _Reading:
    reading, name, text = _Reading(), rubric.names[0], _MARKUP.sub("", text)
    matches = [m for m in [VALUE.fullmatch(text.strip().strip(".\"'[]() \n"))] if m] or [
        m for p in _EXPLICIT for m in p.finditer(text)
    ]
    for match in matches:
        reading.add(name, *_number(match["num"], match["den"], rubric, name))
    return reading


def format_failures(failures: dict[str, tuple[str, str]], names: tuple[str, ...]) -> str:
    """``missing: a, b; out_of_range: c=7 (scale 1-5)``: each kind in :data:`DIMENSION_FAILURES` order."""
    parts = []
    for kind in DIMENSION_FAILURES:
        details = [failures[n][1] for n in names if n in failures and failures[n][0] == kind]
        if details:
            parts.append(f"{kind}: {', '.join(details)}")
    return "; ".join(parts)


def dimension_failures(status: str, names: tuple[str, ...]) -> dict[str, str]:
    """The failed dimensions a status names (as :func:`format_failures` writes them) -> their failure kind."""
    found = {}
    for kind, details in re.findall(rf"\b({'|'.join(DIMENSION_FAILURES)}): ([^;]*)", status or ""):
        for item in details.split(", "):
            name = re.match(r"[^=\s(]+", item.strip())
            if name and name.group(0) in names:
                found.setdefault(name.group(0), kind)
    return found


def parse_scores(text: str, rubric: Rubric, reasoning: str = "auto") -> ParsedScores:
    """Every dimension's score from a judge's final answer (its reasoning removed as ``reasoning`` says, see
    :func:`final_answer`), or the reason (per dimension where it applies) there is none."""
    if text and len(text) > MAX_OUTPUT_CHARS:
        return ParsedScores(None, f"too_long: {len(text)} characters (limit {MAX_OUTPUT_CHARS} with reasoning)")
    text, status = final_answer(text, reasoning)
    if text is None:
        return ParsedScores(None, status)
    if not text or not text.strip():
        return ParsedScores(None, "empty")
    if len(text) > MAX_ANSWER_CHARS:
        return ParsedScores(None, f"too_long: {len(text)} characters (limit {MAX_ANSWER_CHARS})")
    keys, names = labels(rubric), rubric.names
    objects, spans, too_deep = json_objects(text)
    outside = "\n".join(text[a:b] for a, b in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [len(text)]))
    in_json = [_read_object(obj, rubric, keys) for obj in objects]
    readings = [*in_json, _read_statements(outside, rubric, keys)]
    if len(names) == 1 and not any(r.mentioned() for r in readings):
        readings.append(_read_explicit(outside, rubric))
    # the last complete JSON object, else the statements, else the explicit score
    complete = [r for r in [*reversed(in_json), *readings[len(in_json) :]] if not r.bad and set(r.values) == set(names)]
    if complete:
        return ParsedScores({n: complete[0].values[n] for n in names}, "ok")
    best = max(reversed(readings), key=_Reading.mentioned)  # the last of those that mention the most dimensions
    if not best.mentioned():
        if too_deep:
            return ParsedScores(None, f"too_deep: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return ParsedScores(None, "no_scores: no score for any dimension")
    failures = {**{n: ("missing", n) for n in names if n not in best.values and n not in best.bad}, **best.bad}
    return ParsedScores(None, format_failures(failures, names))


_CHOICE = [
    re.compile(r"\[\[\s*([AB])\s*\]\]"),
    re.compile(
        r"(?:better|best|winner|prefer(?:red)?|choose|choice|pick|verdict|answer)\W+(?:is\W+)?"
        r"(?:response|answer|output|assistant|option)?\s*\(?([AB])\b\)?",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:response|answer|output|assistant|option)\s*\(?([AB])\)?\s+is\s+(?:better|the better|best)", re.IGNORECASE
    ),
]


def parse_choice(text: str, reasoning: str = "auto") -> str | None:
    """'A' or 'B' from a pairwise judge's final answer (its reasoning removed, see :func:`final_answer`); None when
    it names neither, both without a verdict, its reasoning never ends, or it is longer than
    :data:`MAX_ANSWER_CHARS`."""
    if text and len(text) > MAX_OUTPUT_CHARS:
        return None
    text = final_answer(text, reasoning)[0]
    if not text or len(text) > MAX_ANSWER_CHARS:
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
