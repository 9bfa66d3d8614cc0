"""Who proposes a rubric change for a saturated prompt, behind one protocol.

A proposer is shown the gold-ordered pairs (better, worse) and returns a rubric's new criteria, or none. It never
decides whether the change is kept: the refinement step accepts a proposal only when it orders held-out
gold-preferred pairs, which the proposer never sees, better than the current rubric does
(`rubric_rft.training.refinement.refine`).

- `LLMProposer`: the rubric tools' proposer (`RubricProposer.refine`), its edits applied by `apply_edits`;
- `BankProposer`: no model; from a bank of candidate criteria per prompt, the one criterion that, added, orders
  the pairs best (the first in the bank among equals), or none when none orders them better than the rubric.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from rubric_rft.llm.costs import Costs
from rubric_rft.llm.endpoint import load_endpoint
from rubric_rft.rubricgen.edits import EditError, apply_edits
from rubric_rft.rubricgen.prompts import ShownPair
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.selection import Scored
from rubric_rft.rubrics.format import Criterion, Rubric, iter_json_records, validated_record
from rubric_rft.training.refinement.config import BankProposerConfig, LLMProposerConfig

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
    asks_model = True

    def __init__(self, proposer: RubricProposer) -> None:
        self.proposer = proposer
        self.name = proposer.name

    async def propose(self, prompt_id: str, prompt: str, rubric: Rubric, pairs: Sequence[DirectedPair],
                      agreement: Agreement, before: float) -> Proposal:
        shown = [ShownPair(b.candidate.response, w.candidate.response, b.normalized, w.normalized) for b, w in pairs]
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

    def instance(self, prompt_id: str, criterion: Criterion) -> Criterion | None:
        """The criterion as it is: what the proposer wrote for one prompt is offered to the others unchanged."""
        return criterion

    async def aclose(self) -> None:
        await self.proposer.aclose()


class BankProposer:
    name = "bank"
    asks_model = False

    def __init__(self, bank: dict[str, list[Criterion]]) -> None:
        self.bank = bank

    async def propose(self, prompt_id: str, prompt: str, rubric: Rubric, pairs: Sequence[DirectedPair],
                      agreement: Agreement, before: float) -> Proposal:
        taken = {c.id for c in rubric.criteria}
        best: tuple[float, Criterion] | None = None
        tried = {}
        for criterion in self.bank.get(prompt_id, []):
            if criterion.id in taken:
                continue
            after = await agreement(rubric.model_copy(update={"criteria": [*rubric.criteria, criterion]}))
            tried[criterion.id] = after
            if after is not None and after > before and (best is None or after > best[0]):
                best = (after, criterion)
        if tried and all(after is None for after in tried.values()):
            return Proposal(None, edit={"tried": tried}, error="grading the pairs with the bank's criteria failed")
        if best is None:
            return Proposal(None, "no criterion of the bank orders the pairs better", {"tried": tried})
        after, chosen = best
        reason = (f"added {chosen.id!r} from the bank: agreement with the gold {after:.2f} on the pairs shown "
                  f"(the rubric: {before:.2f})")
        return Proposal([*rubric.criteria, chosen], reason, {"added": chosen.model_dump(mode="json"),
                                                              "tried": tried})

    def instance(self, prompt_id: str, criterion: Criterion) -> Criterion | None:
        """The bank's criterion with the same id for `prompt_id`: its own words, its own question's content."""
        return next((c for c in self.bank.get(prompt_id, []) if c.id == criterion.id), None)

    async def aclose(self) -> None:
        pass


class BankRecord(BaseModel):
    """One line of a criteria bank: a prompt's candidate criteria, ids unique within it."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str
    criteria: list[Criterion]

    @field_validator("criteria")
    @classmethod
    def _unique_ids(cls, criteria: list[Criterion]) -> list[Criterion]:
        ids = [c.id for c in criteria]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"criterion ids repeated: {repeated}")
        return criteria


def load_bank(path: str | Path) -> dict[str, list[Criterion]]:
    """A criteria bank: JSONL records `{prompt_id, criteria: [...]}`; errors name the file, line and field."""
    bank: dict[str, list[Criterion]] = {}
    for where, record in iter_json_records(Path(path)):
        entry = validated_record(where, record, BankRecord)
        bank.setdefault(entry.prompt_id, []).extend(entry.criteria)
    return bank


def build_proposer(config: BankProposerConfig | LLMProposerConfig, max_criteria: int) -> Proposer:
    if isinstance(config, BankProposerConfig):
        return BankProposer(load_bank(config.bank_path))
    return LLMProposer(RubricProposer(load_endpoint(config.endpoint, "refinement.proposer.endpoint"),
                                      max_criteria=max_criteria))
