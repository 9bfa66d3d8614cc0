"""Requests and tokens per minute for API judges: spaced, shared by every client of an endpoint, the wait counted.
Time is a clock the tests advance: no test sleeps."""

import asyncio

import pytest

from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.openai_compat import OpenAIJudge, OpenAIJudgeConfig
from rubric_rft.llm import rate_limit
from rubric_rft.llm.rate_limit import RateLimiter, estimate_tokens
from rubric_rft.rubrics.format import Criterion
from rubric_rft.testing.judge_server import DEFAULT_MODEL


class Clock:
    """Time that passes only when someone waits: a waiter wakes at its time, and waiters overlap as they would."""

    def __init__(self) -> None:
        self.now = 0.0

    async def sleep(self, seconds: float) -> None:
        wake = self.now + seconds
        await asyncio.sleep(0)  # the others waiting now start their waits at the same time
        self.now = max(self.now, wake)


def limiter(clock: Clock, rpm=None, tpm=None) -> RateLimiter:
    return RateLimiter(rpm, tpm, clock=lambda: clock.now, sleep=clock.sleep)


def test_requests_beyond_a_minutes_worth_wait_for_the_bucket_to_refill():
    clock = Clock()
    limit = limiter(clock, rpm=60)  # a minute's worth at once, then one a second

    async def ask(n):
        return [await limit.acquire(0) for _ in range(n)]

    waited = asyncio.run(ask(62))
    assert waited[:60] == [0.0] * 60 and waited[60:] == pytest.approx([1.0, 1.0])
    assert clock.now == pytest.approx(2.0)
    clock.now += 30  # half a minute idle: 30 requests' worth is back
    assert asyncio.run(ask(30)) == [0.0] * 30 and asyncio.run(ask(1)) == pytest.approx([1.0])


def test_tokens_are_estimated_taken_and_settled_by_the_answers_usage():
    clock = Clock()
    limit = limiter(clock, tpm=600)  # 10 tokens a second
    assert estimate_tokens([{"role": "user", "content": "x" * 400}], max_tokens=100) == 200
    assert asyncio.run(limit.acquire(500)) == 0.0
    assert asyncio.run(limit.acquire(200)) == pytest.approx(10.0)  # 100 left: 100 more tokens take 10 s
    limit.settle(estimated=200, used=50)  # the answer was short: 150 back
    assert asyncio.run(limit.acquire(150)) == 0.0
    assert asyncio.run(limit.acquire(6000)) == pytest.approx(60.0)  # larger than the bucket: waits for a full one


CRITERIA = [Criterion(id="c1", text="Mentions 'water'.", weight=1)]


def test_judges_of_one_endpoint_share_its_limits_and_report_the_wait(start_judge_server, monkeypatch):
    server = start_judge_server()
    clock = Clock()
    monkeypatch.setattr(rate_limit, "_SHARED", {})
    rate_limit.share([server.base_url], DEFAULT_MODEL, limiter(clock, rpm=4))
    config = OpenAIJudgeConfig(model=DEFAULT_MODEL, base_urls=[server.base_url], max_rpm=4, timeout_s=5.0)
    first, second = OpenAIJudge(config), OpenAIJudge(config)  # two clients (reward and monitor, say)
    requests = [GradeRequest("How?", f"Water {i}.", CRITERIA) for i in range(6)]

    async def grade_all():
        try:
            judges = [first, second] * 3
            return await asyncio.gather(*(judge.grade(r) for judge, r in zip(judges, requests, strict=True)))
        finally:
            await first.aclose()
            await second.aclose()

    verdicts = asyncio.run(grade_all())
    assert all(v.ok for v in verdicts) and server.stats.requests == 6
    waits = sorted(v.rate_limit_wait_s for v in verdicts)  # 4 at once, then one every 15 s, whichever judge asked
    assert waits[:4] == [0.0] * 4 and waits[4:] == pytest.approx([15.0, 30.0])
    assert clock.now == pytest.approx(30.0)


def test_an_endpoint_without_limits_has_no_limiter_and_limits_are_validated():
    assert rate_limit.shared_limiter(["http://x/v1"], "m", None, None) is None
    a = rate_limit.shared_limiter(["http://x/v1", "http://y/v1"], "m", 60, None)
    assert rate_limit.shared_limiter(["http://y/v1", "http://x/v1"], "m", 60, None) is a  # replicas in any order
    assert rate_limit.shared_limiter(["http://x/v1", "http://y/v1"], "m", 30, None) is not a
    with pytest.raises(ValueError, match="max_rpm"):
        OpenAIJudgeConfig(model="m", base_urls=["http://x/v1"], max_rpm=0)
