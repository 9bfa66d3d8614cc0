"""RubricReward: scores from verdicts, failures as None, rule criteria never sent to the judge, metrics."""

import asyncio

import pytest

from rubric_rft.judges.base import CriterionVerdict, GradeRequest, Verdict
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Rubric

MIXED = Rubric.model_validate(
    {
        "id": "tea",
        "criteria": [
            {"id": "water", "text": "Mentions water.", "weight": 2, "kind": "rule",
             "check": {"type": "contains", "any_of": ["water"]}},
            {"id": "short", "text": "At most 8 words.", "weight": 1, "kind": "rule",
             "check": {"type": "word_count", "max": 8}},
            {"id": "deflects", "text": "Deflects.", "weight": -2, "kind": "rule",
             "check": {"type": "contains", "any_of": ["as an ai"]}},
            {"id": "steep", "text": "Says how long to steep.", "weight": 3},
            {"id": "rude", "text": "Is rude.", "weight": -1},
        ],
    }
).model_dump_json()

PROMPT = [{"role": "user", "content": "How do I make tea?"}]


def completion(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


class ScriptedJudge:
    """Says yes to a criterion when its id appears in the response; fails responses containing FAIL."""

    name = "scripted"

    def __init__(self) -> None:
        self.requests: list[GradeRequest] = []

    async def grade(self, request: GradeRequest) -> Verdict:
        self.requests.append(request)
        await asyncio.sleep(0)
        if "FAIL" in request.response:
            return Verdict(error="judge unreachable after 3 retries", calls=4, retries=3)
        return Verdict(
            criteria={c.id: CriterionVerdict(c.id in request.response) for c in request.criteria},
            calls=1,
            prompt_tokens=10,
            completion_tokens=5,
            latency_s=0.01,
        )

    async def aclose(self) -> None:
        pass


def run(reward, completions, rubric=MIXED, **kwargs):
    return asyncio.run(reward([PROMPT] * len(completions), completions, rubric=[rubric] * len(completions), **kwargs))


def test_scores_combine_rule_and_judge_verdicts():
    judge = ScriptedJudge()
    scores = run(
        RubricReward(judge),
        [
            completion("Pour hot water, steep 3 minutes."),  # water 2 + short 1 + steep 3 = 6 of 6
            completion("Pour hot water and wait; steep it."),  # same, the judge sees "steep"
            completion("As an AI I won't say: water."),  # water 2 + short 1 - deflects 2 = 1 of 6
            completion("Just boil it rude style, ok?"),  # short 1 - rude 1 = 0
        ],
    )
    assert scores == pytest.approx([1.0, 1.0, 1 / 6, 0.0])


def test_raw_weighted_sum_when_not_normalized():
    scores = run(RubricReward(ScriptedJudge(), normalize=False), [completion("As an AI, rude water words here: ok")])
    assert scores == [pytest.approx(2 + 1 - 2 - 1)]


def test_rule_criteria_never_reach_the_judge():
    judge = ScriptedJudge()
    run(RubricReward(judge), [completion("water"), completion("tea")])
    assert len(judge.requests) == 2
    for request in judge.requests:
        assert [c.id for c in request.criteria] == ["steep", "rude"]
        assert request.prompt == "How do I make tea?"


def test_failed_grade_is_none_and_counted():
    logged: dict[str, list[float]] = {}
    reward = RubricReward(ScriptedJudge())
    scores = run(
        reward,
        [completion("water steep"), completion("FAIL water"), completion("tea")],
        log_metric=lambda name, value: logged.setdefault(name, []).append(value),
    )
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] is None
    assert scores[2] == pytest.approx(1 / 6)
    assert logged["rubric/failure_rate"] == [pytest.approx(1 / 3)]
    assert logged["rubric/judge_retries"] == [3.0]
    assert logged["rubric/judge_calls"] == [1 + 4 + 1]
    # pass rates count graded completions only: "water steep" satisfies water, short and steep; "tea" only short
    assert logged["rubric/pass_rate"] == [pytest.approx(4 / 10)]
    assert logged["rubric/pass_rate/kind/rule"] == [pytest.approx(3 / 6)]
    assert logged["rubric/pass_rate/pitfall"] == [0.0]
    assert logged["rubric/saturation"] == [0.5]
    assert reward.totals["failures"] == 1 and reward.totals["completions"] == 3


