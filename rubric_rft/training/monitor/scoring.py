"""Score one evaluation's samples with the proxy and the gold, and summarise them as one history record.

The proxy is the training reward (the held-out rows' own rubrics, graded like in training); the gold is a
separate evaluator: a gold rubric per prompt (graded by its own judge) and/or a pairwise gold judge's win rate
against the starting policy's samples. Samples that a grader failed on are counted and left out of that
grader's figures, never scored as zero.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rubric_rft.reward.rubric_reward import GradedCompletion, criterion_stats
from rubric_rft.stats import bootstrap_mean, rank_correlation

# A criterion that (nearly) every sample passes no longer separates the tail.
SATURATED_PASS_RATE = 0.95


def summarize(
    step: int,
    prompt_ids: Sequence[str],
    proxy: Sequence[GradedCompletion],
    gold: Sequence[GradedCompletion] | None,
    win_rate: dict[str, Any] | None,
    kl: Sequence[float],
    lengths: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    """One history record: means with bootstrap intervals over prompts, and the tail diagnostics."""
    record: dict[str, Any] = {"step": step}
    proxy_scores = [g.score for g in proxy]
    record.update(_mean_over_prompts("proxy", prompt_ids, proxy_scores, seed))
    record["proxy_failures"] = sum(s is None for s in proxy_scores)
    if gold is not None:
        gold_scores = [g.score for g in gold]
        record.update(_mean_over_prompts("gold", prompt_ids, gold_scores, seed))
        record["gold_failures"] = sum(s is None for s in gold_scores)
        both = [(p, g) for p, g in zip(proxy_scores, gold_scores, strict=True) if p is not None and g is not None]
        record["proxy_gold_rank_corr"] = rank_correlation([p for p, _ in both], [g for _, g in both])
    if win_rate is not None:
        record.update(win_rate)
    record["kl"] = statistics.fmean(kl)
    record["completion_length"] = statistics.fmean(lengths)
    record["within_group_reward_std"] = _within_group_std(prompt_ids, proxy_scores)
    record.update(_pass_rates(prompt_ids, proxy))
    return record


def _mean_over_prompts(name: str, prompt_ids: Sequence[str], scores: Sequence[float | None], seed: int) -> dict:
    by_prompt = _group(prompt_ids, scores)
    if not by_prompt:
        return {name: None, f"{name}_ci_low": None, f"{name}_ci_high": None}
    return bootstrap_mean([statistics.fmean(v) for v in by_prompt.values()], seed=seed).as_dict(name)


def _within_group_std(prompt_ids: Sequence[str], scores: Sequence[float | None]) -> float | None:
    """Mean over prompts of the spread of their samples' proxy scores: GRPO's learning signal."""
    spreads = [statistics.pstdev(v) for v in _group(prompt_ids, scores).values() if len(v) > 1]
    return statistics.fmean(spreads) if spreads else None


def _group(prompt_ids: Sequence[str], scores: Sequence[float | None]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for prompt_id, score in zip(prompt_ids, scores, strict=True):
        if score is not None:
            groups[prompt_id].append(score)
    return dict(groups)


def _pass_rates(prompt_ids: Sequence[str], graded: Sequence[GradedCompletion]) -> dict[str, float]:
    """The pooled pass rates of `criterion_stats`, and the share of saturated criteria, each criterion counted
    within its prompt and rubric version: ids such as `c1` repeat across prompts and name unrelated criteria."""
    outcomes: dict[tuple[str, int, str], list[bool]] = defaultdict(list)
    for prompt_id, g in zip(prompt_ids, graded, strict=True):
        if g.error is None and g.rubric is not None:
            for criterion_id, satisfied in g.satisfied.items():
                outcomes[(prompt_id, g.rubric.version, criterion_id)].append(bool(satisfied))
    record = criterion_stats(graded)
    if outcomes:
        rates = [sum(v) / len(v) for v in outcomes.values()]
        record["saturated_criteria"] = sum(r >= SATURATED_PASS_RATE for r in rates) / len(rates)
    return record
