"""Chained integer arithmetic with worked solutions: the tiny reasoning world.

A problem is a chain such as ``7*3+4-2``. Operations apply strictly **left to right** (no precedence), so
every intermediate value is one worked step::

    prompt:   7*3+4
    solution: 7*3=21;21+4=25. =25

Difficulty knobs are the number of operations and the operand range. The in-domain split is short chains
of small operands; the out-of-domain split is longer chains (or larger operands) never seen in training.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

OPERATIONS = ("+", "-", "*")

_PROBLEM_RE = re.compile(r"^-?\d+(?:[+\-*]\d+)+$")
_TERM_RE = re.compile(r"([+\-*])(\d+)")


@dataclass(frozen=True)
class Difficulty:
    """Knobs of one split of the world."""

    min_ops: int = field(default=1, metadata={"help": "Fewest operations in a problem."})
    max_ops: int = field(default=3, metadata={"help": "Most operations in a problem."})
    min_operand: int = field(default=1, metadata={"help": "Smallest operand."})
    max_operand: int = field(default=9, metadata={"help": "Largest operand."})

    def __post_init__(self):
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}..{self.max_ops}")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ValueError(f"need 0 <= min_operand <= max_operand, got {self.min_operand}..{self.max_operand}")


@dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    result: int

    def render(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.result}"


def apply(left: int, op: str, right: int) -> int:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operation {op!r}")


def parse_problem(problem: str) -> tuple[int, list[tuple[str, int]]]:
    """Split ``"7*3+4"`` into ``(7, [("*", 3), ("+", 4)])``; raises ValueError on anything else."""
    text = problem.strip()
    if not _PROBLEM_RE.match(text):
        raise ValueError(f"not a chained arithmetic problem: {problem!r}")
    head = re.match(r"^-?\d+", text).group(0)
    terms = [(op, int(num)) for op, num in _TERM_RE.findall(text[len(head) :])]
    return int(head), terms


def solve(problem: str) -> list[Step]:
    """The worked steps of a problem, evaluated left to right."""
    value, terms = parse_problem(problem)
    steps = []
    for op, operand in terms:
        result = apply(value, op, operand)
        steps.append(Step(value, op, operand, result))
        value = result
    return steps


def render_solution(steps: list[Step]) -> str:
    """The reference trace: ``"7*3=21;21+4=25. =25"``."""
    return ";".join(s.render() for s in steps) + f". ={steps[-1].result}"


def sample_problem(rng: random.Random, difficulty: Difficulty) -> str:
    n_ops = rng.randint(difficulty.min_ops, difficulty.max_ops)
    operands = [rng.randint(difficulty.min_operand, difficulty.max_operand) for _ in range(n_ops + 1)]
    ops = [rng.choice(OPERATIONS) for _ in range(n_ops)]
    return str(operands[0]) + "".join(f"{op}{x}" for op, x in zip(ops, operands[1:]))


def sample_problems(n: int, difficulty: Difficulty, seed: int) -> list[dict]:
    """``n`` problems as rows ``{"problem", "solution", "answer", "num_ops"}``, deterministic from ``seed``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        problem = sample_problem(rng, difficulty)
        steps = solve(problem)
        rows.append(
            {
                "problem": problem,
                "solution": render_solution(steps),
                "answer": str(steps[-1].result),
                "num_ops": len(steps),
            }
        )
    return rows


# -- traces of every quality, for training the tiny LLM judge ----------------------------------------------


def _chain(first: int, terms: list[tuple[str, int]], slip: tuple[int, int] | None = None) -> list[Step]:
    """Steps of ``first op x op y ...``; ``slip = (k, delta)`` miscomputes step k and carries the error on."""
    steps, value = [], first
    for k, (op, operand) in enumerate(terms):
        result = apply(value, op, operand) + (slip[1] if slip and slip[0] == k else 0)
        steps.append(Step(value, op, operand, result))
        value = result
    return steps


def sample_trace(rng: random.Random, problem: str) -> str:
    """A worked trace of ``problem`` that is right, or wrong the ways tiny models are wrong: a miscomputed step
    carried on, a wrong final answer, a step skipped or added, a broken format, a cut-off or garbled trace."""
    first, terms = parse_problem(problem)
    truth = solve(problem)
    kind = rng.choices(
        ["correct", "slip", "final", "skip", "extra", "format", "truncate", "garble"],
        weights=[30, 20, 10, 10, 5, 10, 10, 5],
    )[0]
    if kind == "slip":
        return render_solution(_chain(first, terms, (rng.randrange(len(terms)), rng.choice([-3, -2, -1, 1, 2, 3]))))
    if kind == "final":
        return ";".join(s.render() for s in truth) + f". ={truth[-1].result + rng.choice([-2, -1, 1, 2, 10])}"
    if kind == "skip" and len(truth) > 1:
        kept = [s for i, s in enumerate(truth) if i != rng.randrange(len(truth))]
        return ";".join(s.render() for s in kept) + f". ={truth[-1].result}"
    if kind == "extra":
        last = truth[-1].result
        return render_solution(truth + [Step(last, "+", 0, last)])
    if kind == "format":
        body = ";".join(s.render() for s in truth)
        return rng.choice([body, body.replace(";", ", "), f"{body}. {truth[-1].result}", f"={truth[-1].result}"])
    text = render_solution(truth)
    if kind == "truncate":
        return text[: rng.randrange(1, len(text))]
    if kind == "garble":
        return "".join(rng.choice("0123456789+-*=;. ") for _ in range(rng.randint(3, len(text))))
    return text
