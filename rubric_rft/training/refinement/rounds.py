"""A refinement round: which prompts are refined at this step, within which budgets, and what changes.

Every prompt in the buffer gets a decision with its reason: not triggered (too few completions under the current
rubric, not saturated), skipped (cooldown, rounds per prompt, no answer new since the last attempt, prompts per
round, gold or proposer budget, no pairs, too few pairs), or refined (accepted, rejected, error). Prompts are
looked at newest completions first (prompts answered for this round first of all, so the round's slots go to the
answers just paid for), in the order they were first buffered among equals, so a round is reproducible. Runs on
the main process; the counts it keeps (`RefinementState`) go into checkpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rubric_rft.judges.base import Judge
from rubric_rft.rubricgen.differentiate import refine_prompt
from rubric_rft.rubricgen.gold import Preference
from rubric_rft.rubricgen.proposer import Proposer
from rubric_rft.rubrics.store import RubricStore, RubricUpdate
from rubric_rft.training.refinement.config import Budgets, RefinementConfig
from rubric_rft.training.refinement.pooled_proposal import propose_pooled
from rubric_rft.training.refinement.tail_buffer import Entry, TailBuffer, scored_candidates
from rubric_rft.training.refinement.transfer import transfer
from rubric_rft.training.refinement.trigger import check


@dataclass
class RefinementState:
    """What the run has spent and decided so far; `step` is the last refinement step, `answers_tried` the answers
    (`answer_digests`) each prompt's last attempt was made on."""

    step: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    last_attempt: dict[str, int] = field(default_factory=dict)
    answers_tried: dict[str, list[str]] = field(default_factory=dict)
    accepted_criteria: dict[str, list[str]] = field(default_factory=dict)  # criterion id -> prompts that took it
    transfers: dict[str, list[str]] = field(default_factory=dict)  # criterion id -> prompts it was offered to
    gold_calls: int = 0
    proposer_calls: int = 0
    accepted: int = 0
    rejected: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Round:
    updates: list[RubricUpdate]
    records: list[dict[str, Any]]


async def run_round(
    step: int,
    buffer: TailBuffer,
    store: RubricStore,
    prompts: Mapping[str, str],
    state: RefinementState,
    config: RefinementConfig,
    *,
    gold: Preference,
    proposer: Proposer,
    judge: Judge | None,
    broad: str | None = None,
    stuck: Collection[str] = (),
) -> Round:
    """Decide and refine at `step`; `state` is updated in place. `prompts` maps prompt ids to their text; `broad`
    names the broad trigger that fired at this step, if any (`rubric_rft.training.refinement.trigger`); `stuck`
    are the stuck prompts answered afresh for this step."""
    state.step = step
    result = Round([], [])
    refined = 0
    for prompt_id in buffer.newest_first():
        if prompt_id not in store:
            continue
        rubric = store.rubric_for(prompt_id)
        entries = buffer.entries(prompt_id, version=rubric.version)
        trigger = check(entries, config, broad, stuck=prompt_id in stuck)
        base = {"step": step, "prompt_id": prompt_id, "completions": len(entries)}
        if not trigger.fired:
            result.records.append({**base, "status": "not_triggered", "reason": trigger.reason})
            continue
        base["trigger"] = trigger.reason
        skip = _budget_skip(prompt_id, step, refined, state, config, proposer, entries)
        if skip is not None:
            result.records.append({**base, "status": "skipped", "reason": skip})
            continue
        budgets = config.budgets
        outcome = await refine_prompt(
            prompt_id, prompts[prompt_id], rubric, scored_candidates(prompt_id, entries),
            gold=gold, proposer=proposer, judge=judge, selection=config.selection,
            acceptance=config.acceptance, max_criteria=budgets.max_criteria,
            gold_calls_left=None if budgets.max_gold_calls is None else budgets.max_gold_calls - state.gold_calls,
            seed=f"{config.seed}:{step}:{prompt_id}",
        )
        result.records.append({**base, **outcome.record})
        status = outcome.record["status"]
        if status == "skipped" and outcome.gold_calls == 0:
            continue
        refined += 1
        state.attempts[prompt_id] = state.attempts.get(prompt_id, 0) + 1
        state.last_attempt[prompt_id] = step
        state.answers_tried[prompt_id] = sorted(answer_digests(e.text for e in entries))
        state.gold_calls += outcome.gold_calls
        state.proposer_calls += outcome.proposer.calls
        state.errors += status == "error"
        state.rejected += status == "rejected"
        if outcome.accepted:
            state.accepted += 1
            new = rubric.model_copy(update={"criteria": outcome.criteria})
            result.updates.append(RubricUpdate(prompt_id, new, step, outcome.reason))
            old_ids = {c.id for c in rubric.criteria}
            for added in (c.id for c in outcome.criteria if c.id not in old_ids):
                state.accepted_criteria.setdefault(added, []).append(prompt_id)
    if config.pooled_proposal.enabled and broad is not None:
        await _propose_pooled(step, result, buffer, store, prompts, state, config, gold, proposer, judge)
    if config.transfer.enabled:
        await _transfer_accepted(step, result, buffer, store, prompts, state, config, gold, proposer, judge)
    return result


