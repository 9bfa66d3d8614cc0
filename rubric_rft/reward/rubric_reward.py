"""`RubricReward`: the TRL reward function that grades each completion against its prompt's rubric.

TRL awaits async reward functions on its own event loop, so every completion of a batch is graded
concurrently; the judge bounds how many requests are in flight. Rule criteria are checked in-process and
never cost a judge call. A completion whose llm criteria could not be graded after the judge's retries gets
`None`, which TRL masks out of its group, and is counted in the logged metrics: never a made-up score. A judge
that fails too often stops training (`rubric_rft.reward.failure_limit`) rather than leaving it to run on nothing.

Criterion pass rates are logged pooled (by kind, for positive criteria and for pitfalls): ids such as `c1` repeat
across prompts and name unrelated criteria, so a series per id would merge them.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rubric_rft.judges.base import AsyncClosing, GradeRequest, Judge, Verdict, grade_all
from rubric_rft.llm.costs import Costs
from rubric_rft.reward.failure_limit import DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURE_RATE, FailureLimit
from rubric_rft.rubrics.datasets import completion_text, render_prompt
from rubric_rft.rubrics.format import Rubric
from rubric_rft.rubrics.rules import grade_rules

if TYPE_CHECKING:
    from rubric_rft.rubrics.store import RubricStore


@dataclass
class GradedCompletion:
    """The outcome of grading one completion: `score` is None exactly when `error` is set."""

    score: float | None
    satisfied: dict[str, bool] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    verdict: Verdict | None = None
    rubric: Rubric | None = None


@lru_cache(maxsize=4096)
def _parse_rubric(text: str) -> Rubric:
    return Rubric.from_value(text)


def as_rubric(value: Any) -> Rubric:
    """A rubric from a dataset cell; JSON text is parsed once per distinct rubric."""
    return _parse_rubric(value) if isinstance(value, str) else Rubric.from_value(value)


class RubricReward(AsyncClosing):
    """Async TRL reward function: `reward_funcs=[RubricReward(judge)]`.

    Reads each row's rubric from the dataset column `rubric_column`, or, given a `store`, looks it up there by the
    row's `prompt_id` (so a rubric may change during training). `judge` may be None when every criterion is a
    rule. `normalize=False` returns the raw weighted sum instead of a score in [0, 1]. `on_graded(completions,
    graded, columns)` sees every training batch's grades (online refinement buffers the policy's tail with it).
    A training call raises `JudgeFailingError` when more than `max_failure_rate * failure_window` of the last
    `failure_window` completions sent to the judge failed (None: never); `grade`, which evaluation tools call and
    report failures from, does not.
    """

    def __init__(
        self,
        judge: Judge | None = None,
        *,
        rubric_column: str = "rubric",
        normalize: bool = True,
        name: str = "rubric_reward",
        store: RubricStore | None = None,
        on_graded: Callable[[Sequence[Any], list[GradedCompletion], dict[str, Any]], None] | None = None,
        max_failure_rate: float | None = DEFAULT_MAX_FAILURE_RATE,
        failure_window: int = DEFAULT_FAILURE_WINDOW,
    ) -> None:
        self.judge = judge
        self.rubric_column = rubric_column
        self.store = store
        self.on_graded = on_graded
        self.normalize = normalize
        self.__name__ = name
        self.totals: Counter[str] = Counter()
        self.failure_limit = None if max_failure_rate is None else FailureLimit(max_failure_rate, failure_window)

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        return [g.score for g in await self.graded_batch(prompts, completions, log_metric, columns)]

    async def graded_batch(self, prompts: Sequence[Any], completions: Sequence[Any],
                           log_metric: Callable[[str, float], None] | None, columns: dict[str, Any]
                           ) -> list[GradedCompletion]:
        """A training batch graded: the refinement hook fed, the metrics logged, the judge's failures counted."""
        started = time.perf_counter()
        graded = await self.grade(prompts, completions, self._rubrics(columns))
        if self.on_graded is not None:
            self.on_graded(completions, graded, columns)
        if log_metric is not None:
            for name, value in self.batch_metrics(graded, time.perf_counter() - started).items():
                log_metric(name, value)
        if self.failure_limit is not None:  # rule-only completions say nothing about the judge
            self.failure_limit.record(g.error for g in graded if g.verdict is not None)
        return graded

    def _rubrics(self, columns: dict[str, Any]) -> Sequence[Any]:
        """Each row's rubric: from the store by `prompt_id` when there is one, else from the rubric column."""
        column = self.rubric_column if self.store is None else "prompt_id"
        if column not in columns:
            available = sorted(k for k in columns if k not in {"trainer_state", "log_extra", "completion_ids"})
            source = "" if self.store is None else " to look rubrics up in its store"
            raise ValueError(
                f"RubricReward needs a '{column}' column in the training dataset{source}; "
                f"the columns passed to the reward were {available}"
            )
        if self.store is None:
            return columns[column]
        return [self.store.rubric_for(prompt_id) for prompt_id in columns[column]]

    async def grade(
        self, prompts: Sequence[Any], completions: Sequence[Any], rubrics: Sequence[Any]
    ) -> list[GradedCompletion]:
        """Grade completion i against rubric i, all concurrently (a listwise judge gets each group of completions to
        one prompt and rubric in one call)."""
        if not len(prompts) == len(completions) == len(rubrics):
            raise ValueError(
                f"got {len(prompts)} prompts, {len(completions)} completions and {len(rubrics)} rubrics; "
                "expected one of each per completion"
            )
        parsed = [as_rubric(r) for r in rubrics]
        if self.judge is None and any(r.llm_criteria for r in parsed):
            raise ValueError("the rubrics have 'llm' criteria but no judge is configured (set `judge:`)")
        responses = [completion_text(c) for c in completions]
        asked = [i for i, rubric in enumerate(parsed) if rubric.llm_criteria]
        verdicts: list[Verdict | None] = [None] * len(parsed)
        answers = await grade_all(self.judge, [
            GradeRequest(render_prompt(prompts[i]), responses[i], tuple(parsed[i].llm_criteria)) for i in asked])
        for index, verdict in zip(asked, answers, strict=True):
            verdicts[index] = verdict
        graded = [_graded(response, rubric, verdict, self.normalize)
                  for response, rubric, verdict in zip(responses, parsed, verdicts, strict=True)]
        self.totals["completions"] += len(graded)
        self.totals["failures"] += sum(g.error is not None for g in graded)
        return graded

    async def grade_one(self, prompt: Any, completion: Any, rubric: Rubric) -> GradedCompletion:
        """Grade one completion alone: its rule criteria here, its llm criteria by the judge in one `grade` call."""
        response = completion_text(completion)
        verdict = None
        if rubric.llm_criteria:
            verdict = await self.judge.grade(GradeRequest(render_prompt(prompt), response, tuple(rubric.llm_criteria)))
        return _graded(response, rubric, verdict, self.normalize)

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
                    "rubric/judge_malformed": float(costs.malformed),
                    "rubric/judge_cache_hits": float(costs.cache_hits),
                    "rubric/judge_latency_s": sum(v.latency_s for v in verdicts) / len(verdicts),
                    "rubric/judge_prompt_tokens": float(costs.prompt_tokens),
                    "rubric/judge_completion_tokens": float(costs.completion_tokens),
                    "rubric/judge_rate_limit_wait_s": float(costs.rate_limit_wait_s),
                }
            )
            disagreements = [c.disagreement for v in verdicts for c in v.criteria.values()
                             if c.disagreement is not None]
            if disagreements:  # a panel of judges: how often its members split
                metrics["rubric/judge_disagreement"] = sum(disagreements) / len(disagreements)
        metrics.update({f"rubric/{name}": value for name, value in criterion_stats(graded).items()})
        return metrics


