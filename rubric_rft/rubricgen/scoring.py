"""Candidates scored under a rubric with `RubricReward.grade` (any judge backend; rules need none).

Scores are raw weighted sums, which order responses the way the rubric does (clipping at zero would tie
two responses that trip pitfalls by different amounts); the normalized score in [0, 1] comes along for display
and for spreads comparable across rubrics. A response that could not be graded keeps its error and no score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rubric_rft.judges.base import Judge
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Rubric


@dataclass
class Grade:
    """One response's grade: `score` (raw) and `normalized` are None exactly when `error` is set."""

    score: float | None
    normalized: float | None
    satisfied: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    judge_calls: int = 0


async def score_responses(judge: Judge | None, prompt: str, rubric: Rubric, responses: Sequence[str]) -> list[Grade]:
    """Every response to `prompt` (rendered text) graded against `rubric`, concurrently."""
    if not responses:
        return []
    graded = await RubricReward(judge, normalize=False).grade(
        [prompt] * len(responses), responses, [rubric] * len(responses)
    )
    grades = []
    for g in graded:
        calls = g.verdict.calls if g.verdict is not None else 0
        if g.error is not None:
            grades.append(Grade(None, None, error=g.error, judge_calls=calls))
        else:
            satisfied = {cid: bool(ok) for cid, ok in g.satisfied.items()}
            grades.append(Grade(g.score, rubric.score(satisfied), satisfied, judge_calls=calls))
    return grades
