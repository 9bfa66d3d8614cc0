"""The judge failure limit: a judge that keeps failing stops training with its own error; occasional failures do not."""

import asyncio

import pytest

from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.reward.config import RubricRewardConfig, load_reward_config
from rubric_rft.reward.failure_limit import FailureLimit, JudgeFailingError
from rubric_rft.reward.rubric_reward import RubricReward

RUBRIC = (
    '{"id": "tea", "criteria": [{"id": "steep", "text": "Says how long to steep.", "weight": 2},'
    ' {"id": "short", "kind": "rule", "text": "At most 20 words.", "weight": 1,'
    ' "check": {"type": "word_count", "max": 20}}]}'
)
RULES_ONLY = (
    '{"id": "r", "criteria": [{"id": "w", "kind": "rule", "text": "Says tea.", "weight": 1,'
    ' "check": {"type": "contains", "any_of": ["tea"]}}]}'
)
PROMPT = [{"role": "user", "content": "How do I make tea?"}]


def scripted_judge(server):
    """One request per completion (no retries), so the server's fault script maps onto completions."""
    return build_judge(
        OpenAIJudgeConfig(model="scripted-judge", base_urls=[server.base_url], max_retries=0, backoff_initial_s=0.0)
    )


async def train_batches(reward: RubricReward, batches: int, size: int, rubric: str = RUBRIC) -> list[dict]:
    """Call the reward as TRL does, batch after batch on one event loop; the metrics each batch logged."""
    logged = []
    try:
        for index in range(batches):
            metrics: dict = {}
            completions = [[{"role": "assistant", "content": f"Steep it {index}.{i} minutes."}] for i in range(size)]
            await reward([PROMPT] * size, completions, rubric=[rubric] * size, log_metric=metrics.__setitem__)
            logged.append(metrics)
    finally:
        await reward.aclose()
    return logged


def test_a_judge_that_fails_every_request_stops_training_with_its_own_error(start_judge_server):
    server = start_judge_server(fail_first_n=10_000, fail_status=503)
    reward = RubricReward(scripted_judge(server), max_failure_rate=0.5, failure_window=8)
    with pytest.raises(JudgeFailingError) as error:
        asyncio.run(train_batches(reward, batches=3, size=4))
    message = str(error.value)
    assert message.startswith("8 of the last 8 completions sent to the judge failed")
    assert "scripted failure" in message and "503" in message, "the judge's own error text"
    assert "(8 of 8)" in message and "reward.max_failure_rate" in message
    assert server.stats.requests == 8, "stopped at the batch that crossed the limit"
    assert reward.totals["failures"] == 8


def test_grade_reports_failures_without_the_limit(start_judge_server):
    """Evaluation tools call `grade` and report failures themselves: the limit is the training call's alone."""
    server = start_judge_server(fail_first_n=10_000)
    reward = RubricReward(scripted_judge(server), max_failure_rate=0.0, failure_window=1)

    async def grade():
        try:
            return await reward.grade([PROMPT] * 6, ["Steep it."] * 6, [RUBRIC] * 6)
        finally:
            await reward.aclose()

    graded = asyncio.run(grade())
    assert [g.score for g in graded] == [None] * 6 and all("scripted failure" in g.error for g in graded)


def test_occasional_failures_below_the_limit_do_not_stop_training(start_judge_server):
    server = start_judge_server(fail_rate=0.2, seed=1)
    reward = RubricReward(scripted_judge(server))
    logged = asyncio.run(train_batches(reward, batches=8, size=16))
    assert server.stats.requests == 128
    assert 0 < reward.totals["failures"] < 64
    assert all(m["rubric/failure_rate"] < 0.5 for m in logged)
    assert any(m["rubric/failure_rate"] > 0 for m in logged), "failures are still counted in the metrics"


def test_completions_that_never_reach_the_judge_do_not_dilute_its_failures(start_judge_server):
    server = start_judge_server(fail_first_n=10_000)
    reward = RubricReward(scripted_judge(server), failure_window=4)

    async def mixed():
        try:
            for _ in range(3):  # 2 judged (failing) + 6 rules-only completions a batch
                rubrics = [RUBRIC] * 2 + [RULES_ONLY] * 6
                await reward([PROMPT] * 8, ["Tea."] * 8, rubric=rubrics)
        finally:
            await reward.aclose()

    with pytest.raises(JudgeFailingError, match=r"^4 of the last 4 completions"):
        asyncio.run(mixed())


def test_the_limit_off_lets_a_failing_judge_run_on(start_judge_server):
    server = start_judge_server(fail_first_n=10_000)
    reward = RubricReward(scripted_judge(server), max_failure_rate=None, failure_window=1)
    asyncio.run(train_batches(reward, batches=3, size=4))
    assert reward.totals["failures"] == 12


def test_failures_count_against_the_whole_window_and_the_window_slides():
    limit = FailureLimit(max_rate=0.5, window=8)
    limit.record(["boom"] * 4)  # 4 failures of 4 seen: not more than half of the window
    limit.record([None] * 8)  # the failures slid out of the window
    limit.record([None] * 4 + ["boom"] * 4)
    with pytest.raises(JudgeFailingError) as error:
        limit.record(["timeout"])
    assert str(error.value).startswith("5 of the last 8 completions sent to the judge failed")
    assert str(error.value).endswith("Most common judge error (4 of 5): boom")


def test_a_zero_rate_stops_at_the_first_failure():
    limit = FailureLimit(max_rate=0.0, window=64)
    limit.record([None] * 100)
    with pytest.raises(JudgeFailingError, match=r"^1 of the last 64 .*: model 'x' not found$"):
        limit.record(["model 'x' not found"])


def test_the_defaults_are_on_and_bad_settings_name_the_field():
    assert RubricRewardConfig().max_failure_rate == 0.5 and RubricRewardConfig().failure_window == 32
    config = load_reward_config({"type": "rubric", "max_failure_rate": None, "failure_window": 100})
    assert config.max_failure_rate is None and config.failure_window == 100
    with pytest.raises(ValueError, match=r"reward\.max_failure_rate: Input should be less than 1"):
        load_reward_config({"max_failure_rate": 1.0})
    with pytest.raises(ValueError, match=r"reward\.max_failure_rate: Input should be greater than or equal to 0"):
        load_reward_config({"max_failure_rate": -0.1})
    with pytest.raises(ValueError, match=r"reward\.failure_window: Input should be greater than or equal to 1"):
        load_reward_config('{"type": "rubric", "failure_window": 0}')
    with pytest.raises(ValueError, match=r"max_rate must be in \[0, 1\)"):
        FailureLimit(max_rate=1.0)
    with pytest.raises(ValueError, match=r"window must be at least 1"):
        FailureLimit(window=0)
