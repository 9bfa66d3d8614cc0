"""OpenAIJudge against the scripted judge server on 127.0.0.1: verdicts, concurrency, retries, cache, replicas, keys."""

import asyncio
import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from rubric_rft.judges.base import GradeRequest, Judge, Verdict
from rubric_rft.judges.openai_compat import OpenAIJudge, OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.cache import AnswerCache
from rubric_rft.llm.client import ChatClient
from rubric_rft.llm.endpoint import ChatEndpointConfig
from rubric_rft.rubrics.format import Criterion
from rubric_rft.testing.judge_server import DEFAULT_MODEL, default_policy

CRITERIA = (
    Criterion(id="water", text="Mentions 'water'.", weight=2),
    Criterion(id="milk", text="Mentions 'milk'.", weight=-1),
    Criterion(id="steep", text="Says how long to steep the tea.", weight=1),
)
REQUEST = GradeRequest("How do I make tea?", "Boil water, then steep for three minutes.", CRITERIA)


def policy_verdicts(request: GradeRequest) -> dict[str, bool]:
    return {c.id: default_policy(request.prompt, request.response, c.text) for c in request.criteria}


def judge_for(*servers, **config) -> OpenAIJudge:
    options = {"timeout_s": 5.0, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **config}
    return OpenAIJudge(OpenAIJudgeConfig(model=DEFAULT_MODEL, base_urls=[s.base_url for s in servers], **options))


def grade(judge: OpenAIJudge, *requests: GradeRequest) -> list[Verdict]:
    """Grade concurrently on a fresh event loop, then close the judge (as the trainer does at the end)."""

    async def run():
        try:
            return await asyncio.gather(*(judge.grade(r) for r in requests))
        finally:
            await judge.aclose()

    return asyncio.run(run())


def satisfied(verdict: Verdict) -> dict[str, bool]:
    assert verdict.ok, verdict.error
    return {cid: v.satisfied for cid, v in verdict.criteria.items()}


