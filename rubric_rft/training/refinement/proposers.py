"""Online refinement's proposers, behind the `rubric_rft.rubricgen.proposer.Proposer` protocol.

A proposer never decides whether its change is kept: the refinement step accepts a proposal only when it orders
held-out gold-preferred pairs, which the proposer never sees, better than the current rubric does
(`rubric_rft.rubricgen.differentiate`).

- `LLMProposer` (`rubric_rft.rubricgen.proposer`): the rubric tools' proposer, as offline refinement uses it;
- `BankProposer`: no model; from a bank of candidate criteria per prompt, the one criterion that, added, orders
  the pairs best (the first in the bank among equals), or none when none orders them better than the rubric.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from rubric_rft.llm.endpoint import load_endpoint
from rubric_rft.rubricgen.proposer import Agreement, DirectedPair, LLMProposer, Proposal, Proposer, RubricProposer
from rubric_rft.rubrics.format import Criterion, Rubric, iter_json_records, validated_record
from rubric_rft.training.refinement.config import BankProposerConfig, LLMProposerConfig


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
