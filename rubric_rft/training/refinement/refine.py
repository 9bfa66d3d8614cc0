"""One prompt's online refinement: tail pairs from the policy's completions, gold preferences, a proposal, and the
acceptance test.

The pairs are great and diverse pairs among the completions graded with the current rubric
(`rubric_rft.rubricgen.selection`); the gold source orders each (ties and failures are left out). The
*agreement* of a rubric is the share of gold-ordered pairs it scores strictly higher for the better response.
A proposal is accepted only when its agreement is strictly above the current rubric's: a change that orders the
policy's own best answers no better than before would only move the target. A failed gold, grading or proposer
call is counted and reported, never read as a preference or an accepted edit.
"""

from __future__ import annotations

import asyncio
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
from rubric_rft.training.refinement.proposers import Proposer
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
    directed = [d for d in (ordered_by_gold(pair, preferred) for pair, preferred in judged) if d is not None]
    if not directed:
        reason = "gold_failed" if record["gold_failures"] else "gold_ties"
        return _finish(outcome, "error" if record["gold_failures"] else "skipped", reason)
    judge_costs = Costs()

    async def agreement(candidate: Rubric) -> float | None:
        texts = list(dict.fromkeys(t for b, w in directed for t in (b.candidate.response, w.candidate.response)))
        grades = await score_responses(judge, prompt, candidate, texts)
        judge_costs.calls += sum(g.judge_calls for g in grades)
        if any(g.error for g in grades):
            return None
        score = dict(zip(texts, (g.score for g in grades), strict=True))
        return gold_agreement(directed, lambda s: score[s.candidate.response])

    before = gold_agreement(directed)
    record["agreement_before"] = before
    try:
        proposal = await proposer.propose(prompt_id, prompt, rubric, directed, agreement, before)
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
    after = await agreement(rubric.model_copy(update={"criteria": proposal.criteria}))
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
