"""Pooled proposal: one criterion chosen on the pooled evidence of many prompts, tested on other prompts, given to
every prompt.

Per-prompt refinement needs `acceptance.min_pairs` gold-ordered pairs among one prompt's answers, and a policy's
early answers are often too alike for that: on the 40-prompt reproduction a sweep over every prompt at step 4 found
fewer than 6 ordered pairs on most prompts, and nothing was accepted. Evidence that is thin per prompt is plenty
pooled: when a broad trigger fires (`monitor`, `pooled`, `schedule`), the prompts with `min_completions` buffered
answers are split at random into a proposal half and a test half. Each prompt's answers are regraded with its
current rubric, paired (`selection`) and ordered by the gold. For each criterion id the proposer's bank offers, each
proposal prompt gets its own instance (`Proposer.instance`); the id whose instances order the proposal half's
pooled pairs best (above the rubrics) is chosen, then tested on the test half's pooled pairs, which nothing chose
on, under `acceptance`. A criterion that passes orders pairs of prompts it was not chosen on: it goes to every
prompt that has an instance of it, answered lately or not. One a round; a criterion rejected now may be chosen
again at a later round, on newer answers. Needs the bank proposer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rubric_rft.judges.base import Judge
from rubric_rft.llm.costs import Costs
from rubric_rft.rubricgen.acceptance import Evidence
from rubric_rft.rubricgen.gold import Preference, ask_gold, pair_credits
from rubric_rft.rubricgen.selection import Scored
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.rubrics.store import RubricUpdate
from rubric_rft.training.refinement.config import RefinementConfig
from rubric_rft.training.refinement.tail_buffer import TailBuffer
from rubric_rft.training.refinement.transfer import credits_with, tail_pairs


@dataclass
class Ordered:
    """One prompt's gold-ordered (better, worse) pairs of its buffered answers."""

    prompt_id: str
    directed: list[tuple[Scored, Scored]]


