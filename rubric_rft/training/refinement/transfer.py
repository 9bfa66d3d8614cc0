"""Transfer: a criterion accepted on some prompts, offered to the others and tested on their pooled pairs.

Per-prompt refinement changes a prompt's rubric only after the policy has answered it under that rubric, and
with many prompts a prompt comes back once an epoch: slower than a policy collapses onto a loophole that every
prompt's rubric shares. When `transfer.min_accepted` prompts have accepted a criterion (by id), every other prompt
with `min_completions` buffered answers gets its own instance of it (`Proposer.instance`: for a bank, the bank's
criterion of that id for the prompt) and the change is tested on all of them together: each prompt's tail pairs
(its buffered answers regraded with its current rubric) ordered by the gold. No pair was shown to anyone, so all
of them are held out; the pooled credits pass or fail `acceptance` as one pooled change, which then goes to every
tested prompt with an ordered pair. A prompt is offered a criterion once (`RefinementState.transfers`); prompts
answered later are offered it at a later round. One record in `refinements.jsonl` says which prompts, the pooled
evidence, and the cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rubric_rft.judges.base import Judge
from rubric_rft.llm.costs import Costs
from rubric_rft.rubricgen.acceptance import Evidence
from rubric_rft.rubricgen.differentiate import pair_scores
from rubric_rft.rubricgen.gold import Preference, ask_gold, pair_credits
from rubric_rft.rubricgen.proposer import Proposer
from rubric_rft.rubricgen.scoring import score_responses
from rubric_rft.rubricgen.selection import Scored, select_pairs
from rubric_rft.rubrics.format import Criterion, Rubric
from rubric_rft.rubrics.store import RubricUpdate
from rubric_rft.training.refinement.config import RefinementConfig
from rubric_rft.training.refinement.tail_buffer import TailBuffer, scored_candidates


@dataclass
class Tested:
    """One target prompt's part of a transfer: its pairs' records, and its credits before and after."""

    prompt_id: str
    rubric: Rubric
    instance: Criterion
    pairs: list[dict[str, Any]]
    before: list[float]
    after: list[float]
    error: str | None = None


async def transfer(
    step: int,
    criterion: Criterion,
    sources: Sequence[str],
    targets: Sequence[str],
    buffer: TailBuffer,
    rubrics: Mapping[str, Rubric],
    prompts: Mapping[str, str],
    config: RefinementConfig,
    *,
    gold: Preference,
    proposer: Proposer,
    judge: Judge | None,
    gold_calls_left: int | None,
) -> tuple[dict[str, Any], list[RubricUpdate], int]:
    """Offer `criterion` (accepted on `sources`) to `targets`; returns the record, the updates when accepted, and
    the gold calls spent."""
    record: dict[str, Any] = {"step": step, "prompt_id": None, "transfer": criterion.id, "sources": list(sources)}
    instances = {p: proposer.instance(p, criterion) for p in targets}
    offered = [p for p in targets if instances[p] is not None]
    judge_costs = Costs()
    pairs, failed = await tail_pairs(step, offered, buffer, rubrics, prompts, config, judge, judge_costs)
    record["judge_calls"] = judge_costs.calls
    if failed:
        return {**record, "status": "error", "reason": f"regrading the answers of {', '.join(failed)} failed"}, [], 0
    spent = sum(len(chosen) for chosen in pairs.values())
    if gold_calls_left is not None and spent > gold_calls_left:
        return {**record, "status": "skipped", "reason": "gold_budget"}, [], 0
    if not spent:
        return {**record, "status": "skipped", "reason": "no_pairs"}, [], 0
    tested = await asyncio.gather(*(
        _test(p, rubrics[p], instances[p], prompts[p], chosen, config, gold=gold, judge=judge, costs=judge_costs)
        for p, chosen in pairs.items() if chosen
    ))
    record["judge_calls"] = judge_costs.calls
    record.update(prompt_ids=[t.prompt_id for t in tested],
                  pairs=[{"prompt_id": t.prompt_id, **pair} for t in tested for pair in t.pairs])
    record["gold_failures"] = sum("error" in pair for pair in record["pairs"])
    failed = [f"{t.prompt_id}: {t.error}" for t in tested if t.error]
    if failed:
        return {**record, "status": "error", "reason": "; ".join(failed)}, [], spent
    evidence = [t for t in tested if t.before]
    before = [credit for t in evidence for credit in t.before]
    after = [credit for t in evidence for credit in t.after]
    if len(before) < config.acceptance.min_pairs:
        return {**record, "status": "skipped", "reason": f"too_few_pairs: {len(before)} < "
                                                         f"{config.acceptance.min_pairs}"}, [], spent
    pooled = Evidence.between(before, after)
    record.update(agreement_before=sum(before) / len(before), agreement_after=sum(after) / len(after),
                  **pooled.as_record())
    refusal = pooled.refusal(config.acceptance)
    if refusal is not None:
        return {**record, "status": "rejected", "reason": refusal}, [], spent
    reason = (f"transferred {criterion.id!r}, accepted on {', '.join(sources)}: pooled over {len(evidence)} prompts, "
              f"agreement with the gold {record['agreement_after']:.2f} on {len(before)} pairs (the rubrics: "
              f"{record['agreement_before']:.2f})")
    updates = [RubricUpdate(t.prompt_id, t.rubric.model_copy(update={"criteria": [*t.rubric.criteria, t.instance]}),
                            step, reason) for t in evidence]
    record.update(status="accepted", reason="improved_pooled_agreement", changes=len(updates))
    return record, updates, spent


async def tail_pairs(step: int, prompt_ids: Sequence[str], buffer: TailBuffer, rubrics: Mapping[str, Rubric],
                     prompts: Mapping[str, str], config: RefinementConfig, judge: Judge | None, costs: Costs,
                     tag: str = "") -> tuple[dict[str, list], list[str]]:
    """Each prompt's buffered answers regraded with its current rubric and paired (`selection`, seeded by step,
    `tag` and prompt), and the prompts whose regrading failed (no pairs for them)."""
    rescored = await asyncio.gather(*(regraded(p, buffer, rubrics[p], prompts[p], judge, costs) for p in prompt_ids))
    failed = [p for p, scored in zip(prompt_ids, rescored, strict=True) if scored is None]
    pairs = {p: select_pairs(scored, config.selection, seed=f"{config.seed}:{step}:{tag}{p}")
             for p, scored in zip(prompt_ids, rescored, strict=True) if scored is not None}
    return pairs, failed


async def regraded(prompt_id: str, buffer: TailBuffer, rubric: Rubric, prompt: str, judge: Judge | None,
                    costs: Costs) -> list[Scored] | None:
    """The prompt's buffered answers (any rubric version), scored with its current rubric; None if grading failed."""
    candidates = scored_candidates(prompt_id, buffer.entries(prompt_id))
    grades = await score_responses(judge, prompt, rubric, [c.candidate.response for c in candidates])
    costs.calls += sum(g.judge_calls for g in grades)
    if any(g.error for g in grades):
        return None
    return [Scored(c.candidate, g.score, g.normalized) for c, g in zip(candidates, grades, strict=True)]


