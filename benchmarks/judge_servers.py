"""How fast two real judge servers answer the same yes/no judge questions, and what vLLM's prefix caching saves.

    python benchmarks/judge_servers.py [--questions 64] [--rounds 2] [--concurrency 64]
    python benchmarks/judge_servers.py --servers vLLM "vLLM, no prefix caching"    # prefix_cache_speedup only

The questions come from the labelled sample in data/judge_check: every response asked about every criterion of
the sample, one yes/no question per criterion (`request_shape: yes_no`, worked examples, 4 answer tokens,
temperature 0: how `rubric-rft grade` asks a small judge), in response order. They go through the project's OpenAI
judge client, at most `concurrency` in flight, to three servers on SmolLM2-135M-Instruct started by
`rubric_rft.llm.serving` with the settings of `rubric-rft serve-judge`: `transformers serve`, vLLM, and vLLM with
`--no-enable-prefix-caching`. What vLLM's prefix cache can reuse is the start the questions share token for token:
the system prompt and the worked examples for all of them, and, for the questions about one response, everything
up to the criterion (the fence code is hashed from the prompt and the response only). Printed first: the mean
share of its tokens a question has in common with the first question about the same response
(`shared_prefix_tokens`, counted with the judge's tokenizer and chat template).

The servers are up together (an idle server costs no CPU) and asked round by round: each round a fresh slice of
`questions` questions goes to each server in turn, so all three share the machine's load alike and no server is
asked a question twice (its prefix cache would answer the whole prompt from memory). An untimed warm-up slice
goes first. Printed: each server's wall time and questions per second over all rounds, then
`prefix_cache_speedup` (vLLM's questions/s with prefix caching over without) and, last,
`judge_throughput_ratio` (vLLM's questions/s over transformers serve's).
"""

import argparse
import asyncio
import contextlib
import os
import time
from pathlib import Path

from rubric_rft.evaluation.grading import load_responses
from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.serving import DEFAULT_JUDGE_MODEL, judge_server
from rubric_rft.rubricgen.records import load_rubric_rows
from rubric_rft.rubrics.datasets import render_prompt
from rubric_rft.rubrics.format import Criterion

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "judge_check"
SERVERS = {  # label -> start_judge_server options
    "transformers serve": {"engine": "transformers"},
    "vLLM": {"engine": "vllm"},
    "vLLM, no prefix caching": {"engine": "vllm", "prefix_caching": False},
}
WARM_UP_QUESTIONS = 16
Question = tuple[str, str, Criterion]  # (prompt text, response, criterion)


def sample_questions() -> list[Question]:
    """Every response of the sample with every criterion of the sample, response after response."""
    rows = load_rubric_rows(SAMPLE / "rubrics.jsonl")
    criteria = [criterion for row in rows for criterion in row.rubric.llm_criteria]
    by_id = {row.prompt_id: row for row in rows}
    responses = load_responses(SAMPLE / "responses.jsonl", by_id)
    return [(render_prompt(by_id[r.prompt_id].prompt), r.response, c) for r in responses for c in criteria]


def shared_prefix(questions: list[Question]) -> tuple[float, float]:
    """Mean tokens a question shares, as a prefix, with the first question about its response, and mean length."""
    from transformers import AutoTokenizer

    from rubric_rft.judges.prompts import demonstrated, per_criterion_yes_no_messages
    from rubric_rft.llm.weights import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_JUDGE_MODEL))

    def tokens(question: Question) -> list[int]:
        prompt, response, criterion = question
        messages = demonstrated(per_criterion_yes_no_messages(prompt, response, criterion.text), "yes_no")
        return tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)).input_ids

    first: dict[tuple[str, str], list[int]] = {}
    shared, lengths = [], []
    for question in questions:
        ids = tokens(question)
        head = first.setdefault(question[:2], ids)
        if head is not ids:
            shared.append(len(os.path.commonprefix([head, ids])))
            lengths.append(len(ids))
    return sum(shared) / len(shared), sum(lengths) / len(lengths)