async def _propose_pooled(step: int, result: Round, buffer: TailBuffer, store: RubricStore,
                          prompts: Mapping[str, str], state: RefinementState, config: RefinementConfig,
                          gold: Preference, proposer: Proposer, judge: Judge | None) -> None:
    """One criterion on the pooled evidence of the prompts not changed in this round (`pooled_proposal`)."""
    changed = {u.prompt_id for u in result.updates}
    rubrics = {p: store.rubric_for(p) for p in prompts if p in store and p not in changed}
    candidates = [p for p in rubrics if len(buffer.entries(p, version=rubrics[p].version)) >= config.min_completions]
    if len(candidates) < config.pooled_proposal.min_prompts:
        result.records.append({"step": step, "prompt_id": None, "pooled_proposal": True, "status": "skipped",
                               "reason": f"too_few_prompts: {len(candidates)} < {config.pooled_proposal.min_prompts}"})
        return
    budget = config.budgets.max_gold_calls
    record, updates, spent = await propose_pooled(
        step, candidates, buffer, rubrics, prompts, config, gold=gold, proposer=proposer, judge=judge,
        gold_calls_left=None if budget is None else budget - state.gold_calls)
    result.records.append(record)
    state.gold_calls += spent
    state.errors += record["status"] == "error"
    state.rejected += record["status"] == "rejected"
    if record["status"] == "accepted":
        state.accepted += 1
        state.accepted_criteria.setdefault(record["criterion"], []).extend(u.prompt_id for u in updates)
    result.updates.extend(updates)


async def _transfer_accepted(step: int, result: Round, buffer: TailBuffer, store: RubricStore,
                             prompts: Mapping[str, str], state: RefinementState, config: RefinementConfig,
                             gold: Preference, proposer: Proposer, judge: Judge | None) -> None:
    """Offer each criterion accepted on enough prompts to the prompts it was not offered to yet."""
    rubrics = {p: store.rubric_for(p) for p in prompts if p in store}
    rubrics.update({u.prompt_id: u.rubric for u in result.updates})
    changed = {u.prompt_id for u in result.updates}
    for criterion_id, sources in state.accepted_criteria.items():
        if len(sources) < config.transfer.min_accepted:
            continue
        criterion = next(c for c in rubrics[sources[-1]].criteria if c.id == criterion_id)
        offered = set(state.transfers.get(criterion_id, []))
        targets = [p for p in rubrics if p not in changed and p not in sources and p not in offered
                   and criterion_id not in {c.id for c in rubrics[p].criteria}
                   and len(buffer.entries(p)) >= config.min_completions][:config.transfer.max_prompts]
        if not targets:
            continue
        budget = config.budgets.max_gold_calls
        record, updates, spent = await transfer(
            step, criterion, sources, targets, buffer, rubrics, prompts, config, gold=gold, proposer=proposer,
            judge=judge, gold_calls_left=None if budget is None else budget - state.gold_calls)
        result.records.append(record)
        state.transfers[criterion_id] = sorted(offered | set(record.get("prompt_ids", [])))
        state.gold_calls += spent
        state.errors += record["status"] == "error"
        state.rejected += record["status"] == "rejected"
        state.accepted += record["status"] == "accepted"
        result.updates.extend(updates)
        changed.update(u.prompt_id for u in updates)
        rubrics.update({u.prompt_id: u.rubric for u in updates})


def answer_digests(texts: Iterable[str]) -> set[str]:
    """Short content hashes of answers: which answers an attempt saw, compact enough for a checkpoint."""
    return {hashlib.sha1(text.encode()).hexdigest()[:12] for text in texts}


def all_tried(prompt_id: str, entries: Iterable[Entry], state: RefinementState) -> bool:
    """Whether the prompt's last attempt was made on every one of these answers (none of them is new)."""
    tried = state.answers_tried.get(prompt_id)
    return tried is not None and answer_digests(e.text for e in entries) <= set(tried)


def resting(prompt_id: str, step: int, state: RefinementState, budgets: Budgets) -> str | None:
    """Why `prompt_id` may not be attempted at `step`, whatever its answers (cooling down, out of rounds), or None."""
    last = state.last_attempt.get(prompt_id)
    if last is not None and step - last < budgets.cooldown_steps:
        return "cooldown"
    if state.attempts.get(prompt_id, 0) >= budgets.rounds_per_prompt:
        return "rounds_per_prompt"
    return None


def _budget_skip(prompt_id: str, step: int, refined: int, state: RefinementState, config: RefinementConfig,
                 proposer: Proposer, entries: list[Entry]) -> str | None:
    budgets = config.budgets
    rest = resting(prompt_id, step, state, budgets)
    if rest is not None:
        return rest
    if all_tried(prompt_id, entries, state):
        # every answer was there at the last attempt: trying again would only redraw the pairs and the split
        return "no_new_completions"
    if refined >= budgets.prompts_per_round:
        return "prompts_per_round"
    if budgets.max_gold_calls is not None and state.gold_calls >= budgets.max_gold_calls:
        return "gold_budget"
    if proposer.asks_model and budgets.max_proposer_calls is not None and (
            state.proposer_calls >= budgets.max_proposer_calls):
        return "proposer_budget"
    return None