def test_rules_only_rubric_needs_no_judge():
    rules_only = Rubric.model_validate(
        {"id": "r", "criteria": [{"id": "x", "text": "Says x.", "weight": 1, "kind": "rule",
                                  "check": {"type": "regex", "pattern": r"\bx\b"}}]}
    ).model_dump_json()
    assert run(RubricReward(None), [completion("x marks"), completion("none")], rubric=rules_only) == [1.0, 0.0]


def test_llm_criteria_without_judge_is_a_clear_error():
    with pytest.raises(ValueError, match="no judge is configured"):
        run(RubricReward(None), [completion("water")])


def test_missing_rubric_column_names_the_columns_it_got():
    reward = RubricReward(None)
    with pytest.raises(ValueError, match=r"needs a 'rubric' column.*prompt_id"):
        asyncio.run(reward([PROMPT], [completion("x")], prompt_id=["a"]))


def test_plain_string_prompts_and_completions():
    judge = ScriptedJudge()
    scores = asyncio.run(RubricReward(judge)(["How do I make tea?"], ["water, steep"], rubric=[MIXED]))
    assert scores == [pytest.approx(1.0)]
    assert judge.requests[0].response == "water, steep"


def test_rubric_given_as_dict_with_arrow_nulls():
    as_dict = Rubric.model_validate_json(MIXED).model_dump()  # parent/reason/check fields are None
    scores = run(RubricReward(ScriptedJudge()), [completion("water steep")], rubric=as_dict)
    assert scores == [pytest.approx(1.0)]


def two_prompt_rubrics() -> tuple[str, str]:
    """Two prompts whose imported criteria are both numbered c1, c2, with different kinds and signs."""
    first = {"id": "a", "prompt_id": "a", "criteria": [
        {"id": "c1", "text": "Mentions water.", "weight": 1, "kind": "rule",
         "check": {"type": "contains", "any_of": ["water"]}},
        {"id": "c2", "text": "Says how long to steep.", "weight": 2},
    ]}
    second = {"id": "b", "prompt_id": "b", "criteria": [
        {"id": "c1", "text": "Is rude.", "weight": -1},
        {"id": "c2", "text": "At most 3 words.", "weight": 1, "kind": "rule",
         "check": {"type": "word_count", "max": 3}},
    ]}
    return tuple(Rubric.model_validate(r).model_dump_json() for r in (first, second))


def test_pass_rates_pool_by_kind_and_sign_never_by_bare_criterion_id():
    logged: dict[str, list[float]] = {}
    first, second = two_prompt_rubrics()
    asyncio.run(RubricReward(ScriptedJudge())(
        [PROMPT] * 2,
        [completion("water c2"), completion("c1 said at some length")],  # the judge says yes to ids it sees
        rubric=[first, second],
        log_metric=lambda name, value: logged.setdefault(name, []).append(value),
    ))
    # a.c1 (rule, +) and b.c1 (llm, pitfall) are unrelated: no series merges them
    assert not [name for name in logged if name.startswith("rubric/pass_rate/c")]
    assert logged["rubric/pass_rate"] == [pytest.approx(3 / 4)]  # a.c1, a.c2, b.c1 satisfied; b.c2 not
    assert logged["rubric/pass_rate/kind/rule"] == [pytest.approx(1 / 2)]
    assert logged["rubric/pass_rate/kind/llm"] == [pytest.approx(1.0)]
    assert logged["rubric/pass_rate/positive"] == [pytest.approx(2 / 3)]
    assert logged["rubric/pass_rate/pitfall"] == [pytest.approx(1.0)]
    assert logged["rubric/saturation"] == [pytest.approx(1 / 2)]  # a's positive criteria all passed, b's not
