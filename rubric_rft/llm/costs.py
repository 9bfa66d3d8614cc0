"""What asking a model cost, counted the same way by every caller: judges, pairwise judges, the proposer and
response collection all return a `CallOutcome`, and every total is `Costs.total` of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields


@dataclass
class Costs:
    """`calls`: requests sent (retries included) or, for an in-process model, questions answered by a forward
    pass; `retries`: the extra attempts among them; `malformed`: answers that did not parse (each one re-asked, or
    the last try's failure); `cache_hits`: questions answered from the cache; `rate_limit_wait_s`: seconds requests
    waited for the endpoint's rate limits."""

    calls: int = 0
    retries: int = 0
    malformed: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate_limit_wait_s: float = 0.0

    def add(self, other: Costs) -> Costs:
        """Add `other`'s counts to these, in place; returns self."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @classmethod
    def total(cls, outcomes: Iterable[Costs | None]) -> Costs:
        """The sum over `outcomes` (None entries, such as a grade that asked no model, count nothing)."""
        total = cls()
        for outcome in outcomes:
            if outcome is not None:
                total.add(outcome)
        return total

    def counts(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in _COUNTS}


_COUNTS = tuple(f.name for f in fields(Costs))


@dataclass
class CallOutcome(Costs):
    """Costs plus, in `error`, why no answer came (retries exhausted, a refused request, a failed forward pass)."""

    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
