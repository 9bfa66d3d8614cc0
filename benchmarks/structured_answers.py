"""Structured judge answers against free ones on a real vLLM judge: malformed answers, tokens, time, agreement.

    python benchmarks/structured_answers.py [--rounds 2] [--concurrency 32]

One vLLM server on SmolLM2-135M-Instruct (the settings of `rubric-rft serve-judge --engine vllm`, prefix caching
off so that no setting is answered from another's cached prompt) grades the labelled sample in data/judge_check
(every response against its prompt's rubric) once per setting per round, the settings in turn:
  free, examples        the prompts as `rubric-rft grade` asks a small judge (worked examples, free decoding);
  structured, examples  the same prompts, the answer constrained (`structured_answers: true`);
  structured            constrained, without the worked examples (shorter prompts: the form no longer needs them).
for each request shape (batched, per_criterion, yes_no), at temperature 0, no retries (16 answer tokens, 8 more
per criterion for batched): a malformed answer is a failed grade, counted. Printed per setting: questions asked,
`malformed_rate` (answers that did not parse, per question), prompt and answer tokens per question, wall seconds
(summed over rounds), and accuracy against the sample's labels (over the criteria graded). Then, per shape, the
ratios structured / free: malformed rate, answer tokens and wall time. A 135M judge grades at about chance:
accuracy here checks that constraining the answer does not make it worse, not that the judge is good.
"""

import argparse
import asyncio
import time
from collections import defaultdict
from pathlib import Path

from rubric_rft.evaluation.grading import load_responses
from rubric_rft.judges.base import GradeRequest
from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.serving import DEFAULT_JUDGE_MODEL, judge_server
from rubric_rft.rubricgen.records import load_rubric_rows
from rubric_rft.rubrics.datasets import render_prompt

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "judge_check"
SHAPES = ("batched", "per_criterion", "yes_no")
SETTINGS = {  # label -> judge options
    "free, examples": {"demonstrations": True, "structured_answers": False},
    "structured, examples": {"demonstrations": True, "structured_answers": True},
    "structured": {"demonstrations": False, "structured_answers": True},
}


def sample():
    """(request, labels by criterion id) for every response of the sample, against its prompt's llm criteria."""
    rows = {row.prompt_id: row for row in load_rubric_rows(SAMPLE / "rubrics.jsonl")}
    graded = []
    for response in load_responses(SAMPLE / "responses.jsonl", rows):
        row = rows[response.prompt_id]
        request = GradeRequest(render_prompt(row.prompt), response.response, tuple(row.rubric.llm_criteria))
        graded.append((request, response.labels or {}))
    return graded


def grade(base_url: str, shape: str, options: dict, graded: list, concurrency: int) -> dict:
    criteria = max(len(request.criteria) for request, _ in graded)
    max_tokens = 8 + 8 * criteria if shape == "batched" else 16  # room for the whole object, whitespace included
    config = OpenAIJudgeConfig(model=DEFAULT_JUDGE_MODEL, base_urls=[base_url], request_shape=shape,
                               max_tokens=max_tokens,
                               max_concurrency=concurrency, timeout_s=600, max_retries=0, **options)
    judge = build_judge(config)

    async def run() -> list:
        try:
            return await asyncio.gather(*(judge.grade(request) for request, _ in graded))
        finally:
            await judge.aclose()

    started = time.perf_counter()
    verdicts = asyncio.run(run())
    wall_s = time.perf_counter() - started
    right = checked = 0
    for verdict, (_, labels) in zip(verdicts, graded, strict=True):
        for criterion_id, result in verdict.criteria.items():
            if criterion_id in labels:
                checked += 1
                right += result.satisfied == labels[criterion_id]
    return {"questions": sum(v.calls for v in verdicts), "malformed": sum(v.malformed for v in verdicts),
            "prompt_tokens": sum(v.prompt_tokens for v in verdicts),
            "answer_tokens": sum(v.completion_tokens for v in verdicts), "wall_s": wall_s, "right": right,
            "checked": checked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    graded = sample()
    totals: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    with judge_server(DEFAULT_JUDGE_MODEL, engine="vllm", prefix_caching=False) as served:
        grade(served.base_url, "yes_no", SETTINGS["free, examples"], graded[:4], args.concurrency)  # warm-up
        for _ in range(args.rounds):
            for shape in SHAPES:
                for label, options in SETTINGS.items():
                    for key, value in grade(served.base_url, shape, options, graded, args.concurrency).items():
                        totals[shape, label][key] += value
    print(f"{len(graded)} responses of data/judge_check, {args.rounds} rounds; vLLM (CPU), SmolLM2-135M-Instruct, "
          "temperature 0, no retries")
    print(f"{'shape':<14}{'setting':<22}{'questions':>10}{'malformed_rate':>16}{'prompt tok/q':>14}"
          f"{'answer tok/q':>14}{'wall s':>9}{'accuracy':>10}")
    for (shape, label), t in totals.items():
        accuracy = f"{t['right'] / t['checked']:.3f}" if t["checked"] else "-"
        print(f"{shape:<14}{label:<22}{int(t['questions']):>10}{t['malformed'] / t['questions']:>16.3f}"
              f"{t['prompt_tokens'] / t['questions']:>14.0f}{t['answer_tokens'] / t['questions']:>14.1f}"
              f"{t['wall_s']:>9.1f}{accuracy:>10}")
    for shape in SHAPES:
        free, structured = totals[shape, "free, examples"], totals[shape, "structured, examples"]
        bare = totals[shape, "structured"]
        print(f"{shape}: malformed_rate free {free['malformed'] / free['questions']:.3f} -> structured "
              f"{structured['malformed'] / structured['questions']:.3f}; answer_tokens_ratio "
              f"{structured['answer_tokens'] / free['answer_tokens']:.2f}; wall_ratio "
              f"{structured['wall_s'] / free['wall_s']:.2f}; without examples wall_ratio "
              f"{bare['wall_s'] / free['wall_s']:.2f}, malformed_rate {bare['malformed'] / bare['questions']:.3f}")

if __name__ == "__main__":
    main()
