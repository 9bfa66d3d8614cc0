"""`RubricReward`: the TRL reward function that grades each completion against its prompt's rubric.

TRL awaits async reward functions on its own event loop, so every completion of a batch is graded
concurrently; the judge bounds how many requests are in flight. Rule criteria are checked in-process and
never cost a judge call. A completion whose llm criteria could not be graded after the judge's retries gets
`None`, which TRL masks out of its group, and is counted in the logged metrics: never a made-up score.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rubric_rft.data import completion_text, render_prompt
from rubric_rft.judges.base import GradeRequest, Judge, Verdict
from rubric_rft.llm.costs import Costs
from rubric_rft.rubric import Rubric
from rubric_rft.rules import grade_rules

# Per-criterion pass rates are logged by criterion id while a batch has at most this many distinct ids;
# beyond that, ids are prompt-specific and only the aggregates mean anything.
MAX_PER_CRITERION_METRICS = 32


@dataclass
class GradedCompletion:
    """The outcome of grading one completion: `score` is None exactly when `error` is set."""

    score: float | None
    satisfied: dict[str, bool] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    verdict: Verdict | None = None


@lru_cache(maxsize=4096)
def _parse_rubric(text: str) -> Rubric:
    return Rubric.from_value(text)


def as_rubric(value: Any) -> Rubric:
    """A rubric from a dataset cell; JSON text is parsed once per distinct rubric."""
    return _parse_rubric(value) if isinstance(value, str) else Rubric.from_value(value)


class RubricReward:
    """Async TRL reward function: `reward_funcs=[RubricReward(judge)]`.

    Reads each row's rubric from the dataset column `rubric_column`. `judge` may be None when every
    criterion is a rule. `normalize=False` returns the raw weighted sum instead of a score in [0, 1].
    """

    def __init__(
        self,
        judge: Judge | None = None,
        *,
        rubric_column: str = "rubric",
        normalize: bool = True,
        name: str = "rubric_reward",
    ) -> None:
        self.judge = judge
        self.rubric_column = rubric_column
        self.normalize = normalize
        self.__name__ = name
        self.totals: Counter[str] = Counter()

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        if self.rubric_column not in columns:
            available = sorted(k for k in columns if k not in {"trainer_state", "log_extra", "completion_ids"})
            raise ValueError(
                f"RubricReward needs a '{self.rubric_column}' column in the training dataset; "
                f"the columns passed to the reward were {available}"
            )
        started = time.perf_counter()
        graded = await self.grade(prompts, completions, columns[self.rubric_column])
        if log_metric is not None:
            for name, value in self.batch_metrics(graded, time.perf_counter() - started).items():
                log_metric(name, value)
        return [g.score for g in graded]

    async def grade(
        self, prompts: Sequence[Any], completions: Sequence[Any], rubrics: Sequence[Any]
    ) -> list[GradedCompletion]:
        """Grade completion i against rubric i, all concurrently."""
        if not len(prompts) == len(completions) == len(rubrics):
            raise ValueError(
                f"got {len(prompts)} prompts, {len(completions)} completions and {len(rubrics)} rubrics; "
                "expected one of each per completion"
            )
        parsed = [as_rubric(r) for r in rubrics]
        if self.judge is None and any(r.llm_criteria for r in parsed):
            raise ValueError("the rubrics have 'llm' criteria but no judge is configured (set `judge:`)")
        graded = await asyncio.gather(
            *(self.grade_one(p, c, r) for p, c, r in zip(prompts, completions, parsed, strict=True))
        )
        self.totals["completions"] += len(graded)
        self.totals["failures"] += sum(g.error is not None for g in graded)
        return graded

    async def grade_one(self, prompt: Any, completion: Any, rubric: Rubric) -> GradedCompletion:
        """Grade one completion: its rule criteria here, its llm criteria by the judge in one `grade` call."""
        response = completion_text(completion)
        satisfied = grade_rules(rubric.rule_criteria, response)
        probabilities: dict[str, float] = {}
        verdict = None
        if rubric.llm_criteria:
            verdict = await self.judge.grade(
                GradeRequest(render_prompt(prompt), response, tuple(rubric.llm_criteria))
            )
            if not verdict.ok:
                return GradedCompletion(score=None, error=verdict.error, verdict=verdict)
            for criterion_id, result in verdict.criteria.items():
                satisfied[criterion_id] = result.satisfied
                if result.probability is not None:
                    probabilities[criterion_id] = result.probability
        score = rubric.score(satisfied, normalize=self.normalize)
        return GradedCompletion(score, satisfied, probabilities, verdict=verdict)

    async def aclose(self) -> None:
        """Close the judge's clients on the running event loop (a later grade opens them again)."""
        if self.judge is not None:
            await self.judge.aclose()

    def batch_metrics(self, graded: Sequence[GradedCompletion], wall_s: float) -> dict[str, float]:
        """Metrics for one batch, named for TRL's `log_metric` (averaged by TRL over a logging step)."""
        verdicts = [g.verdict for g in graded if g.verdict is not None]
        metrics = {
            "rubric/failure_rate": sum(g.error is not None for g in graded) / max(len(graded), 1),
            "rubric/grading_wall_s": wall_s,
        }
        if verdicts:
            costs = Costs.total(verdicts)
            metrics.update(
                {
                    "rubric/judge_calls": float(costs.calls),
                    "rubric/judge_retries": float(costs.retries),
                    "rubric/judge_cache_hits": float(costs.cache_hits),
                    "rubric/judge_latency_s": sum(v.latency_s for v in verdicts) / len(verdicts),
                    "rubric/judge_prompt_tokens": float(costs.prompt_tokens),
                    "rubric/judge_completion_tokens": float(costs.completion_tokens),
                }
            )
        outcomes = [(cid, ok) for g in graded if g.error is None for cid, ok in g.satisfied.items()]
        if outcomes:
            metrics["rubric/pass_rate"] = sum(ok for _, ok in outcomes) / len(outcomes)
            ids = {cid for cid, _ in outcomes}
            if len(ids) <= MAX_PER_CRITERION_METRICS:
                for cid in sorted(ids):
                    results = [ok for c, ok in outcomes if c == cid]
                    metrics[f"rubric/pass_rate/{cid}"] = sum(results) / len(results)
        return metrics
