"""What every judge shares: the items it scores, the judgment it returns, and the interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class JudgeItem:
    """One candidate to judge."""

    prompt: str  # the user's message (a conversation's last turn): what verifiers read
    completion: str
    reference: str | None = None
    messages: list[dict] | None = None  # the whole conversation before the completion (None: the prompt alone)

    @property
    def context(self) -> str:
        """The prompt as an LLM judge reads it: the user's message or, where the conversation holds more (a system
        turn, earlier turns), a transcript of it, one ``Role: text`` paragraph per turn."""
        if not self.messages or len(self.messages) == 1:
            return self.prompt
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages)


@dataclass(frozen=True)
class Judgment:
    scores: dict[str, float] | None  # one per dimension; None when the candidate could not be judged
    raw: str  # the judge's raw output (an LLM judge: a JSON list of every answer, failed attempts included)
    status: str  # "ok" or why the judgment is unusable
    attempts: int = 1  # engine calls it took (LLM judge: 1 + retries)
    samples: list[dict[str, float]] = field(default_factory=list)  # LLM judge: each valid sample's scores


class Judge(Protocol):
    name: str
    dimensions: tuple[str, ...]

    def score(self, items: list[JudgeItem]) -> list[Judgment]:
        """One judgment per item, in order."""

    def close(self) -> None:
        """Release the judge's model, if any."""


class FunctionJudge:
    """A judge from a per-item function, e.g. a verifier: ``fn(prompt, completion, reference) -> Judgment``."""

    def __init__(self, name: str, dimensions: tuple[str, ...], fn: Callable[[str, str, str | None], Judgment]):
        self.name, self.dimensions, self.fn = name, dimensions, fn

    def score(self, items: list[JudgeItem]) -> list[Judgment]:
        return [self.fn(item.prompt, item.completion, item.reference) for item in items]

    def close(self) -> None:
        pass
