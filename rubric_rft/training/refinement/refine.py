"""One prompt's online refinement: tail pairs from the policy's completions, gold preferences, a proposal, and the
acceptance test.

The pairs are great and diverse pairs among the completions graded with the current rubric
(`rubric_rft.rubricgen.selection`); the gold source orders each (ties and failures are left out). The
*agreement* of a rubric is the share of gold-ordered pairs it scores higher for the better response, a tie
counting `acceptance.tie_credit`. The tail's distinct answers are split at random (seeded) before any pair is
drawn: the proposer sees pairs of one part, the test is on pairs of the other, so no held-out answer was ever
shown. A proposal is accepted only when, on the held-out pairs, its agreement is strictly above the current
rubric's, it orders at least `acceptance.min_newly_ordered` more pairs correctly than the current rubric (pairs it
newly orders less those it no longer orders), and, with `acceptance.max_p_value`, a one-sided sign test over the
pairs whose credit changed passes. A proposer that picks the best of many criteria on a handful of pairs will often
find one that fits them by chance; the held-out answers catch it. A failed gold, grading or proposer call is
counted and reported, never read as a preference or an accepted edit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rubric_rft.judges.base import Judge
from rubric_rft.llm.costs import Costs
from rubric_rft.rubricgen.gold import Preference, ask_gold, gold_agreement, pair_credits
from rubric_rft.rubricgen.records import Candidate
from rubric_rft.rubricgen.scoring import score_responses
from rubric_rft.rubricgen.selection import Scored, SelectedPair, SelectionConfig, select_pairs, tail
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


def sign_test_p(improved: int, worsened: int) -> float:
    """One-sided sign test: the chance of at least `improved` of `improved + worsened` changed pairs improving if
    improving and worsening were equally likely (1.0 when nothing changed)."""
    changed = improved + worsened
    return sum(math.comb(changed, k) for k in range(improved, changed + 1)) / 2**changed


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
    shown_pairs, held_pairs = split_tail_pairs(
        scored_candidates(prompt_id, entries), selection, acceptance.holdout_fraction, seed
    )
    if not shown_pairs or not held_pairs:
        return Outcome({**record, "status": "skipped", "reason": "no_pairs"})
    pairs = shown_pairs if acceptance.holdout_fraction == 0 else shown_pairs + held_pairs
    uses = [["proposal", "test"]] * len(pairs) if acceptance.holdout_fraction == 0 else (
        [["proposal"]] * len(shown_pairs) + [["test"]] * len(held_pairs))
    if gold_calls_left is not None and len(pairs) > gold_calls_left:
        return Outcome({**record, "status": "skipped", "reason": "gold_budget"})
    judged = await ask_gold(gold, prompt_id, prompt, pairs, lambda c: c.response)
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
    in_all = len(shown) if acceptance.holdout_fraction == 0 else len(shown) + len(held_out)
    if in_all < acceptance.min_pairs:
        return _finish(outcome, "skipped", f"too_few_pairs: {in_all} < {acceptance.min_pairs}")
    if not shown or not held_out:
        return _finish(outcome, "skipped", f"too_few_pairs: none to {'show' if not shown else 'test on'}")
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
        proposal = await proposer.propose(prompt_id, prompt, rubric, shown, agreement_on_shown, fit_before)
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


@dataclass(frozen=True)
class Evidence:
    """How a proposal changed the held-out pairs: pairs it orders that the current rubric did not, pairs the
    current rubric ordered that it no longer does, and the pairs whose credit rose or fell (for the sign test)."""

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


def _finish(outcome: Outcome, status: str, reason: str) -> Outcome:
    outcome.record.update(status=status, reason=reason)
    return outcome