async def _test(prompt_id: str, rubric: Rubric, instance: Criterion, prompt: str, chosen, config: RefinementConfig,
                *, gold: Preference, judge: Judge | None, costs: Costs) -> Tested:
    judged = await ask_gold(gold, prompt_id, prompt, chosen, lambda c: c.response)
    directed = judged.ordered
    tested = Tested(prompt_id, rubric, instance, judged.records, [], [])
    if not directed:
        return tested
    credits = await credits_with(judge, prompt, rubric, instance, directed, config.acceptance.tie_credit, costs)
    if credits is None:
        tested.error = "grading with the transferred criterion failed"
        return tested
    tested.before, tested.after = credits
    return tested


async def credits_with(judge: Judge | None, prompt: str, rubric: Rubric, instance: Criterion,
                       directed: Sequence[tuple[Scored, Scored]], tie_credit: float, costs: Costs
                       ) -> tuple[list[float], list[float]] | None:
    """The gold-ordered pairs' credits under `rubric`, and under `rubric` with `instance` added; None when grading
    with it failed."""
    proposed = rubric.model_copy(update={"criteria": [*rubric.criteria, instance]})
    score = await pair_scores(judge, prompt, proposed, directed, costs)
    if score is None:
        return None
    return (pair_credits(directed, tie_credit=tie_credit),
            pair_credits(directed, lambda s: score[s.candidate.response], tie_credit))
