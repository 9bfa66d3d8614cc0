"""The one interface every judge backend implements, and the records it returns.

A `GradeRequest` asks whether one response satisfies each of a list of criteria. A backend answers with a
`Verdict`: a satisfied/unsatisfied value per criterion, or an `error` when it could not grade after its
retries. A failed verdict carries no values at all, so nothing downstream can mistake it for a score.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rubric_rft.llm.costs import CallOutcome
from rubric_rft.rubrics.format import Criterion


@dataclass(frozen=True)
class GradeRequest:
    """Grade `response` (the policy's answer to `prompt`) against `criteria`.

    `prompt` is the conversation as plain text (see `rubric_rft.rubrics.datasets.render_prompt`).
    """

    prompt: str
    response: str
    criteria: tuple[Criterion, ...]


@dataclass
class CriterionVerdict:
    """Whether one criterion is satisfied; `probability` is the judge's P(yes) where the backend gives one;
    `disagreement`, from a panel of judges, the share of its members outside the majority."""

    satisfied: bool
    probability: float | None = None
    disagreement: float | None = None


@dataclass
class Verdict(CallOutcome):
    """The judge's answer to one `GradeRequest`.

    Exactly one of these holds: `error` is None and `criteria` has a verdict for every requested criterion id,
    or `error` says why grading failed and `criteria` is empty. A judge that grades several responses in one
    question (listwise) records where the response stood: `position` (0-based) among `group_size` responses shown.
    """

    criteria: dict[str, CriterionVerdict] = field(default_factory=dict)
    latency_s: float = 0.0
    position: int | None = None
    group_size: int | None = None


@runtime_checkable
class Judge(Protocol):
    """An async judge. Implementations bound their own concurrency, retry, cache, and never raise on a
    failed grade: they return a `Verdict` with `error` set. `aclose` releases what the running event loop holds and
    may be called any number of times; a later `grade` opens what it needs again."""

    name: str

    async def grade(self, request: GradeRequest) -> Verdict: ...

    async def aclose(self) -> None: ...


async def grade_all(judge: Judge, requests: Sequence[GradeRequest]) -> list[Verdict]:
    """Every request graded concurrently, verdicts in the requests' order. A judge that grades a group of responses
    together (it has `grade_group(requests) -> verdicts`) gets each group of requests that share a prompt and
    criteria, a GRPO group, in one call; any other judge gets one `grade` call per request."""
    grade_group = getattr(judge, "grade_group", None)
    if grade_group is None:
        return list(await asyncio.gather(*(judge.grade(request) for request in requests)))
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        groups[request.prompt, *(c.model_dump_json() for c in request.criteria)].append(index)
    answers = await asyncio.gather(*(grade_group([requests[i] for i in indices]) for indices in groups.values()))
    verdicts: list[Verdict | None] = [None] * len(requests)
    for indices, group_verdicts in zip(groups.values(), answers, strict=True):
        for index, verdict in zip(indices, group_verdicts, strict=True):
            verdicts[index] = verdict
    return verdicts


class AsyncClosing:
    """`async with x:` closes `x` (its `aclose`) when the block ends, on the event loop that used it: judges,
    pairwise judges and rewards, so no caller pairs `asyncio.run` with `aclose` by hand."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()
