"""A policy's win rate against a baseline under a pairwise judge, as the paper reports it.

The headline metric of rubric-reward training is the win rate of the trained policy against a baseline (the
starting policy, or reference answers) under a gold judge that never trained anything. Judges favour one
position more often than chance, so `win_rate` asks every pair in both orders and averages the two answers
from the candidate's view: a judge that only ever prefers the first position then scores every pair a tie.
A pair whose judging failed in either order is a failure, counted and left out: never a loss or a tie.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rubric_rft.llm.costs import Costs
from rubric_rft.pairwise.judges import PairVerdict, PairwiseJudge
from rubric_rft.reward.rubric_reward import as_rubric
from rubric_rft.rubrics.datasets import render_prompt
from rubric_rft.stats import Estimate, bootstrap_mean


@dataclass(frozen=True)
class PairItem:
    """`candidate` (the policy under test) against `baseline`, both answers to `prompt` (text or chat messages).
    `rubric` (a `Rubric`, its JSON or a dict) is what rubric judges compare by."""

    prompt_id: str
    prompt: str | list[dict[str, str]]
    candidate: str
    baseline: str
    rubric: Any = None


@dataclass
class PairOutcome:
    """A pair from the candidate's view: `outcome` is 1 for a win, 0 a loss, 0.5 a tie (0.25 and 0.75 when one
    order ties), None when either order failed. `candidate_first` / `candidate_second` is the candidate's share
    when it was shown first / second."""

    prompt_id: str
    outcome: float | None
    candidate_first: float | None
    candidate_second: float | None
    error: str | None = None

    @property
    def consistent(self) -> bool | None:
        """Whether both orders gave the same result; None for a failed pair."""
        return None if self.outcome is None else self.candidate_first == self.candidate_second


@dataclass
class WinRateResult:
    """Win rate over prompts with its bootstrap interval, and how the pairs went."""

    estimate: Estimate
    confidence: float
    wins: int
    ties: int
    losses: int
    failures: int
    position_consistency: float
    num_prompts: int
    pairs: list[PairOutcome] = field(default_factory=list)
    costs: Costs = field(default_factory=Costs)

    def as_dict(self, with_pairs: bool = True) -> dict[str, Any]:
        summary = {
            **self.estimate.as_dict("win_rate"),
            "confidence": self.confidence,
            "num_pairs": len(self.pairs),
            "num_prompts": self.num_prompts,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "failures": self.failures,
            "position_consistency": self.position_consistency,
            "judge_calls": self.costs.calls,
            "judge_retries": self.costs.retries,
            "judge_cache_hits": self.costs.cache_hits,
        }
        if with_pairs:
            summary["pairs"] = [asdict(pair) | {"consistent": pair.consistent} for pair in self.pairs]
        return summary


async def win_rate(
    judge: PairwiseJudge,
    items: Iterable[PairItem | Mapping[str, Any]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    on_pair: Callable[[PairOutcome], None] | None = None,
) -> WinRateResult:
    """The candidate's win rate against the baseline, every pair judged in both orders, all concurrently.

    The estimate is `bootstrap_mean` over prompts of each prompt's mean outcome (several items may share a
    prompt id). `on_pair` is called as each pair finishes (a progress bar, say).
    """
    judged = await judge_pairs(judge, items, on_pair)
    if not judged:
        raise ValueError("win_rate needs at least one item")
    return summarize_pairs(judged, confidence=confidence, resamples=resamples, seed=seed)


JudgedPair = tuple[PairOutcome, tuple[PairVerdict, PairVerdict]]


async def judge_pairs(
    judge: PairwiseJudge,
    items: Iterable[PairItem | Mapping[str, Any]],
    on_pair: Callable[[PairOutcome], None] | None = None,
) -> list[JudgedPair]:
    """Every pair judged in both orders, all concurrently, with the verdicts of both orders (for their costs).
    Pairs judged apart (each rank its share, say) are summed up together by `summarize_pairs`."""
    pairs = [_as_item(index, item) for index, item in enumerate(items)]
    return list(await asyncio.gather(*(_judge_pair(judge, item, on_pair) for item in pairs)))


def summarize_pairs(
    judged: list[JudgedPair], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> WinRateResult:
    """`win_rate`'s result from judged pairs."""
    outcomes = [outcome for outcome, _ in judged]
    verdicts = [verdict for _, both in judged for verdict in both]
    scored = [o for o in outcomes if o.outcome is not None]
    if not scored:
        raise RuntimeError(f"every one of the {len(outcomes)} pairs failed; first error: {outcomes[0].error}")
    per_prompt: dict[str, list[float]] = {}
    for outcome in scored:
        per_prompt.setdefault(outcome.prompt_id, []).append(outcome.outcome)
    means = [sum(values) / len(values) for values in per_prompt.values()]
    return WinRateResult(
        estimate=bootstrap_mean(means, confidence=confidence, resamples=resamples, seed=seed),
        confidence=confidence,
        wins=sum(o.outcome > 0.5 for o in scored),
        ties=sum(o.outcome == 0.5 for o in scored),
        losses=sum(o.outcome < 0.5 for o in scored),
        failures=len(outcomes) - len(scored),
        position_consistency=sum(bool(o.consistent) for o in scored) / len(scored),
        num_prompts=len(per_prompt),
        pairs=outcomes,
        costs=Costs.total(verdicts),
    )


async def judge_pair(judge: PairwiseJudge, item: PairItem | Mapping[str, Any]) -> PairOutcome:
    """One pair judged in both orders, from the candidate's view: what `win_rate` does for each of its items."""
    outcome, _ = await _judge_pair(judge, _as_item(0, item), None)
    return outcome


async def _judge_pair(
    judge: PairwiseJudge, item: PairItem, on_pair: Callable[[PairOutcome], None] | None
) -> JudgedPair:
    prompt = render_prompt(item.prompt)
    rubric = as_rubric(item.rubric) if item.rubric is not None else None
    forward, backward = await asyncio.gather(
        judge.compare(prompt, item.candidate, item.baseline, rubric),
        judge.compare(prompt, item.baseline, item.candidate, rubric),
    )
    first, second = _checked(judge, forward), _checked(judge, backward)
    candidate_second = None if second is None else 1.0 - second
    orders = (("candidate first", forward), ("candidate second", backward))
    failed = [f"{order}: {verdict.error}" for order, verdict in orders if not verdict.ok]
    outcome = None if failed else (first + candidate_second) / 2
    result = PairOutcome(item.prompt_id, outcome, first, candidate_second, "; ".join(failed) or None)
    if on_pair is not None:
        on_pair(result)
    return result, (forward, backward)


def _checked(judge: PairwiseJudge, verdict: PairVerdict) -> float | None:
    """The verdict's preference, after checking that it keeps the `PairVerdict` contract."""
    if (verdict.preference is None) == (verdict.error is None):
        raise ValueError(f"judge {judge.name} returned a PairVerdict with neither or both of preference and error")
    if verdict.preference is not None and not 0.0 <= verdict.preference <= 1.0:
        raise ValueError(f"judge {judge.name} returned preference {verdict.preference}, outside [0, 1]")
    return verdict.preference


def _as_item(index: int, item: PairItem | Mapping[str, Any]) -> PairItem:
    if isinstance(item, PairItem):
        return item
    missing = [name for name in ("prompt_id", "prompt", "candidate", "baseline") if name not in item]
    if missing:
        raise ValueError(f"win_rate item {index}: missing {', '.join(missing)}")
    return PairItem(str(item["prompt_id"]), item["prompt"], item["candidate"], item["baseline"], item.get("rubric"))
