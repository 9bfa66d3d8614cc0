"""Listwise (group) judging against one-at-a-time judging on a real vLLM judge: agreement, tokens, calls, time, and
the order effect.

    python benchmarks/listwise_judging.py [--rounds 2] [--concurrency 32]

One vLLM server on SmolLM2-135M-Instruct (prefix caching off, so that no setting is answered from another's cached
prompt) grades the labelled sample in data/judge_check: each prompt's responses form a group (2-3 responses, 12
groups), every response graded against its prompt's llm criteria. For each request shape, at temperature 0, with
structured answers (a JSON schema, so a 135M judge answers in form) and no retries:
  alone            one request per response (`backend: openai`, request_shape batched or per_criterion);
  listwise         one request per group (`backend: listwise`, group_request per_rubric or per_criterion), the
                   responses shuffled (`shuffle_seed: 0`, the default);
  listwise, file   the same groups in the sample file's order, which lists the best response of each prompt first;
  listwise, rev    the same groups in the reverse order.
Printed per setting: requests and prompt/answer tokens per group, wall seconds (summed over rounds), failed grades,
accuracy against the sample's labels, and for listwise the share of "yes" by position shown (first, later); then
per shape the ratios listwise / alone (calls, tokens, wall time), `agreement` (share of the shuffled listwise
verdicts equal to one-at-a-time judging) and `order_effect` (share of verdicts that change between the file's order
and the reverse). A 135M judge grades at about chance: agreement and order effect here measure the machinery and
this judge, not what a strong judge would do. The file's order favours a judge that says yes to the first response:
accuracy in that order is no evidence of judgement.
"""

import argparse
import asyncio
import time
from collections import defaultdict

from structured_answers import sample  # the same labelled requests, from this folder

from rubric_rft.judges.base import GradeRequest, grade_all
from rubric_rft.judges.registry import build_judge
from rubric_rft.llm.serving import DEFAULT_JUDGE_MODEL, judge_server

SHAPES = {"batched": "per_rubric", "per_criterion": "per_criterion"}  # one-at-a-time shape -> listwise request


def reversed_groups(requests: list[GradeRequest]) -> list[GradeRequest]:
    """The requests with each prompt's group in the reverse order (the groups themselves in place)."""
    groups: dict[str, list[GradeRequest]] = defaultdict(list)
    for request in requests:
        groups[request.prompt].append(request)
    return [request for group in groups.values() for request in reversed(group)]


def grade(base_url: str, options: dict, requests: list[GradeRequest], concurrency: int) -> tuple[dict, dict]:
    """(totals, verdicts by (response, criterion id)) of one setting over the sample."""
    criteria = max(len(request.criteria) for request in requests)
    group = max(sum(r.prompt == request.prompt for r in requests) for request in requests)
    judge = build_judge({"model": DEFAULT_JUDGE_MODEL, "base_urls": [base_url], "max_concurrency": concurrency,
                         "timeout_s": 600, "max_retries": 0, "structured_answers": True,
                         "max_tokens": 16 + 8 * criteria * group, **options})

    async def run() -> list:
        try:
            return await grade_all(judge, requests)
        finally:
            await judge.aclose()

    started = time.perf_counter()
    verdicts = asyncio.run(run())
    wall_s = time.perf_counter() - started
    by_key = {(request.response, cid): result.satisfied
              for request, verdict in zip(requests, verdicts, strict=True) for cid, result in verdict.criteria.items()}
    first = [c.satisfied for v in verdicts if v.position == 0 for c in v.criteria.values()]
    later = [c.satisfied for v in verdicts if v.position for c in v.criteria.values()]
    totals = {"yes_first": sum(first), "graded_first": len(first), "yes_later": sum(later), "graded_later": len(later),
              "calls": sum(v.calls for v in verdicts), "failed": sum(not v.ok for v in verdicts),
              "prompt_tokens": sum(v.prompt_tokens for v in verdicts),
              "answer_tokens": sum(v.completion_tokens for v in verdicts), "wall_s": wall_s}
    return totals, by_key


def share_equal(first: dict, second: dict) -> float:
    shared = first.keys() & second.keys()
    return sum(first[key] == second[key] for key in shared) / max(len(shared), 1)


def position_bias(totals: dict) -> str:
    """`yes rate at the first position / at the later ones`, or "-" for one-at-a-time judging."""
    if not totals["graded_first"] or not totals["graded_later"]:
        return "-"
    return f"{totals['yes_first'] / totals['graded_first']:.2f} / {totals['yes_later'] / totals['graded_later']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    graded = sample()
    requests = [request for request, _ in graded]
    labels = {(request.response, cid): value for request, found in graded for cid, value in found.items()}
    groups = len({request.prompt for request in requests})
    settings = {}
    for shape, group_request in SHAPES.items():
        settings[shape, "alone"] = ({"backend": "openai", "request_shape": shape}, requests)
        listwise = {"backend": "listwise", "group_request": group_request}
        settings[shape, "listwise"] = (listwise, requests)
        settings[shape, "listwise, file"] = ({**listwise, "shuffle_seed": None}, requests)
        settings[shape, "listwise, rev"] = ({**listwise, "shuffle_seed": None}, reversed_groups(requests))
    totals: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(float))
    verdicts: dict[tuple[str, str], dict] = {}
    with judge_server(DEFAULT_JUDGE_MODEL, engine="vllm", prefix_caching=False) as served:
        grade(served.base_url, {"backend": "openai", "request_shape": "batched"}, requests[:4], args.concurrency)
        for _ in range(args.rounds):  # warm-up above; the settings in turn each round
            for setting, (options, shown) in settings.items():
                counts, verdicts[setting] = grade(served.base_url, options, shown, args.concurrency)
                for key, value in counts.items():
                    totals[setting][key] += value
    print(f"{len(requests)} responses in {groups} groups of data/judge_check, {args.rounds} rounds; vLLM (CPU), "
          "SmolLM2-135M-Instruct, temperature 0, structured answers, no retries")
    print(f"{'shape':<15}{'setting':<15}{'calls/group':>12}{'prompt tok/group':>18}{'answer tok/group':>18}"
          f"{'wall s':>9}{'failed':>8}{'accuracy':>10}{'yes first/later':>17}")
    per_group = groups * args.rounds
    for (shape, label), t in totals.items():
        found = verdicts[shape, label]
        accuracy = share_equal(found, {key: labels[key] for key in found.keys() & labels.keys()})
        print(f"{shape:<15}{label:<15}{t['calls'] / per_group:>12.2f}{t['prompt_tokens'] / per_group:>18.0f}"
              f"{t['answer_tokens'] / per_group:>18.1f}{t['wall_s']:>9.1f}{int(t['failed']):>8}{accuracy:>10.3f}"
              f"{position_bias(t):>17}")
    for shape in SHAPES:
        alone, listwise = totals[shape, "alone"], totals[shape, "listwise"]
        tokens = lambda t: t["prompt_tokens"] + t["answer_tokens"]  # noqa: E731
        print(f"{shape}: calls_ratio {listwise['calls'] / alone['calls']:.2f}; tokens_ratio "
              f"{tokens(listwise) / tokens(alone):.2f}; wall_ratio {listwise['wall_s'] / alone['wall_s']:.2f}; "
              f"agreement {share_equal(verdicts[shape, 'listwise'], verdicts[shape, 'alone']):.3f}; order_effect "
              f"{1 - share_equal(verdicts[shape, 'listwise, file'], verdicts[shape, 'listwise, rev']):.3f}")


if __name__ == "__main__":
    main()
