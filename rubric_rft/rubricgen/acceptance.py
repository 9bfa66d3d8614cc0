"""When a rubric change is kept: the acceptance rule and the evidence it reads.

A proposer that picks the best of many criteria on a handful of pairs will often find one that fits them by
chance, and an edit can read well and still grade no differently. So a change is kept only when, on the test
pairs, it orders the gold's pairs better than the current rubric, and by enough (`Acceptance`). Offline and
online refinement, and online transfer, all decide by this one rule (`rubric_rft.rubricgen.differentiate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Acceptance(BaseModel):
    """How a proposal is tested. The tail's answers are split: the proposer sees pairs among `1 - holdout_fraction`
    of them, and the change is accepted only on pairs among the held-out rest (0: tested on the pairs it was chosen
    on), when it orders them better than the current rubric and by enough: at least `min_newly_ordered` more pairs
    in the gold's order, and with `max_p_value` a one-sided sign test over the pairs whose credit changed. Fewer than
    `min_pairs` gold-ordered pairs in all: no attempt. A pair a rubric ties counts `tie_credit`."""

    model_config = ConfigDict(extra="forbid")

    min_pairs: int = Field(default=6, ge=1, description="Gold-ordered pairs needed, proposal and held-out together.")
    holdout_fraction: float = Field(default=0.5, ge=0, lt=1, description="Share of the answers kept for the test.")
    tie_credit: float = Field(default=0.5, ge=0, le=1, description="Credit for a pair a rubric scores equal.")
    min_newly_ordered: int = Field(
        default=2, ge=0,
        description="Held-out pairs the change must put in the gold's order beyond those it takes out of it.")
    max_p_value: float | None = Field(
        default=None, gt=0, le=1, description="Sign test over the held-out pairs whose credit changed; null: off.")

    @model_validator(mode="after")
    def _room_for_both(self) -> Acceptance:
        if self.holdout_fraction > 0 and self.min_pairs < 2:
            raise ValueError("min_pairs must be at least 2 when holdout_fraction > 0: one pair shown, one held out")
        return self


def sign_test_p(improved: int, worsened: int) -> float:
    """One-sided sign test: the chance of at least `improved` of `improved + worsened` changed pairs improving if
    improving and worsening were equally likely (1.0 when nothing changed)."""
    changed = improved + worsened
    return sum(math.comb(changed, k) for k in range(improved, changed + 1)) / 2**changed


@dataclass(frozen=True)
class Evidence:
    """How a proposal changed the test pairs: pairs it orders that the current rubric did not, pairs the current
    rubric ordered that it no longer does, and the pairs whose credit rose or fell (for the sign test)."""

    newly_ordered: int
    no_longer_ordered: int
    improved: int
    worsened: int
    gain: float  # the summed credit after, less before

    @classmethod
    def between(cls, before: Sequence[float], after: Sequence[float]) -> Evidence:
        pairs = list(zip(before, after, strict=True))
        return cls(
            newly_ordered=sum(a == 1 and b < 1 for b, a in pairs),
            no_longer_ordered=sum(b == 1 and a < 1 for b, a in pairs),
            improved=sum(a > b for b, a in pairs),
            worsened=sum(a < b for b, a in pairs),
            gain=sum(after) - sum(before),
        )

    @property
    def net_ordered(self) -> int:
        return self.newly_ordered - self.no_longer_ordered

    @property
    def p_value(self) -> float:
        return sign_test_p(self.improved, self.worsened)

    def refusal(self, acceptance: Acceptance) -> str | None:
        """Why the change is not accepted on this evidence, or None when it is."""
        if self.gain <= 0:
            return "no_improvement"
        if self.net_ordered < acceptance.min_newly_ordered:
            return (f"too_little_evidence: {self.net_ordered} more held-out pairs ordered < "
                    f"{acceptance.min_newly_ordered}")
        if acceptance.max_p_value is not None and self.p_value > acceptance.max_p_value:
            return f"too_little_evidence: sign test p = {self.p_value:.3g} > {acceptance.max_p_value}"
        return None

    def as_record(self) -> dict[str, Any]:
        return {"newly_ordered": self.newly_ordered, "no_longer_ordered": self.no_longer_ordered,
                "sign_test_p": round(self.p_value, 4)}
