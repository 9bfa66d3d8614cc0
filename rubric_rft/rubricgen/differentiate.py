"""One step of progressive differentiation for one prompt: tail pairs, gold preferences, a proposal, and the
acceptance test. Offline refinement (`rubric_rft.rubricgen.refine`, a fixed candidate set) and online refinement
(`rubric_rft.training.refinement.rounds`, the policy's buffered answers) both call `refine_prompt`, so a change
is kept by the same rule whichever loop proposed it.

The pairs are great and diverse pairs among the answers graded with the current rubric
(`rubric_rft.rubricgen.selection`); the gold source orders each (ties and failures are left out). The
*agreement* of a rubric is the share of gold-ordered pairs it scores higher for the better response, a tie
counting `acceptance.tie_credit`. The tail's distinct answers are split at random (seeded) before any pair is
drawn: the proposer sees pairs of one part, the test is on pairs of the other, so no held-out answer was ever
shown (`acceptance.holdout_fraction` 0: both are the same pairs, and the test asks that the change, as the judge
actually grades it, orders the pairs it was made for better). A proposal is accepted only when it passes
`rubric_rft.rubricgen.acceptance.Evidence.refusal` on the test pairs. With `separated_at`, a rubric that already
orders that share of all gold-ordered pairs strictly (a tie a miss) is left alone: no proposal. A failed gold,
grading or proposer call is counted and reported, never read as a preference or an accepted edit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rubric_rft.judges.base import Judge
from rubric_rft.llm.costs import Costs
from rubric_rft.rubricgen.acceptance import Acceptance, Evidence
from rubric_rft.rubricgen.gold import Preference, ask_gold, gold_agreement, pair_credits
from rubric_rft.rubricgen.proposer import DirectedPair, Proposer
from rubric_rft.rubricgen.records import Candidate
from rubric_rft.rubricgen.scoring import score_responses
from rubric_rft.rubricgen.selection import Scored, SelectedPair, SelectionConfig, select_pairs, tail
from rubric_rft.rubrics.format import Criterion, Rubric


@dataclass
class Outcome:
    """What refining one prompt did: `record` (its `status` and `reason`, the pairs, the evidence); `criteria` and
    `reason` when accepted."""

    record: dict[str, Any]
    criteria: list[Criterion] | None = None
    reason: str | None = None
    gold_calls: int = 0
    proposer: Costs = field(default_factory=Costs)

    @property
    def accepted(self) -> bool:
        return self.criteria is not None


def split_tail_pairs(
    scored: Sequence[Scored], selection: SelectionConfig, holdout_fraction: float, seed: str
) -> tuple[list[SelectedPair], list[SelectedPair]]:
    """Pairs to show the proposer and pairs to test on, drawn from disjoint sets of answers: the tail's answers are
    shuffled (seeded) and `holdout_fraction` of them (at least 2, leaving at least 2) held out, and each part gets
    its share of `selection.num_pairs` within itself. With `holdout_fraction` 0, both are the same pairs."""
    if holdout_fraction == 0:
        pairs = select_pairs(scored, selection, seed=seed)
        return pairs, pairs
    answers = sorted(tail(scored, selection.tail_fraction, selection.min_tail), key=lambda s: s.candidate.key)
    if len(answers) < 4 or selection.num_pairs < 2:
        return [], []
    random.Random(f"holdout:{seed}").shuffle(answers)
    held = min(len(answers) - 2, max(2, round(holdout_fraction * len(answers))))
    held_pairs = min(selection.num_pairs - 1, max(1, round(holdout_fraction * selection.num_pairs)))
    whole_part = {"tail_fraction": 1.0, "min_tail": 2}  # each part is already the tail

    def pairs_of(part: list[Scored], count: int, name: str) -> list[SelectedPair]:
        config = selection.model_copy(update={**whole_part, "num_pairs": count})
        return select_pairs(part, config, seed=f"{seed}:{name}")

    return (pairs_of(answers[held:], selection.num_pairs - held_pairs, "shown"),
            pairs_of(answers[:held], held_pairs, "held"))


async def pair_scores(judge: Judge | None, prompt: str, rubric: Rubric, pairs: Sequence[DirectedPair],
                      costs: Costs) -> dict[str, float] | None:
    """The raw scores `rubric` gives the pairs' distinct answers, by text, its judge calls added to `costs`; None
    when a grade failed (a failed grade is never a score)."""
    texts = list(dict.fromkeys(t for b, w in pairs for t in (b.candidate.response, w.candidate.response)))
    grades = await score_responses(judge, prompt, rubric, texts)
    costs.calls += sum(g.judge_calls for g in grades)
    if any(g.error for g in grades):
        return None
    return dict(zip(texts, (g.score for g in grades), strict=True))


async def refine_prompt(
    prompt_id: str,
    prompt: str,
    rubric: Rubric,
    scored: Sequence[Scored],
    *,
    gold: Preference,
    proposer: Proposer,
    judge: Judge | None,
    selection: SelectionConfig,
    acceptance: Acceptance,
    seed: str,
    max_criteria: int | None = None,
    gold_calls_left: int | None = None,
    separated_at: float | None = None,
    name: Callable[[Candidate], str] = lambda candidate: candidate.response,
) -> Outcome:
    """Refine `rubric` on `scored` (distinct answers graded with it), as the module docstring says. `name` says how
    an answer is named in the pair records; `max_criteria` and `gold_calls_left` None: no cap."""
    record: dict[str, Any] = {"prompt_id": prompt_id, "rubric_in": rubric.id, "version_in": rubric.version}
    shown_pairs, held_pairs = split_tail_pairs(scored, selection, acceptance.holdout_fraction, seed)
    if not shown_pairs or not held_pairs:
        return Outcome({**record, "status": "skipped", "reason": "no_pairs"})
    pairs = shown_pairs if acceptance.holdout_fraction == 0 else shown_pairs + held_pairs
    uses = [["proposal", "test"]] * len(pairs) if acceptance.holdout_fraction == 0 else (
        [["proposal"]] * len(shown_pairs) + [["test"]] * len(held_pairs))
    if gold_calls_left is not None and len(pairs) > gold_calls_left:
        return Outcome({**record, "status": "skipped", "reason": "gold_budget"})
    judged = await ask_gold(gold, prompt_id, prompt, pairs, name)
    outcome = Outcome(record, gold_calls=len(pairs))
    record["pairs"] = judged.records
    record["gold_failures"] = len(judged.errors)
    shown: list[DirectedPair] = []
    held_out: list[DirectedPair] = []
    for pair_rec, directed, use in zip(record["pairs"], judged.directed, uses, strict=True):
        if directed is None:
            continue
        pair_rec["use"] = use
        if "proposal" in use:
            shown.append(directed)
        if "test" in use:
            held_out.append(directed)
    if not shown and not held_out:
        reason = "gold_failed" if record["gold_failures"] else "gold_ties"
        return _finish(outcome, "error" if record["gold_failures"] else "skipped", reason)
    if separated_at is not None:
        record["agreement"] = gold_agreement(judged.ordered)
        if record["agreement"] >= separated_at:
            return _finish(outcome, "separated", "agreement_threshold")
    in_all = len(judged.ordered)
    if in_all < acceptance.min_pairs:
        return _finish(outcome, "skipped", f"too_few_pairs: {in_all} < {acceptance.min_pairs}")
    if not shown or not held_out:
        return _finish(outcome, "skipped", f"too_few_pairs: none to {'show' if not shown else 'test on'}")
    return await _propose_and_test(outcome, prompt, rubric, shown, held_out, proposer=proposer, judge=judge,
                                   acceptance=acceptance, max_criteria=max_criteria)


async def _propose_and_test(outcome: Outcome, prompt: str, rubric: Rubric, shown: list[DirectedPair],
                            held_out: list[DirectedPair], *, proposer: Proposer, judge: Judge | None,
                            acceptance: Acceptance, max_criteria: int | None) -> Outcome:
    """Ask the proposer on the `shown` pairs and test its change on the `held_out` ones."""
    record = outcome.record
    judge_costs = Costs()

    async def agreement_on_shown(candidate: Rubric) -> float | None:
        score = await pair_scores(judge, prompt, candidate, shown, judge_costs)
        if score is None:
            return None
        return gold_agreement(shown, lambda s: score[s.candidate.response], acceptance.tie_credit)

    fit_before = gold_agreement(shown, tie_credit=acceptance.tie_credit)
    before = pair_credits(held_out, tie_credit=acceptance.tie_credit)
    record.update(fit_before=fit_before, agreement_before=sum(before) / len(before))
    try:
        proposal = await proposer.propose(record["prompt_id"], prompt, rubric, shown, agreement_on_shown, fit_before)
    finally:
        record["judge_calls"] = judge_costs.calls
    outcome.proposer = proposal.costs
    record.update(proposer=proposer.name, proposer_costs=proposal.costs.counts(), edit=proposal.edit,
                  proposal_reason=proposal.reason)
    if proposal.error is not None:
        return _finish(outcome, "error", proposal.error)
    if proposal.criteria is None:
        return _finish(outcome, "rejected", "no_proposal")
    if max_criteria is not None and len(proposal.criteria) > max_criteria:
        return _finish(outcome, "rejected", f"max_criteria: {len(proposal.criteria)} > {max_criteria}")
    score = await pair_scores(judge, prompt, rubric.model_copy(update={"criteria": proposal.criteria}), held_out,
                              judge_costs)
    record["judge_calls"] = judge_costs.calls
    if score is None:
        return _finish(outcome, "error", "grading the proposed rubric failed")
    after = pair_credits(held_out, lambda s: score[s.candidate.response], acceptance.tie_credit)
    evidence = Evidence.between(before, after)
    record.update(agreement_after=sum(after) / len(after), **evidence.as_record())
    refusal = evidence.refusal(acceptance)
    if refusal is not None:
        return _finish(outcome, "rejected", refusal)
    outcome.criteria, outcome.reason = proposal.criteria, proposal.reason
    return _finish(outcome, "accepted", "improved_agreement")


def _finish(outcome: Outcome, status: str, reason: str) -> Outcome:
    outcome.record.update(status=status, reason=reason)
    return outcome
