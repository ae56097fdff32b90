"""Rubrics as data: dimensions with descriptions, a score scale, and the judge's prompt templates.

A rubric is a YAML file (the presets live in ``prefopt/judging/rubrics/``)::

    name: reasoning5
    scale: [1, 5]
    dimensions:
      - {name: factuality, description: ..., aliases: [...]}
    pointwise_template: "... {rubric} ... {prompt} ... {response} ... {example}"
    pairwise_template: "... {prompt} ... {response_a} ... {response_b} ..."

Placeholders: ``{rubric}`` (one line per dimension), ``{prompt}``, ``{response}``, ``{response_a}``,
``{response_b}``, ``{reference}`` (the gold answer, if any), ``{low}``, ``{high}`` and ``{example}`` (a
JSON object with every dimension). Only these are replaced, so templates may contain other braces. The
pointwise template must state the scale (``{low}`` and ``{high}``, or the numbers themselves): the parser reads
only scores on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prefopt.config_base import from_dict
from prefopt.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "rubrics"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{(rubric|prompt|response|response_a|response_b|reference|low|high|example)\}")


@dataclass(frozen=True)
class Dimension:
    """One thing the judge scores."""

    name: str = field(metadata={"help": "Key in the judge's JSON answer and in the scores column (an identifier)."})
    description: str = field(default="", metadata={"help": "What a high score means."})
    aliases: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Other keys or labels the judge may write for it (matched ignoring case, spaces and punctuation)."
        },
    )


@dataclass(frozen=True)
class Rubric:
    """Dimensions, a scale and prompt templates."""

    name: str = field(metadata={"help": "Rubric name, recorded with the judgments."})
    dimensions: list[Dimension] = field(metadata={"help": "The dimensions scored."})
    pointwise_template: str = field(metadata={"help": "Prompt that asks for every dimension's score of one response."})
    pairwise_template: str = field(default="", metadata={"help": "Prompt that asks which of two responses is better."})
    scale: list[float] = field(default_factory=lambda: [1.0, 5.0], metadata={"help": "[lowest, highest] score."})
    integer: bool = field(default=True, metadata={"help": "Scores are whole numbers."})

    def __post_init__(self):
        names = [d.name for d in self.dimensions]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"dimensions: expected a non-empty list of unique names, got {names}")
        bad = [n for n in names if not _IDENTIFIER.fullmatch(n)]
        if bad:
            raise ValueError(f"dimensions: names must be identifiers (letters, digits, _), got {bad}")
        labels = [(normalize_label(label), d.name) for d in self.dimensions for label in (d.name, *d.aliases)]
        clashes = sorted({a for a, n in labels for b, m in labels if a == b and n != m})
        if clashes:
            raise ValueError(
                f"dimensions: names and aliases must differ between dimensions (case, spaces and "
                f"punctuation aside), got {clashes} for two dimensions"
            )
        if len(self.scale) != 2 or self.scale[0] >= self.scale[1]:
            raise ValueError(f"scale: expected [low, high] with low < high, got {self.scale}")
        if "{response}" not in self.pointwise_template:
            raise ValueError("pointwise_template: must contain {response}")
        for end, value in (("low", self.low), ("high", self.high)):
            if f"{{{end}}}" not in self.pointwise_template and not re.search(
                rf"(?<![\d.]){re.escape(self._number(value))}(?![\d.]\d)", self.pointwise_template
            ):
                raise ValueError(
                    f"pointwise_template: must state the scale's {end} end ({{{end}}} or "
                    f"{self._number(value)}), so the judge answers on the scale the parser expects"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    @property
    def low(self) -> float:
        return self.scale[0]

    @property
    def high(self) -> float:
        return self.scale[1]

    @staticmethod
    def _number(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    def example(self) -> str:
        middle = (self.low + self.high) / 2
        value = round(middle) if self.integer else middle
        return json.dumps({d.name: value for d in self.dimensions})

    def _fill(self, template: str, values: dict[str, str]) -> str:
        values = {
            "rubric": "\n".join(f"- {d.name}: {d.description}" for d in self.dimensions),
            "low": self._number(self.low),
            "high": self._number(self.high),
            "example": self.example(),
            **values,
        }
        # one pass, so that a response containing "{prompt}" is left as it is
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)

    def pointwise_prompt(self, prompt: str, response: str, reference: str | None = None) -> str:
        return self._fill(
            self.pointwise_template, {"prompt": prompt, "response": response, "reference": reference or ""}
        )

    def pairwise_prompt(self, prompt: str, response_a: str, response_b: str, reference: str | None = None) -> str:
        if not self.pairwise_template:
            raise ValueError(f"rubric {self.name!r} has no pairwise_template")
        return self._fill(
            self.pairwise_template,
            {"prompt": prompt, "response_a": response_a, "response_b": response_b, "reference": reference or ""},
        )

    def json_schema(self) -> dict:
        """The answer's JSON schema: every dimension, a number (an integer on integer rubrics) in the scale."""
        kind, cast = ("integer", int) if self.integer else ("number", float)
        return {
            "type": "object",
            "additionalProperties": False,
            "required": list(self.names),
            "properties": {
                d.name: {"type": kind, "minimum": cast(self.low), "maximum": cast(self.high)} for d in self.dimensions
            },
        }


def normalize_label(label: str) -> str:
    """A key or label as the parser matches it: lower case, runs of other characters as one ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def load_rubric(name_or_path: str) -> Rubric:
    """A preset by name (``reasoning5``, ``reasoning3``, ``tiny_world``) or a rubric YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise ConfigError(f"rubric {name_or_path!r}: no such preset (presets: {presets}) and not a .yaml file")
    if not path.is_file():
        raise ConfigError(f"{path}: rubric file not found")
    try:
        return from_dict(Rubric, yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
