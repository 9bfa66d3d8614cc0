"""Structured rubric edits a proposer returns (add, rewrite, split), validated and applied in order.

Proposed criteria are always `llm` criteria: a proposer states what to check, never how to check it with a
rule. An edit that cannot apply (an unknown id, an id used twice, a rubric left without a positive weight)
is an error that names the edit, so the proposer can be asked again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from rubric_rft.rubrics.format import Criterion, Rubric, checked_weight

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProposedCriterion(_Strict):
    """A criterion as a proposer writes it: `{"id", "text", "weight"}`; it becomes a `llm` criterion."""

    id: Text
    text: Text
    weight: float

    @field_validator("weight")
    @classmethod
    def _finite_nonzero(cls, weight: float) -> float:
        return checked_weight(weight)

    def to_criterion(self) -> Criterion:
        return Criterion(id=self.id, text=self.text, weight=self.weight, kind="llm")


class AddEdit(_Strict):
    """Append a new criterion."""

    op: Literal["add"]
    criterion: ProposedCriterion


class RewriteEdit(_Strict):
    """Replace criterion `id` in place (the new one may keep the id or take a new one)."""

    op: Literal["rewrite"]
    id: Text
    criterion: ProposedCriterion


class SplitEdit(_Strict):
    """Replace criterion `id` in place by two or more narrower ones."""

    op: Literal["split"]
    id: Text
    into: list[ProposedCriterion] = Field(min_length=2)


Edit = Annotated[AddEdit | RewriteEdit | SplitEdit, Field(discriminator="op")]


class Refinement(_Strict):
    """A proposer's answer to a refinement question: why, and the edits (possibly none)."""

    reason: Text
    edits: list[Edit]


class EditError(ValueError):
    """An edit that cannot apply to the rubric; the message names the edit."""


def apply_edits(rubric: Rubric, edits: Sequence[AddEdit | RewriteEdit | SplitEdit]) -> list[Criterion]:
    """The rubric's criteria after the edits, applied in order; `EditError` when one does not apply."""
    criteria = list(rubric.criteria)
    for number, edit in enumerate(edits, start=1):
        where = f"edit {number} ({edit.op})"
        ids = [c.id for c in criteria]
        if isinstance(edit, AddEdit):
            _check_new_ids(where, [edit.criterion.id], ids)
            criteria.append(edit.criterion.to_criterion())
            continue
        if edit.id not in ids:
            raise EditError(f"{where}: no criterion {edit.id!r} in the rubric (ids: {', '.join(ids)})")
        position = ids.index(edit.id)
        others = ids[:position] + ids[position + 1 :]
        replacement = [edit.criterion] if isinstance(edit, RewriteEdit) else edit.into
        _check_new_ids(where, [c.id for c in replacement], others)
        criteria[position : position + 1] = [c.to_criterion() for c in replacement]
    if not any(c.weight > 0 for c in criteria):
        raise EditError("the edited rubric has no criterion with a positive weight")
    return criteria


def _check_new_ids(where: str, new: list[str], existing: list[str]) -> None:
    taken = sorted({i for i in new if i in existing} | {i for i in new if new.count(i) > 1})
    if taken:
        raise EditError(f"{where}: criterion id(s) {', '.join(map(repr, taken))} already used")
