"""Write an initial rubric for every prompt with a proposer LLM behind an OpenAI-compatible endpoint.

    python scripts/generate_rubrics.py --prompts prompts.jsonl --out rubrics.jsonl \
        --proposer '{"model": "Qwen/Qwen3-8B", "base_urls": ["http://127.0.0.1:8000/v1"], "max_tokens": 2048}'

`--prompts`: JSON/JSONL records with `prompt` (text or chat messages) and optionally `prompt_id` and `reference`
(dataset rows of any format `rubric_rft.rubrics.imports` reads work too). `--proposer`: a `ChatEndpointConfig`
(JSON or a YAML/JSON path; set `cache_path` to make reruns free). Writes `--out`, dataset rows `{prompt_id, prompt,
rubric, reference?}` that `scripts/train_grpo.py` and `scripts/refine_rubrics.py` read. A rerun skips prompts that
have a rubric; prompts whose answers never validated are listed in `<out>.errors.jsonl` and the exit status is 1.
"""

import argparse
import asyncio
import logging
import sys

from rich.console import Console

from rubric_rft.llm.endpoint import load_endpoint
from rubric_rft.logs import setup_logging
from rubric_rft.rubricgen.generate import generate_rubrics
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.records import errors_path, load_prompts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", required=True, help="Prompts: JSON/JSONL with `prompt` per record.")
    parser.add_argument("--proposer", required=True, help="Proposer endpoint config: JSON or a YAML/JSON path.")
    parser.add_argument("--out", required=True, help="Rubric dataset to write (.jsonl).")
    parser.add_argument("--max-criteria", type=int, default=12, help="Most criteria per rubric.")
    parser.add_argument("--no-reference", action="store_true", help="Do not show reference answers.")
    return parser.parse_args()


async def run(args: argparse.Namespace):
    proposer = RubricProposer(load_endpoint(args.proposer, "proposer config"), max_criteria=args.max_criteria)
    try:
        return await generate_rubrics(
            load_prompts(args.prompts), proposer, args.out, use_reference=not args.no_reference
        )
    finally:
        await proposer.aclose()


def main() -> int:
    setup_logging(logging.WARNING)
    args = parse_args()
    summary = asyncio.run(run(args))
    console = Console()
    console.print(
        f"{args.out}: {summary.written} rubrics written, {summary.resumed} already there, {len(summary.errors)} "
        f"failed ({summary.costs.calls} proposer calls, {summary.costs.retries} retries, "
        f"{summary.costs.cache_hits} cached)"
    )
    for prompt_id, error in summary.errors.items():
        console.print(f"[red]{prompt_id}[/red]: {error}", highlight=False)
    if summary.errors:
        console.print(f"failed prompts: {errors_path(args.out)} (a rerun tries them again)")
    return 1 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
