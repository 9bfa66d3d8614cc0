"""One prompt's online refinement: tail pairs from the policy's completions, gold preferences, a proposal, and the
acceptance test.

The pairs are great and diverse pairs among the completions graded with the current rubric
(`rubric_rft.rubricgen.selection`); the gold source orders each (ties and failures are left out). The
*agreement* of a rubric is the share of gold-ordered pairs it scores higher for the better response, a tie
counting `acceptance.tie_credit`. The gold-ordered pairs are split at random (seeded): the proposer sees one part,
and its proposal is accepted only when its agreement on the other, held-out part is strictly above the current
rubric's. A proposer that picks the best of many criteria on a handful of pairs will often find one that fits them
by chance; the held-out pairs catch it. A failed gold, grading or proposer call is counted and reported, never read
as a preference or an accepted edit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rubric_rft.judges.base import Judge
from rubric_rft.llm.costs import Costs
from rubric_rft.rubricgen.gold import Preference, gold_agreement, ordered_by_gold, pair_record
from rubric_rft.rubricgen.records import Candidate
from rubric_rft.rubricgen.scoring import score_responses
from rubric_rft.rubricgen.selection import Scored, SelectionConfig, select_pairs
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.training.refinement.config import Acceptance
from rubric_rft.training.refinement.proposers import DirectedPair, Proposer
from rubric_rft.training.refinement.tail_buffer import Entry


@dataclass
class Outcome:
    """What refining one prompt did: `record` for refinements.jsonl; `criteria` and `reason` when accepted."""

    record: dict[str, Any]
    criteria: list[Criterion] | None = None
    reason: str | None = None
    gold_calls: int = 0
    proposer: Costs = field(default_factory=Costs)

    @property
    def accepted(self) -> bool:
        return self.criteria is not None


def scored_candidates(prompt_id: str, entries: Sequence[Entry]) -> list[Scored]:
    """The entries as `select_pairs` candidates, one per distinct text (the policy repeats itself)."""
    unique: dict[str, Entry] = {}
    for entry in entries:
        unique.setdefault(entry.text, entry)
    return [
        Scored(Candidate(prompt_id=prompt_id, generator="policy", index=index, response=entry.text),
               entry.raw, entry.score)
        for index, entry in enumerate(unique.values())
    ]


def split_pairs(count: int, holdout_fraction: float, seed: str) -> tuple[list[int], list[int]]:
    """Positions of `count` pairs (shown to the proposer, held out for the test): a seeded shuffle, at least one in
    each part when `holdout_fraction` > 0; with 0, both parts are every pair."""
    if holdout_fraction == 0:
        return list(range(count)), list(range(count))
    order = list(range(count))
    random.Random(f"holdout:{seed}").shuffle(order)
    held = min(count - 1, max(1, round(holdout_fraction * count)))
    return sorted(order[held:]), sorted(order[:held])


async def refine_prompt(
    prompt_id: str,
    prompt: str,
    rubric: Rubric,
    entries: Sequence[Entry],
    *,
    gold: Preference,
    proposer: Proposer,
    judge: Judge | None,
    selection: SelectionConfig,
    acceptance: Acceptance,
    max_criteria: int,
    gold_calls_left: int | None,
    seed: str,
) -> Outcome:
    """Refine `rubric` on `entries` (completions graded with it), as the module docstring says."""
    record: dict[str, Any] = {"prompt_id": prompt_id, "rubric_in": rubric.id, "version_in": rubric.version}
    pairs = select_pairs(scored_candidates(prompt_id, entries), selection, seed=seed)
    if not pairs:
        return Outcome({**record, "status": "skipped", "reason": "no_pairs"})
    if gold_calls_left is not None and len(pairs) > gold_calls_left:
        return Outcome({**record, "status": "skipped", "reason": "gold_budget"})
    preferences = await asyncio.gather(
        *(gold.prefer(prompt_id, prompt, p.first.candidate, p.second.candidate) for p in pairs)
    )
    outcome = Outcome(record, gold_calls=len(pairs))
    judged = list(zip(pairs, preferences, strict=True))
    record["pairs"] = [pair_record(pair, preferred, lambda c: c.response) for pair, preferred in judged]
    record["gold_failures"] = sum(p.error is not None for p in preferences)
    ordered = [(at, d) for at, d in enumerate(ordered_by_gold(pair, preferred) for pair, preferred in judged)
               if d is not None]
    directed = [d for _, d in ordered]
    if not directed:
        reason = "gold_failed" if record["gold_failures"] else "gold_ties"
        return _finish(outcome, "error" if record["gold_failures"] else "skipped", reason)
    if len(directed) < acceptance.min_pairs:
        return _finish(outcome, "skipped", f"too_few_pairs: {len(directed)} < {acceptance.min_pairs}")
    shown_at, held_at = split_pairs(len(directed), acceptance.holdout_fraction, seed)
    for part, use in ((shown_at, "proposal"), (held_at, "test")):
        for position in part:
            record["pairs"][ordered[position][0]].setdefault("use", []).append(use)
    shown, held_out = [directed[i] for i in shown_at], [directed[i] for i in held_at]
    judge_costs = Costs()

    def agreement_on(part: Sequence[DirectedPair]):
        async def agreement(candidate: Rubric) -> float | None:
            texts = list(dict.fromkeys(t for b, w in part for t in (b.candidate.response, w.candidate.response)))
            grades = await score_responses(judge, prompt, candidate, texts)
            judge_costs.calls += sum(g.judge_calls for g in grades)
            if any(g.error for g in grades):
                return None
            score = dict(zip(texts, (g.score for g in grades), strict=True))
            return gold_agreement(part, lambda s: score[s.candidate.response], acceptance.tie_credit)
        return agreement

    fit_before = gold_agreement(shown, tie_credit=acceptance.tie_credit)
    before = gold_agreement(held_out, tie_credit=acceptance.tie_credit)
    record.update(fit_before=fit_before, agreement_before=before)
    try:
        proposal = await proposer.propose(prompt_id, prompt, rubric, shown, agreement_on(shown), fit_before)
    finally:
        record["judge_calls"] = judge_costs.calls
    outcome.proposer = proposal.costs
    record.update(proposer=proposer.name, proposer_costs=proposal.costs.counts(), edit=proposal.edit,
                  proposal_reason=proposal.reason)
    if proposal.error is not None:
        return _finish(outcome, "error", proposal.error)
    if proposal.criteria is None:
        return _finish(outcome, "rejected", "no_proposal")
    if len(proposal.criteria) > max_criteria:
        return _finish(outcome, "rejected", f"max_criteria: {len(proposal.criteria)} > {max_criteria}")
    after = await agreement_on(held_out)(rubric.model_copy(update={"criteria": proposal.criteria}))
    record["judge_calls"] = judge_costs.calls
    if after is None:
        return _finish(outcome, "error", "grading the proposed rubric failed")
    record["agreement_after"] = after
    if after <= before:
        return _finish(outcome, "rejected", "no_improvement")
    outcome.criteria, outcome.reason = proposal.criteria, proposal.reason
    return _finish(outcome, "accepted", "improved_agreement")


def _finish(outcome: Outcome, status: str, reason: str) -> Outcome:
    outcome.record.update(status=status, reason=reason)
    return outcome
