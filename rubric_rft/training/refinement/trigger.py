"""Which prompts a refinement step looks at, and why: a rubric that no longer separates the policy's answers.

Three signals, each from the completions graded with the prompt's *current* rubric (older grades say nothing
about it):
- saturation: the `top_k` best completions all score at least `min_score`: the rubric has nothing left to ask;
- collapsed spread: the last groups' rewards barely differ (GRPO's advantage is then zero) at a high mean;
- broad signals, which make every prompt with enough completions a candidate: the monitor's divergence (on
  held-out prompts the proxy rose while the gold fell: over-optimization in progress), or, gold-free, pooled
  saturation (most of the prompts answered lately have saturated rubrics: the policy is saturating them broadly,
  and the prompts not answered lately are likely saturated too), or a scheduled step (`schedule.steps`: refine
  every prompt early, while the policy's answers still differ);
- stuck: flat groups at any mean. Its buffered answers are too alike to pair, so the callback samples the prompt
  hotter first (`rubric_rft.training.refinement.fresh.stuck_prompts`) and the round refines it on those answers.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rubric_rft.training.refinement.config import RefinementConfig
from rubric_rft.training.refinement.tail_buffer import Entry, TailBuffer


@dataclass(frozen=True)
class Trigger:
    """Why a prompt is (or is not) a candidate: `reason` is a trigger name when `fired`, else why not."""

    fired: bool
    reason: str


def saturated(entries: Sequence[Entry], top_k: int, min_score: float) -> bool:
    top = sorted((e.score for e in entries), reverse=True)[:top_k]
    return len(top) == top_k and all(score >= min_score for score in top)


def spread_collapsed(entries: Sequence[Entry], groups: int, max_std: float, min_mean: float) -> bool:
    """The last `groups` groups (completions graded at one step, two or more) are flat and high."""
    by_step: dict[int, list[float]] = {}
    for entry in entries:
        by_step.setdefault(entry.step, []).append(entry.score)
    recent = [scores for _, scores in sorted(by_step.items()) if len(scores) >= 2][-groups:]
    return len(recent) == groups and all(
        statistics.pstdev(scores) <= max_std and statistics.fmean(scores) >= min_mean for scores in recent
    )


def monitor_diverging(history: Sequence[Mapping[str, Any]], window: int) -> bool:
    """Over the last `window` evaluations with proxy and gold: proxy up, gold down (first to last)."""
    scored = [r for r in history if r.get("proxy") is not None and _gold(r) is not None][-window:]
    if len(scored) < window:
        return False
    first, last = scored[0], scored[-1]
    return last["proxy"] > first["proxy"] and _gold(last) < _gold(first)


def pooled_saturation(buffer: TailBuffer, versions: Mapping[str, int], step: int, config: RefinementConfig) -> bool:
    """Among the prompts answered in the last `pooled.window_steps` steps (at least `pooled.min_prompts`), a share of
    at least `pooled.min_share` is saturated; `versions` are the prompts' current rubric versions."""
    pooled, sat = config.pooled, config.saturation
    recent = [prompt_id for prompt_id in buffer.prompt_ids() if prompt_id in versions
              and max(e.step for e in buffer.entries(prompt_id)) > step - pooled.window_steps]
    if len(recent) < pooled.min_prompts:
        return False
    full = sum(saturated(buffer.entries(p, versions[p]), sat.top_k, sat.min_score) for p in recent)
    return full >= pooled.min_share * len(recent)


def _gold(record: Mapping[str, Any]) -> float | None:
    return record.get("gold") if record.get("gold") is not None else record.get("win_rate")


def check(entries: Sequence[Entry], config: RefinementConfig, broad: str | None = None,
          stuck: bool = False) -> Trigger:
    """Whether a prompt with these current-version `entries` is a candidate; `broad` names a broad signal that
    fired at this step (`monitor_divergence`, `pooled_saturation`, `schedule`), None when none did; `stuck`: the
    prompt was stuck and answered afresh for this step."""
    if len(entries) < config.min_completions:
        return Trigger(False, "too_few_completions")
    if stuck:  # answered afresh for being stuck: say so, whatever else holds
        return Trigger(True, "stuck")
    sat = config.saturation
    if sat.enabled and saturated(entries, sat.top_k, sat.min_score):
        return Trigger(True, "saturation")
    spread = config.spread
    if spread.enabled and spread_collapsed(entries, spread.groups, spread.max_std, spread.min_mean):
        return Trigger(True, "collapsed_spread")
    if broad is not None:
        return Trigger(True, broad)
    return Trigger(False, "not_saturated")