def grade_requests(questions: list[Question]) -> list[GradeRequest]:
    """Consecutive questions about the same response become one request (the judge asks each criterion apart)."""
    requests: list[GradeRequest] = []
    for prompt, response, criterion in questions:
        if requests and (requests[-1].prompt, requests[-1].response) == (prompt, response):
            last = requests[-1]
            requests[-1] = GradeRequest(prompt, response, (*last.criteria, criterion))
        else:
            requests.append(GradeRequest(prompt, response, (criterion,)))
    return requests


def ask(base_url: str, questions: list[Question], concurrency: int) -> tuple[float, int]:
    """Wall seconds to grade `questions` on a fresh client, and how many responses were left ungraded (a question
    failed: not retried, so that every server answers the same requests)."""
    config = OpenAIJudgeConfig(
        model=DEFAULT_JUDGE_MODEL,
        base_urls=[base_url],
        request_shape="yes_no",
        demonstrations=True,
        max_tokens=4,
        max_concurrency=concurrency,
        timeout_s=600,
        max_retries=0,
    )
    judge = build_judge(config)

    async def run() -> list:
        try:
            return await asyncio.gather(*(judge.grade(request) for request in grade_requests(questions)))
        finally:
            await judge.aclose()

    started = time.perf_counter()
    verdicts = asyncio.run(run())
    wall_s = time.perf_counter() - started
    return wall_s, sum(len(v.criteria) == 0 for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=64, help="questions per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS),
                        help="which servers to start (default: all three)")
    args = parser.parse_args()
    servers = {label: SERVERS[label] for label in args.servers}

    questions = sample_questions()
    needed = args.questions * args.rounds + WARM_UP_QUESTIONS
    if needed > len(questions):
        parser.error(f"--questions x --rounds + {WARM_UP_QUESTIONS} warm-up must be at most {len(questions)}")
    warm_up, timed = questions[-WARM_UP_QUESTIONS:], questions[: args.questions * args.rounds]
    shared, length = shared_prefix(timed)
    print(f"shared_prefix_tokens: {shared:.0f} of {length:.0f} ({shared / length:.0%}) with the first question "
          "about the same response", flush=True)
    rounds = [timed[i : i + args.questions] for i in range(0, len(timed), args.questions)]
    wall = dict.fromkeys(servers, 0.0)
    failed = dict.fromkeys(servers, 0)
    with contextlib.ExitStack() as stack:
        started = {}
        for label, options in servers.items():
            begun = time.monotonic()
            started[label] = stack.enter_context(judge_server(DEFAULT_JUDGE_MODEL, **options))
            print(f"{label}: ready in {time.monotonic() - begun:.0f} s", flush=True)
        for served in started.values():
            ask(served.base_url, warm_up, args.concurrency)
        for batch in rounds:
            for label, served in started.items():
                seconds, failures = ask(served.base_url, batch, args.concurrency)
                wall[label] += seconds
                failed[label] += failures
    total = len(timed)
    rate = {label: total / seconds for label, seconds in wall.items()}

    print(
        f"{total} yes/no questions ({len(questions)} in the sample's cross product), {args.rounds} rounds, "
        f"{args.concurrency} in flight; SmolLM2-135M-Instruct, float32, CPU"
    )
    print(f"{'server':<28}{'wall s':>10}{'questions/s':>14}{'ungraded':>10}")
    for label in servers:
        print(f"{label:<28}{wall[label]:>10.1f}{rate[label]:>14.2f}{failed[label]:>10}")
    if {"vLLM", "vLLM, no prefix caching"} <= rate.keys():
        print(f"prefix_cache_speedup: {rate['vLLM'] / rate['vLLM, no prefix caching']:.2f}")
    if {"vLLM", "transformers serve"} <= rate.keys():
        print(f"judge_throughput_ratio: {rate['vLLM'] / rate['transformers serve']:.2f}")


if __name__ == "__main__":
    main()