def _graded(response: str, rubric: Rubric, verdict: Verdict | None, normalize: bool) -> GradedCompletion:
    """One completion's grade from its rule criteria and the judge's verdict on its llm criteria (None: it has none)."""
    satisfied = grade_rules(rubric.rule_criteria, response)
    probabilities: dict[str, float] = {}
    if verdict is not None:
        if not verdict.ok:
            return GradedCompletion(score=None, error=verdict.error, verdict=verdict, rubric=rubric)
        for criterion_id, result in verdict.criteria.items():
            satisfied[criterion_id] = result.satisfied
            if result.probability is not None:
                probabilities[criterion_id] = result.probability
    return GradedCompletion(rubric.score(satisfied, normalize=normalize), satisfied, probabilities, verdict=verdict,
                            rubric=rubric)


def criterion_stats(graded: Sequence[GradedCompletion]) -> dict[str, float]:
    """Criterion pass rates of the graded completions, pooled so that they read the same for any number of prompts.

    `pass_rate` over every criterion, `pass_rate/kind/{llm,rule}`, `pass_rate/positive` and `pass_rate/pitfall`
    (negative weight: passing means the bad thing happened, so lower is better), and `saturation`, the share of
    graded completions whose positive criteria all passed (a rubric that no longer separates good answers).
    """
    pools: dict[str, list[bool]] = defaultdict(list)
    saturated = []
    for g in graded:
        if g.error is not None or g.rubric is None:
            continue
        for criterion in g.rubric.criteria:
            passed = bool(g.satisfied[criterion.id])
            sign = "positive" if criterion.weight > 0 else "pitfall"
            for pool in ("pass_rate", f"pass_rate/kind/{criterion.kind}", f"pass_rate/{sign}"):
                pools[pool].append(passed)
        saturated.append(all(g.satisfied[c.id] for c in g.rubric.criteria if c.weight > 0))
    if not saturated:
        return {}
    return {**{pool: sum(v) / len(v) for pool, v in pools.items()}, "saturation": sum(saturated) / len(saturated)}
