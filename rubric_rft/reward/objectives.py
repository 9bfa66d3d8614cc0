"""Several reward objectives from one rubric: a TRL reward function per criterion tag.

A rubric mixes what an answer says with how it says it and what it must not do, and one weighted sum lets a policy
trade one for another: length for substance, say. Split by criterion `tags` (e.g. content, format, safety), each
objective is its own TRL reward function, so TRL combines them as configured: `reward_weights` and
`multi_objective_aggregation` (`normalize_then_sum` is GDPO's: each objective normalized within the group before
the weighted sum) in the training config, and logs each as `rewards/rubric_<tag>/mean`.

Each completion is graded once, against its whole rubric (the judge is asked once): the objectives' functions are
called together on the same batch and share that grading. An objective's value is `Rubric.objective_score` of its
tag; a completion whose rubric has no criterion with the tag gets None for it (TRL leaves it out of that objective),
and a completion that could not be graded gets None for all of them (unscored, never a zero). The rubric reward
itself stays whole: the monitor's proxy, the rubric store, online refinement and the logged `rubric/*` metrics
read every criterion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from rubric_rft.reward.rubric_reward import GradedCompletion, RubricReward


class RubricObjectives:
    """`functions`: one TRL reward function per tag in `objectives`, over the grading of `reward`."""

    def __init__(self, reward: RubricReward, objectives: Sequence[str]) -> None:
        self.reward = reward
        self.functions = [_Objective(self, tag) for tag in objectives]
        self._batch: tuple[Sequence[Any], asyncio.Future] | None = None
        self._unread = 0

    async def graded(self, prompts: Sequence[Any], completions: Sequence[Any],
                     log_metric: Callable[[str, float], None] | None, columns: dict[str, Any]
                     ) -> list[GradedCompletion]:
        """The batch's grades: graded by the first objective that asks (through the rubric reward, which logs its
        metrics and counts failures once), awaited by the others; TRL hands every function the same `completions`.
        Once every objective has read them, the next call grades a new batch."""
        if self._batch is None or self._batch[0] is not completions:
            self._batch = (completions, asyncio.ensure_future(self.reward.graded_batch(
                prompts, completions, log_metric, columns)))
            self._unread = len(self.functions)
        batch = self._batch
        try:
            return await asyncio.shield(batch[1])
        finally:
            self._unread -= 1
            if self._unread == 0 and self._batch is batch:
                self._batch = None


class _Objective:
    def __init__(self, objectives: RubricObjectives, tag: str) -> None:
        self.objectives = objectives
        self.tag = tag
        self.__name__ = f"rubric_{tag}"

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                       log_metric: Callable[[str, float], None] | None = None, **columns: Any) -> list[float | None]:
        graded = await self.objectives.graded(prompts, completions, log_metric, columns)
        return [None if g.error is not None else g.rubric.objective_score(self.tag, g.satisfied) for g in graded]
