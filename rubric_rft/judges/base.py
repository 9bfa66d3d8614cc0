"""The one interface every judge backend implements, and the records it returns.

A `GradeRequest` asks whether one response satisfies each of a list of criteria. A backend answers with a
`Verdict`: a satisfied/unsatisfied value per criterion, or an `error` when it could not grade after its
retries. A failed verdict carries no values at all, so nothing downstream can mistake it for a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rubric_rft.rubric import Criterion


@dataclass(frozen=True)
class GradeRequest:
    """Grade `response` (the policy's answer to `prompt`) against `criteria`.

    `prompt` is the conversation as plain text (see `rubric_rft.data.render_prompt`).
    """

    prompt: str
    response: str
    criteria: tuple[Criterion, ...]


@dataclass
class CriterionVerdict:
    """Whether one criterion is satisfied; `probability` is the judge's P(yes) where the backend gives one."""

    satisfied: bool
    probability: float | None = None


@dataclass
class CallOutcome:
    """What asking a model cost (calls, retries, cache hits, tokens) and, in `error`, why it gave no answer.

    Verdicts, pairwise verdicts and proposer answers all carry it, so cost accounting reads the same everywhere.
    """

    error: str | None = None
    judge_calls: int = 0
    retries: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Verdict(CallOutcome):
    """The judge's answer to one `GradeRequest`.

    Exactly one of these holds: `error` is None and `criteria` has a verdict for every requested criterion id,
    or `error` says why grading failed and `criteria` is empty.
    """

    criteria: dict[str, CriterionVerdict] = field(default_factory=dict)
    latency_s: float = 0.0


@runtime_checkable
class Judge(Protocol):
    """An async judge. Implementations bound their own concurrency, retry, cache, and never raise on a
    failed grade: they return a `Verdict` with `error` set."""

    name: str

    async def grade(self, request: GradeRequest) -> Verdict: ...

    async def aclose(self) -> None: ...