async def propose_pooled(
    step: int,
    candidates: Sequence[str],
    buffer: TailBuffer,
    rubrics: Mapping[str, Rubric],
    prompts: Mapping[str, str],
    config: RefinementConfig,
    *,
    gold: Preference,
    proposer,
    judge: Judge | None,
    gold_calls_left: int | None,
) -> tuple[dict[str, Any], list[RubricUpdate], int]:
    """Choose on half of `candidates` (prompt ids), test on the other half, apply to every prompt of `rubrics` with
    an instance. Returns the record, the updates when accepted, and the gold calls spent."""
    record: dict[str, Any] = {"step": step, "prompt_id": None, "pooled_proposal": True}
    if getattr(proposer, "bank", None) is None:
        return {**record, "status": "skipped", "reason": "needs a bank of candidate criteria (proposer: bank)"}, [], 0
    costs = Costs()
    pairs, failed = await tail_pairs(step, candidates, buffer, rubrics, prompts, config, judge, costs, "pooled:")
    if failed:
        return {**record, "status": "error", "reason": f"regrading the answers of {', '.join(failed)} failed",
                "judge_calls": costs.calls}, [], 0
    spent = sum(len(chosen) for chosen in pairs.values())
    if gold_calls_left is not None and spent > gold_calls_left:
        return {**record, "status": "skipped", "reason": "gold_budget"}, [], 0
    judged = await asyncio.gather(*(ask_gold(gold, p, prompts[p], chosen, lambda c: c.response)
                                    for p, chosen in pairs.items() if chosen))
    ordered = [Ordered(p, j.ordered)
               for p, j in zip([p for p, chosen in pairs.items() if chosen], judged, strict=True) if j.ordered]
    shuffled = sorted(o.prompt_id for o in ordered)
    random.Random(f"{config.seed}:{step}:pooled").shuffle(shuffled)
    proposal_half = set(shuffled[:len(shuffled) // 2])
    choose_on = [o for o in ordered if o.prompt_id in proposal_half]
    test_on = [o for o in ordered if o.prompt_id not in proposal_half]
    record.update(proposal_prompts=sorted(o.prompt_id for o in choose_on),
                  test_prompts=sorted(o.prompt_id for o in test_on),
                  gold_failures=sum(len(j.errors) for j in judged))
    shown = sum(len(o.directed) for o in choose_on)
    held_out = sum(len(o.directed) for o in test_on)
    if min(shown, held_out) < config.acceptance.min_pairs:
        reason = f"too_few_pairs: {shown} shown, {held_out} held out < {config.acceptance.min_pairs}"
        return {**record, "status": "skipped", "reason": reason, "judge_calls": costs.calls}, [], spent
    ids = list(dict.fromkeys(c.id for o in choose_on for c in proposer.bank.get(o.prompt_id, [])))
    tried: dict[str, float | None] = {}
    best: tuple[float, str] | None = None
    for criterion_id in ids:
        credits = await _pooled_credits(choose_on, criterion_id, rubrics, prompts, proposer, judge, config, costs)
        if credits is None:
            tried[criterion_id] = None
            continue
        before, after = credits
        gain = sum(after) - sum(before)
        tried[criterion_id] = gain
        if gain > 0 and (best is None or gain > best[0]):
            best = (gain, criterion_id)
    record.update(tried=tried)
    if best is None:
        return {**record, "status": "rejected", "reason": "no_proposal", "judge_calls": costs.calls}, [], spent
    chosen_id = best[1]
    record["criterion"] = chosen_id
    credits = await _pooled_credits(test_on, chosen_id, rubrics, prompts, proposer, judge, config, costs)
    record["judge_calls"] = costs.calls
    if credits is None:
        return {**record, "status": "error", "reason": "grading the held-out pairs failed"}, [], spent
    before, after = credits
    evidence = Evidence.between(before, after)
    record.update(agreement_before=sum(before) / len(before), agreement_after=sum(after) / len(after),
                  held_out_pairs=len(before), **evidence.as_record())
    refusal = evidence.refusal(config.acceptance)
    if refusal is not None:
        return {**record, "status": "rejected", "reason": refusal}, [], spent
    reason = (f"added {chosen_id!r}: chosen on the pooled pairs of {len(choose_on)} prompts, agreement with the gold "
              f"{record['agreement_after']:.2f} on {len(before)} pairs of {len(test_on)} other prompts (the rubrics: "
              f"{record['agreement_before']:.2f})")
    updates = []
    for prompt_id, rubric in rubrics.items():
        instance = _instance(proposer, prompt_id, chosen_id, rubric)
        if instance is not None:
            updates.append(RubricUpdate(prompt_id, rubric.model_copy(update={"criteria": [*rubric.criteria,
                                                                                         instance]}), step, reason))
    record.update(status="accepted", reason="improved_pooled_agreement", changes=len(updates), gold_calls=spent)
    return record, updates, spent


async def _pooled_credits(ordered: Sequence[Ordered], criterion_id: str, rubrics: Mapping[str, Rubric],
                          prompts: Mapping[str, str], proposer, judge: Judge | None, config: RefinementConfig,
                          costs: Costs) -> tuple[list[float], list[float]] | None:
    """Pair credits before and after adding each prompt's instance of `criterion_id` (a prompt without one keeps
    its rubric), pooled over `ordered`; None when a grade failed."""
    tie = config.acceptance.tie_credit
    before, after = [], []
    for prompt in ordered:
        rubric = rubrics[prompt.prompt_id]
        instance = _instance(proposer, prompt.prompt_id, criterion_id, rubric)
        if instance is None:
            unchanged = pair_credits(prompt.directed, tie_credit=tie)
            credits = (unchanged, unchanged)
        else:
            credits = await credits_with(judge, prompts[prompt.prompt_id], rubric, instance, prompt.directed, tie,
                                         costs)
            if credits is None:
                return None
        before += credits[0]
        after += credits[1]
    return before, after


def _instance(proposer, prompt_id: str, criterion_id: str, rubric: Rubric) -> Criterion | None:
    """The prompt's own criterion of this id from the bank, or None (none in its bank, or its rubric has one)."""
    if criterion_id in {c.id for c in rubric.criteria}:
        return None
    return proposer.instance(prompt_id, Criterion(id=criterion_id, text=criterion_id, weight=1))
