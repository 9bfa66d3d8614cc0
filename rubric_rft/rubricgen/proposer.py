"""The proposer: an LLM behind any OpenAI-compatible endpoint that writes, refines and rewrites, and the protocol
every refinement proposer follows.

Every question goes through a `ChatClient` (its cache, retries, replicas and concurrency bound), with a parser
that validates the answer, so a malformed answer is asked again and a cached answer costs nothing on a rerun.
A question that still fails comes back as an `Asked` with `error` set, never as a made-up rubric.

A refinement proposer (`Proposer`) is shown the gold-ordered pairs (better, worse) and returns a rubric's new
criteria, or none. It never decides whether the change is kept: `rubric_rft.rubricgen.differentiate` tests it
against the gold first. `LLMProposer` is `RubricProposer.refine` behind that protocol, its edits applied by
`apply_edits`; online refinement adds a bank of criteria (`rubric_rft.training.refinement.proposers`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from rubric_rft.llm.client import Asked, ChatClient
from rubric_rft.llm.costs import Costs
from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.rubricgen.edits import EditError, Refinement, apply_edits
from rubric_rft.rubricgen.parsing import parse_generated, parse_refinement
from rubric_rft.rubricgen.prompts import (
    GENERATE_TEMPLATE_VERSION,
    REFINE_TEMPLATE_VERSION,
    REWRITE_TEMPLATE_VERSION,
    ShownPair,
    generation_messages,
    refinement_messages,
    rewrite_messages,
    rubric_json,
)
from rubric_rft.rubricgen.selection import Scored
from rubric_rft.rubrics.format import Criterion, Rubric

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RubricProposer:
    """Writes rubrics (`generate`), edits them from preferred pairs (`refine`) and improves answers (`rewrite`)."""

    def __init__(self, config: ChatEndpointConfig, *, max_criteria: int = 12) -> None:
        if max_criteria < 1:
            raise ValueError(f"max_criteria must be at least 1, got {max_criteria}")
        self.config = config
        self.max_criteria = max_criteria
        self.client = ChatClient(config)
        self.name = self.client.name

    def __repr__(self) -> str:
        return f"RubricProposer(model={self.config.model!r}, base_urls={self.config.base_urls!r})"

    async def generate(
        self, prompt: str, rubric_id: str, prompt_id: str | None = None, reference: str | None = None
    ) -> Asked[Rubric]:
        """A version-1 rubric for `prompt` (rendered text), optionally shown a reference answer."""
        key = self._key(GENERATE_TEMPLATE_VERSION, prompt=prompt, reference=reference, max_criteria=self.max_criteria)

        def parse(text: str) -> dict[str, Any]:
            rubric = parse_generated(text, rubric_id, prompt_id)
            return {"criteria": [c.model_dump(mode="json", exclude_none=True) for c in rubric.criteria]}

        messages = generation_messages(prompt, reference, self.max_criteria)
        return await self._ask(messages, key, parse, lambda answer: Rubric(id=rubric_id, prompt_id=prompt_id, **answer))

    async def refine(self, prompt: str, rubric: Rubric, pairs: Sequence[ShownPair]) -> Asked[Refinement]:
        """Edits that make `rubric` prefer the better response of each pair, checked to apply to it."""
        key = self._key(
            REFINE_TEMPLATE_VERSION,
            prompt=prompt,
            rubric=rubric_json(rubric),
            pairs=[[p.better, p.worse, p.better_score, p.worse_score] for p in pairs],
        )
        messages = refinement_messages(prompt, rubric, pairs)
        return await self._ask(
            messages,
            key,
            lambda text: parse_refinement(text, rubric).model_dump(mode="json"),
            Refinement.model_validate,
        )

    async def rewrite(self, prompt: str, draft: str) -> Asked[str]:
        """An improved version of `draft`, an answer to `prompt`."""
        key = self._key(REWRITE_TEMPLATE_VERSION, prompt=prompt, draft=draft)
        return await self._ask(
            rewrite_messages(prompt, draft), key, lambda text: {"text": text.strip()}, lambda a: a["text"]
        )

    def _key(self, template: str, **parts: Any) -> dict[str, Any]:
        return dict(template=template, **parts)

    async def _ask(
        self,
        messages: list[dict],
        key: dict[str, Any],
        parse: Callable[[str], dict[str, Any]],
        build: Callable[[dict[str, Any]], T],
    ) -> Asked[T]:
        asked = await self.client.ask(messages, parse, key)
        if asked.ok:
            asked.value = build(asked.value)
        else:
            logger.warning("proposer gave up: %s", asked.error)
        return asked

    async def aclose(self) -> None:
        await self.client.aclose()


# (better, worse) by the gold source, each scored by the current rubric
DirectedPair = tuple[Scored, Scored]
# the agreement of a rubric with the gold on the pairs at hand; None when the rubric could not grade them
Agreement = Callable[[Rubric], Awaitable[float | None]]


@dataclass
class Proposal:
    """`criteria` is the proposed rubric's criteria (None: no change); `edit` says what changed, for the record;
    `costs` counts the proposer's own requests; `error` is set when the proposer failed."""

    criteria: list[Criterion] | None
    reason: str | None = None
    edit: dict[str, Any] | None = None
    costs: Costs = field(default_factory=Costs)
    error: str | None = None


class Proposer(Protocol):
    name: str
    asks_model: bool  # whether a proposal spends proposer calls (and so the proposer budget)

    async def propose(self, prompt_id: str, prompt: str, rubric: Rubric, pairs: Sequence[DirectedPair],
                      agreement: Agreement, before: float) -> Proposal: ...

    def instance(self, prompt_id: str, criterion: Criterion) -> Criterion | None:
        """`criterion`, accepted on another prompt, as it would be for `prompt_id` (None: it has no such criterion),
        for `rubric_rft.training.refinement.transfer`."""
        ...

    async def aclose(self) -> None: ...


class LLMProposer:
    """`RubricProposer.refine` as a `Proposer`; `show_scores` shows it the current rubric's scores of each pair."""

    asks_model = True

    def __init__(self, proposer: RubricProposer, *, show_scores: bool = True) -> None:
        self.proposer = proposer
        self.show_scores = show_scores
        self.name = proposer.name

    async def propose(self, prompt_id: str, prompt: str, rubric: Rubric, pairs: Sequence[DirectedPair],
                      agreement: Agreement, before: float) -> Proposal:
        shown = [ShownPair(b.candidate.response, w.candidate.response, *self._scores(b, w)) for b, w in pairs]
        asked = await self.proposer.refine(prompt, rubric, shown)
        costs = Costs().add(asked)
        if not asked.ok:
            return Proposal(None, costs=costs, error=f"proposer: {asked.error}")
        refinement = asked.value
        edit = {"edits": [e.model_dump(mode="json") for e in refinement.edits]}
        if not refinement.edits:
            return Proposal(None, refinement.reason, edit, costs)
        try:
            criteria = apply_edits(rubric, refinement.edits)
        except EditError as exc:
            return Proposal(None, refinement.reason, edit, costs, error=f"proposer: {exc}")
        return Proposal(criteria, refinement.reason, edit, costs)

    def _scores(self, better: Scored, worse: Scored) -> tuple[float | None, float | None]:
        return (better.normalized, worse.normalized) if self.show_scores else (None, None)

    def instance(self, prompt_id: str, criterion: Criterion) -> Criterion | None:
        """The criterion as it is: what the proposer wrote for one prompt is offered to the others unchanged."""
        return criterion

    async def aclose(self) -> None:
        await self.proposer.aclose()
