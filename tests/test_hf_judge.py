"""The in-process transformers judge: P(yes) per criterion, threshold, cache, failures reported."""

import asyncio

import pytest

from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.hf_local import HFJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.rubrics.format import Criterion

CRITERIA = (
    Criterion(id="names_paris", text="The response names Paris as the capital of France.", weight=2),
    Criterion(id="soup", text="The response gives a recipe for tomato soup.", weight=1),
)
REQUEST = GradeRequest("What is the capital of France?", "The capital of France is Paris.", CRITERIA)


def grade(judge, request=REQUEST):
    return asyncio.run(judge.grade(request))


def test_probabilities_per_criterion_and_threshold(tiny_model_path):
    verdict = grade(build_judge(HFJudgeConfig(model=tiny_model_path)))
    assert verdict.ok and verdict.calls == 2 and set(verdict.criteria) == {"names_paris", "soup"}
    for result in verdict.criteria.values():
        assert 0.0 < result.probability < 1.0
        assert result.satisfied == (result.probability >= 0.5)
    p = verdict.criteria["soup"].probability
    strict = grade(build_judge(HFJudgeConfig(model=tiny_model_path, threshold=min(p + 1e-6, 0.999999))))
    assert strict.criteria["soup"].satisfied is False
    assert strict.criteria["soup"].probability == pytest.approx(p, abs=1e-5)


def test_batching_does_not_change_probabilities(tiny_model_path):
    one_by_one = grade(build_judge(HFJudgeConfig(model=tiny_model_path, batch_size=1)))
    together = grade(build_judge(HFJudgeConfig(model=tiny_model_path, batch_size=8)))
    for cid in one_by_one.criteria:
        assert together.criteria[cid].probability == pytest.approx(one_by_one.criteria[cid].probability, abs=1e-4)


def test_cached_verdicts_cost_no_forward_pass(tiny_model_path, tmp_path):
    config = HFJudgeConfig(model=tiny_model_path, cache_path=str(tmp_path / "verdicts.sqlite"))
    first = grade(build_judge(config))
    again = grade(build_judge(config))  # a new judge: the cache is on disk
    assert again.cache_hits == 2 and again.calls == 0
    probabilities = {c: v.probability for c, v in first.criteria.items()}
    assert {c: v.probability for c, v in again.criteria.items()} == probabilities
