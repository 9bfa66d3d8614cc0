"""How fast a GRPO batch is graded, against the bound a judge server's capacity sets.

    python benchmarks/reward_throughput.py [--prompts 64] [--generations 8] [--criteria 12]
                                           [--latency 1.0] [--capacity 256]

A local OpenAI-compatible judge server (another process, so it has its own core) answers every request after
a fixed latency and processes at most `capacity` requests at once, like a vLLM judge. Three ways to grade
the same batch run side by side against it:
  1. RubricReward: every completion concurrently, all criteria of a rubric in one call;
  2. a 64-thread pool, one call per response (how the paper's released grader works);
  3. sequential, one call per response, on a 16-response subset, scaled to the batch (printed as such).
No request shape can beat `latency * ceil(requests / capacity)`; the last line is RubricReward's wall time
over that bound. One more row says what stands between the two: RubricReward again with each request sent through
a bare aiohttp session instead of the `openai` client (a measuring instrument that skips the client's request
building, not a supported transport).
"""

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import openai

from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.parsing import parse_batched
from rubric_rft.judges.prompts import batched_messages
from rubric_rft.judges.registry import build_judge
from rubric_rft.llm import client as chat_client
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.format import Criterion, Rubric

MODEL = "bench-judge"
SEQUENTIAL_SUBSET = 16
THREADS = 64


def make_batch(prompts: int, generations: int, criteria: int) -> tuple[list, list, list]:
    """`prompts * generations` completions, each with its prompt's rubric of `criteria` llm criteria."""
    batch_prompts, completions, rubrics = [], [], []
    for p in range(prompts):
        rubric = Rubric(
            id=f"p{p}",
            criteria=[
                Criterion(id=f"k{k}", text=f"The answer to question {p} covers point {k}.", weight=1 + k % 3)
                for k in range(criteria)
            ],
        ).model_dump_json()
        for g in range(generations):
            batch_prompts.append([{"role": "user", "content": f"Question {p}: explain topic {p} briefly."}])
            completions.append([{"role": "assistant", "content": f"Answer {g} to question {p}, covering point {g}."}])
            rubrics.append(rubric)
    return batch_prompts, completions, rubrics


def start_server(latency: float, capacity: int) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "rubric_rft.testing.judge_server", "--port", "0",
         "--latency", str(latency), "--capacity", str(capacity), "--model", MODEL],
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, server.stdout.readline().strip()


def server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats") as response:
        return json.load(response)


async def grade_with_rubric_reward(base_url: str, capacity: int, batch) -> tuple[float, float]:
    """Wall times of a first batch (clients and connections opened) and a second (steady state, as every
    later GRPO step sees it: TRL keeps one event loop, so clients and connections stay open)."""
    judge = build_judge(
        OpenAIJudgeConfig(model=MODEL, base_urls=[base_url], max_concurrency=capacity, timeout_s=120)
    )
    reward = RubricReward(judge)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        scores = await reward(batch[0], batch[1], rubric=batch[2])
        times.append(time.perf_counter() - started)
        failed = sum(s is None for s in scores)
        if failed:
            raise RuntimeError(f"RubricReward failed to grade {failed} completions")
    await judge.aclose()
    return times[0], times[1]


@contextlib.asynccontextmanager
async def requests_through_bare_aiohttp(base_url: str):
    """`ChatClient` sending each request through one aiohttp session, no `openai` client in between."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar())
    original = chat_client.ChatClient._complete

    async def complete(self, messages, costs, *, logprobs=False, constraint=None):
        body = {"model": self.config.model, "messages": messages, "temperature": self.config.temperature,
                "max_tokens": self.config.max_tokens}
        async with self._loop_resources().in_flight:
            costs.calls += 1
            async with session.post(f"{base_url}/chat/completions", json=body) as response:
                completion = await response.json()
        return completion["choices"][0]["message"]["content"], []

    chat_client.ChatClient._complete = complete
    try:
        yield
    finally:
        chat_client.ChatClient._complete = original
        await session.close()


async def grade_through_bare_aiohttp(base_url: str, capacity: int, batch) -> float:
    """RubricReward's steady-state wall time with requests sent through bare aiohttp."""
    async with requests_through_bare_aiohttp(base_url):
        return (await grade_with_rubric_reward(base_url, capacity, batch))[1]


def grade_one_call_per_response(base_url: str, batch, workers: int, limit: int | None = None) -> float:
    """The paper's grader: a sync client, one call per response, criteria labelled c1..cN."""
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=120)
    items = list(zip(*batch, strict=True))[:limit]

    def grade(item) -> dict:
        prompt, completion, rubric_json = item
        criteria = Rubric.model_validate_json(rubric_json).criteria
        labels = [(f"c{i + 1}", c.text) for i, c in enumerate(criteria)]
        reply = client.chat.completions.create(
            model=MODEL,
            messages=batched_messages(prompt[0]["content"], completion[0]["content"], labels),
            temperature=0.0,
        )
        return parse_batched(reply.choices[0].message.content, [label for label, _ in labels])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(grade, items))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--criteria", type=int, default=12)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--capacity", type=int, default=256)
    args = parser.parse_args()

    batch = make_batch(args.prompts, args.generations, args.criteria)
    responses = len(batch[0])
    requests = responses  # one call per response, all criteria in it
    bound = args.latency * math.ceil(requests / args.capacity)
    server, base_url = start_server(args.latency, args.capacity)
    try:
        first_s, rubric_reward_s = asyncio.run(grade_with_rubric_reward(base_url, args.capacity, batch))
        peak = server_stats(base_url)["max_concurrent"]
        bare_s = asyncio.run(grade_through_bare_aiohttp(base_url, args.capacity, batch))
        pool_s = grade_one_call_per_response(base_url, batch, THREADS)
        subset_s = grade_one_call_per_response(base_url, batch, 1, limit=SEQUENTIAL_SUBSET)
    finally:
        server.terminate()
        server.wait()
    sequential_s = subset_s * responses / SEQUENTIAL_SUBSET

    print(f"batch: {args.prompts} prompts x {args.generations} completions = {responses} responses, "
          f"{args.criteria} llm criteria each; judge latency {args.latency:.2f} s, capacity {args.capacity}")
    print(f"request shape: all criteria in one call -> {requests} requests; "
          f"bound = latency * ceil({requests}/{args.capacity}) = {bound:.2f} s")
    print(f"{'grader':<48}{'wall s':>10}{'x bound':>10}{'x RubricReward':>16}")
    rows = [
        ("RubricReward, first batch (opens connections)", first_s),
        ("RubricReward, steady state (every later step)", rubric_reward_s),
        ("  the same through bare aiohttp (no openai client)", bare_s),
        (f"thread pool ({THREADS} threads, 1 call/response)", pool_s),
        (f"sequential (measured on {SEQUENTIAL_SUBSET}, scaled x{responses // SEQUENTIAL_SUBSET})", sequential_s),
    ]
    for name, seconds in rows:
        print(f"{name:<48}{seconds:>10.2f}{seconds / bound:>10.2f}{seconds / rubric_reward_s:>16.1f}")
    print(f"peak concurrent requests at the server during RubricReward: {peak}")
    print("(the ratio below is RubricReward's steady-state wall time over the bound)")
    print(f"bound_ratio: {rubric_reward_s / bound:.3f}")


if __name__ == "__main__":
    main()