def test_batched_grades_all_criteria_in_one_call(judge_server):
    [verdict] = grade(judge_for(judge_server), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert satisfied(verdict)["water"] is True and satisfied(verdict)["milk"] is False
    assert (verdict.calls, verdict.retries, verdict.cache_hits) == (1, 0, 0)
    assert verdict.prompt_tokens > 0 and verdict.completion_tokens > 0 and verdict.latency_s > 0
    assert judge_server.stats.requests == 1


def test_per_criterion_asks_once_per_criterion(judge_server):
    [verdict] = grade(judge_for(judge_server, request_shape="per_criterion"), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert verdict.calls == 3 and judge_server.stats.requests == 3


@pytest.mark.parametrize("shape", ["batched", "per_criterion"])
def test_verdicts_go_back_to_their_criterion_ids(start_judge_server, shape):
    server = start_judge_server(policy=lambda prompt, response, criterion: criterion.startswith("Yes"))
    criteria = tuple(
        Criterion(id=cid, text=text, weight=1) for cid, text in [("z", "Yes one"), ("a", "No two"), ("m", "Yes three")]
    )
    [verdict] = grade(judge_for(server, request_shape=shape), GradeRequest("p", "r", criteria))
    assert satisfied(verdict) == {"z": True, "a": False, "m": True}


def test_concurrency_is_bounded_and_used(start_judge_server):
    latency, limit, requests = 0.1, 4, 16
    server = start_judge_server(latency_s=latency)
    batch = [GradeRequest("p", f"response {i}", CRITERIA) for i in range(requests)]
    started = time.perf_counter()
    verdicts = grade(judge_for(server, max_concurrency=limit), *batch)
    elapsed = time.perf_counter() - started
    assert all(v.ok for v in verdicts)
    assert server.stats.max_concurrent == limit
    bound = math.ceil(requests / limit) * latency
    assert bound <= elapsed < 2 * bound + 0.3


def test_identical_questions_in_flight_together_are_asked_once(start_judge_server):
    """A collapsed GRPO group sends one answer eight times: at temperature 0 one request answers all of them."""
    server = start_judge_server(latency_s=0.1)
    verdicts = grade(judge_for(server), *[REQUEST] * 8, GradeRequest("p", "another answer", CRITERIA))
    assert all(satisfied(v) == policy_verdicts(REQUEST) for v in verdicts[:8])
    assert server.stats.requests == 2
    assert sorted((v.calls, v.cache_hits) for v in verdicts) == [(0, 1)] * 7 + [(1, 0)] * 2


def test_identical_questions_share_a_failure_too_and_sampled_questions_are_each_asked(start_judge_server):
    failing = start_judge_server(fail_rate=1.0, latency_s=0.05)
    verdicts = grade(judge_for(failing, max_retries=1), *[REQUEST] * 4)
    assert all("gave up after 2 attempts" in v.error for v in verdicts)  # reported, never a score
    assert failing.stats.requests == 2 and sum(v.calls for v in verdicts) == 2
    sampled = start_judge_server(latency_s=0.05)
    grade(judge_for(sampled, temperature=0.7), *[REQUEST] * 4)
    assert sampled.stats.requests == 4  # a sampled answer is one draw: each question gets its own


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried_and_counted(start_judge_server, status):
    server = start_judge_server(fail_first_n=2, fail_status=status)
    [verdict] = grade(judge_for(server), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert (verdict.calls, verdict.retries) == (3, 2)
    assert server.stats.status_counts == {status: 2, 200: 1}


@pytest.mark.parametrize(("header", "waits_s"), [("0.6", 0.6), ("30", 0.8), (None, 0.0)])
def test_a_retry_waits_as_long_as_the_server_asked_up_to_a_cap(start_judge_server, header, waits_s):
    """A rate-limited API says when to come back (`Retry-After`); backing off less only spends attempts."""
    server = start_judge_server(fail_first_n=1, fail_status=429, retry_after=header)
    started = time.monotonic()
    [verdict] = grade(judge_for(server, retry_after_max_s=0.8), REQUEST)
    elapsed = time.monotonic() - started
    assert verdict.ok and (verdict.calls, verdict.retries) == (2, 1)
    assert waits_s <= elapsed < waits_s + 0.5  # backoff alone is at most 0.05 s here


def test_retry_after_headers_are_read_in_each_form_servers_send():
    from email.utils import format_datetime

    from rubric_rft.llm.client import _retry_after_s

    in_ten_s = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert _retry_after_s({"retry-after": "2"}) == 2.0
    assert _retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8 < _retry_after_s({"retry-after": in_ten_s}) <= 10
    assert _retry_after_s({"retry-after": "soon"}) is None and _retry_after_s({}) is None


def test_persistent_failure_is_an_error_verdict(start_judge_server):
    server = start_judge_server(fail_rate=1.0)
    [verdict] = grade(judge_for(server, max_retries=2), REQUEST)
    assert not verdict.ok and verdict.criteria == {}
    assert "gave up after 3 attempts" in verdict.error and "HTTP 500" in verdict.error
    assert (verdict.calls, verdict.retries) == (3, 2)


@pytest.mark.parametrize("status", [400, 401, 404])
def test_request_errors_fail_at_once(start_judge_server, status):
    server = start_judge_server(fail_first_n=1, fail_status=status)
    [verdict] = grade(judge_for(server), REQUEST)
    assert f"HTTP {status}" in verdict.error and verdict.criteria == {}
    assert (verdict.calls, verdict.retries, server.stats.requests) == (1, 0, 1)


def test_an_unknown_model_is_reported_with_the_server_reason_at_once(judge_server):
    judge = OpenAIJudge(OpenAIJudgeConfig(model="no-such-model", base_urls=[judge_server.base_url], max_retries=3))
    [verdict] = grade(judge, REQUEST)
    # vLLM's own error object: the openai client's message carries it
    assert "HTTP 404" in verdict.error and "The model `no-such-model` does not exist." in verdict.error
    assert verdict.retries == 0 and judge_server.stats.requests == 1


def test_a_pinned_server_refusing_the_model_name_gives_its_reason_at_once(start_judge_server):
    server = start_judge_server(flavor="transformers")
    judge = OpenAIJudge(OpenAIJudgeConfig(model="no-such-model", base_urls=[server.base_url], max_retries=3))
    [verdict] = grade(judge, REQUEST)
    # `transformers serve` puts the reason in FastAPI's `detail`, which the openai client leaves out of its message
    assert "HTTP 400" in verdict.error and "pinned to 'scripted-judge'; requested 'no-such-model'" in verdict.error
    assert verdict.retries == 0 and server.stats.requests == 1
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/health") as reply:
        assert json.load(reply) == {"status": "ok"}
    vllm_like = start_judge_server()
    with urllib.request.urlopen(vllm_like.base_url.removesuffix("/v1") + "/health") as reply:
        assert reply.status == 200 and reply.read() == b""  # what `vllm serve` answers


def test_our_requests_carry_only_fields_a_transformers_server_accepts(start_judge_server):
    server = start_judge_server(flavor="transformers")
    for shape in ("batched", "per_criterion", "yes_no"):
        [verdict] = grade(judge_for(server, request_shape=shape, demonstrations=True), REQUEST)
        assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert server.stats.status_counts == {200: 7}


def test_a_refused_connection_is_reported_as_such_not_as_a_timeout():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    judge = OpenAIJudge(OpenAIJudgeConfig(model="m", base_urls=[url], max_retries=1, backoff_initial_s=0))
    [verdict] = grade(judge, REQUEST)
    assert "connection error" in verdict.error and "ConnectionRefusedError" in verdict.error
    assert "timed out" not in verdict.error and verdict.retries == 1


@pytest.mark.parametrize("demonstrations", [False, True])
def test_yes_no_asks_once_per_criterion_for_a_bare_word(start_judge_server, demonstrations):
    server = start_judge_server()
    [verdict] = grade(judge_for(server, request_shape="yes_no", demonstrations=demonstrations), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert verdict.calls == 3 and all(c.probability is None for c in verdict.criteria.values())


def test_yes_probability_comes_from_the_first_token_logprobs(start_judge_server, tmp_path):
    server = start_judge_server()  # vLLM-like: 0.8 on the word answered, 0.15 on the other; refuses > 20 candidates
    cache = str(tmp_path / "verdicts.sqlite")
    judge = judge_for(server, request_shape="yes_no", yes_probability=True, cache_path=cache)
    [verdict] = grade(judge, REQUEST)
    expected = policy_verdicts(REQUEST)
    assert satisfied(verdict) == expected
    for cid, result in verdict.criteria.items():
        assert result.probability == pytest.approx(0.8 / 0.95 if expected[cid] else 0.15 / 0.95)
    [again] = grade(judge_for(server, request_shape="yes_no", yes_probability=True, cache_path=cache), REQUEST)
    assert again.cache_hits == 3 and again.criteria == verdict.criteria  # probabilities are cached too


def test_a_server_without_logprobs_gives_verdicts_without_probabilities(start_judge_server):
    server = start_judge_server(flavor="transformers")  # ignores `logprobs`, as transformers serve does
    [verdict] = grade(judge_for(server, request_shape="yes_no", yes_probability=True), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert all(result.probability is None for result in verdict.criteria.values())


def test_yes_probability_needs_the_yes_no_shape():
    with pytest.raises(ValueError, match="yes_probability needs request_shape 'yes_no', not 'batched'"):
        OpenAIJudgeConfig(model="m", base_urls=["http://x/v1"], yes_probability=True)


def test_demonstrations_have_their_own_cache_entries_and_leave_earlier_ones_valid(judge_server, tmp_path):
    cache = {"cache_path": str(tmp_path / "verdicts.sqlite")}
    grade(judge_for(judge_server, **cache), REQUEST)
    [again] = grade(judge_for(judge_server, demonstrations=False, **cache), REQUEST)
    assert again.cache_hits == 1  # the default keys are what they were before the option existed
    [shown] = grade(judge_for(judge_server, demonstrations=True, **cache), REQUEST)
    assert shown.cache_hits == 0 and judge_server.stats.requests == 2


def test_per_criterion_fails_when_any_criterion_fails(start_judge_server):
    server = start_judge_server(fail_first_n=1, fail_status=503)
    [verdict] = grade(judge_for(server, request_shape="per_criterion", max_retries=0), REQUEST)
    assert verdict.criteria == {} and "criterion '" in verdict.error and "HTTP 503" in verdict.error
    assert verdict.calls == 3


def test_a_timeout_is_retried(start_judge_server):
    server = start_judge_server(hang_first_n=1)
    [verdict] = grade(judge_for(server, timeout_s=0.2), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert verdict.retries == 1 and verdict.latency_s >= 0.2


def test_persistent_timeouts_are_an_error_verdict(start_judge_server):
    server = start_judge_server(hang_first_n=5)
    [verdict] = grade(judge_for(server, timeout_s=0.2, max_retries=1), REQUEST)
    assert "timed out after 0.2 s" in verdict.error and verdict.criteria == {}


@pytest.mark.parametrize("fault", ["malformed_first_n", "truncated_first_n", "empty_first_n"])
@pytest.mark.parametrize("shape", ["batched", "per_criterion"])
def test_a_malformed_answer_is_asked_again(start_judge_server, fault, shape):
    server = start_judge_server(**{fault: 1})
    [verdict] = grade(judge_for(server, request_shape=shape), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST)
    assert (verdict.retries, verdict.malformed) == (1, 1)


@pytest.mark.parametrize("fault", ["malformed_first_n", "truncated_first_n", "empty_first_n"])
def test_persistently_malformed_answers_are_an_error_verdict(start_judge_server, fault):
    server = start_judge_server(**{fault: 10})
    [verdict] = grade(judge_for(server, max_retries=1), REQUEST)
    assert "malformed answer" in verdict.error and verdict.criteria == {}
    assert verdict.malformed == 2


def verdict_object(*keys: str) -> dict:
    verdict = {"type": "string", "enum": ["yes", "no"]}
    return {"type": "object", "properties": {key: verdict for key in keys}, "required": list(keys),
            "additionalProperties": False}


@pytest.mark.parametrize(("shape", "constraint"), [
    ("batched", verdict_object("c1", "c2", "c3")),
    ("per_criterion", verdict_object("satisfied")),
    ("yes_no", {"choice": ["Yes", "No"]}),
])
def test_structured_answers_ask_the_server_for_the_expected_form(start_judge_server, shape, constraint):
    server = start_judge_server()
    [plain] = grade(judge_for(server, request_shape=shape), REQUEST)
    assert server.stats.constraints == []
    [structured] = grade(judge_for(server, request_shape=shape, structured_answers=True), REQUEST)
    assert satisfied(structured) == satisfied(plain) == policy_verdicts(REQUEST)
    sent = server.stats.constraints
    assert len(sent) == structured.calls == (1 if shape == "batched" else 3)
    if shape == "yes_no":
        assert sent == [{"structured_outputs": constraint}] * 3
    else:
        assert {json.dumps(s, sort_keys=True) for s in sent} == {json.dumps({"response_format": {
            "type": "json_schema", "json_schema": {"name": "verdicts", "schema": constraint, "strict": True}}},
            sort_keys=True)}


def test_structured_and_free_answers_are_cached_apart(judge_server, tmp_path):
    cache = {"cache_path": str(tmp_path / "verdicts.sqlite")}
    grade(judge_for(judge_server, **cache), REQUEST)
    [structured] = grade(judge_for(judge_server, structured_answers=True, **cache), REQUEST)
    assert (structured.calls, structured.cache_hits) == (1, 0)
    [again] = grade(judge_for(judge_server, structured_answers=True, **cache), REQUEST)
    assert (again.calls, again.cache_hits) == (0, 1)


def test_a_server_without_structured_outputs_refuses_at_once(start_judge_server):
    server = start_judge_server(flavor="transformers")
    [verdict] = grade(judge_for(server, request_shape="yes_no", structured_answers=True, max_retries=3), REQUEST)
    assert "HTTP 422" in verdict.error and "structured_outputs" in verdict.error and verdict.retries == 0


@pytest.mark.parametrize("shape", ["batched", "per_criterion"])
def test_fenced_answers_with_prose_are_parsed(start_judge_server, shape):
    server = start_judge_server(fenced=True)
    [verdict] = grade(judge_for(server, request_shape=shape), REQUEST)
    assert satisfied(verdict) == policy_verdicts(REQUEST) and verdict.retries == 0


@pytest.mark.parametrize(("shape", "calls"), [("batched", 1), ("per_criterion", 3)])
def test_cached_verdicts_cost_no_request_and_survive_a_new_judge(judge_server, tmp_path, shape, calls):
    config = {"request_shape": shape, "cache_path": str(tmp_path / "verdicts.sqlite")}
    [first] = grade(judge_for(judge_server, **config), REQUEST)
    assert judge_server.stats.requests == calls and first.cache_hits == 0
    for judge in (judge_for(judge_server, **config), judge_for(judge_server, **config)):
        [again] = grade(judge, REQUEST)
        assert satisfied(again) == satisfied(first)
        assert (again.cache_hits, again.calls) == (calls, 0)
    assert judge_server.stats.requests == calls
    grade(judge_for(judge_server, **config), GradeRequest(REQUEST.prompt, "Another answer.", CRITERIA))
    assert judge_server.stats.requests == 2 * calls


def test_failed_grades_are_not_cached(start_judge_server, tmp_path):
    server = start_judge_server(malformed_first_n=1)
    path = tmp_path / "verdicts.sqlite"
    [failed] = grade(judge_for(server, max_retries=0, cache_path=str(path)), REQUEST)
    assert not failed.ok and len(AnswerCache(path)) == 0
    [graded] = grade(judge_for(server, max_retries=0, cache_path=str(path)), REQUEST)
    assert graded.ok and graded.cache_hits == 0 and len(AnswerCache(path)) == 1


def test_requests_spread_round_robin_over_base_urls(start_judge_server):
    first, second = start_judge_server(), start_judge_server()
    batch = [GradeRequest("p", f"response {i}", CRITERIA) for i in range(10)]
    assert all(v.ok for v in grade(judge_for(first, second), *batch))
    assert first.stats.requests == second.stats.requests == 5


def test_the_api_key_comes_from_the_named_variable_and_stays_secret(judge_server, monkeypatch):
    monkeypatch.setenv("RUBRIC_JUDGE_TEST_KEY", "sk-test-secret-42")
    judge = judge_for(judge_server, api_key_env="RUBRIC_JUDGE_TEST_KEY")
    assert grade(judge, REQUEST)[0].ok
    assert judge_server.stats.authorizations == {"Bearer sk-test-secret-42"}
    for shown in (repr(judge), str(judge), repr(judge.config), str(judge.config)):
        assert "sk-test-secret-42" not in shown


def test_a_named_but_unset_key_variable_is_a_clear_error(judge_server, monkeypatch):
    monkeypatch.delenv("RUBRIC_JUDGE_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match=r"RUBRIC_JUDGE_TEST_KEY.*not set"):
        judge_for(judge_server, api_key_env="RUBRIC_JUDGE_TEST_KEY")


def test_without_a_key_variable_the_key_is_empty_as_vllm_expects(judge_server):
    grade(judge_for(judge_server), REQUEST)
    assert judge_server.stats.authorizations == {"Bearer EMPTY"}


def test_one_judge_serves_several_event_loops(judge_server):
    judge = judge_for(judge_server, max_concurrency=2)
    for _ in range(3):
        assert asyncio.run(asyncio.wait_for(judge.grade(REQUEST), timeout=5)).ok
    asyncio.run(judge.aclose())
    assert judge_server.stats.requests == 3


def test_build_judge_gives_a_judge():
    judge = build_judge(OpenAIJudgeConfig(model="m", base_urls=["http://127.0.0.1:9/v1"]))
    assert isinstance(judge, OpenAIJudge) and isinstance(judge, Judge) and judge.name == "openai:m"


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    client = ChatClient(
        ChatEndpointConfig(model="m", base_urls=["http://127.0.0.1:9/v1"], backoff_initial_s=0.5, backoff_max_s=3)
    )
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [client._backoff_s(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays) and max(delays) > ceiling / 2


def test_the_default_policy_is_predictable():
    assert default_policy("p", "Boil the WATER.", "Mentions 'water'.") is True
    assert default_policy("p", "Boil the water.", "Doesn't mention the user's \"milk\".") is False
    hashed = [default_policy("p", f"response {i}", "Is helpful.") for i in range(64)]
    assert hashed == [default_policy("q", f"response {i}", "Is helpful.") for i in range(64)]
    assert 16 < sum(hashed) < 48


def test_the_server_runs_as_a_subprocess_with_stats_over_http():
    command = [sys.executable, "-m", "rubric_rft.testing.judge_server", "--port", "0", "--fail-first-n", "1"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        with urllib.request.urlopen(f"{base_url}/models") as response:
            assert json.load(response)["data"][0]["id"] == DEFAULT_MODEL
        [verdict] = grade(OpenAIJudge(OpenAIJudgeConfig(model=DEFAULT_MODEL, base_urls=[base_url])), REQUEST)
        assert satisfied(verdict) == policy_verdicts(REQUEST) and verdict.retries == 1
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as response:
            stats = json.load(response)
        assert stats == {"requests": 2, "in_flight": 0, "max_concurrent": 1, "status_counts": {"200": 1, "500": 1}}
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0
