"""Collect candidate responses per prompt from several sources, each tagged with its generator's name.

    python scripts/collect_responses.py --prompts rubrics.jsonl --out responses.jsonl \
        --source '{"type": "policy", "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "samples": 4,
                   "temperature": 1.0}' \
        --source '{"type": "openai", "name": "qwen8b", "samples": 2, "endpoint": {"model": "Qwen/Qwen3-8B",
                   "base_urls": ["http://127.0.0.1:8000/v1"], "temperature": 0.8}}' \
        --source '{"type": "rewrite", "name": "improved", "endpoint": "rewriter.yaml", "of": ["qwen8b"]}' \
        --source '{"type": "jsonl", "path": "more_responses.jsonl", "name": "human"}'

Each `--source` is a JSON object or a YAML/JSON path; the types are described in `rubric_rft.rubricgen.responses`.
Sources run in the order given (rewrites see what earlier sources collected). Appends `{prompt_id, generator,
index, response, ...}` lines to `--out`; a rerun skips every (prompt_id, generator, index) already there. Failed
requests are listed in `<out>.errors.jsonl` and the exit status is 1; a rerun tries them again.
"""

import argparse
import asyncio
import logging
import sys

from rich.console import Console
from rich.table import Table

from rubric_rft.logs import setup_logging
from rubric_rft.rubricgen.records import errors_path, load_prompts
from rubric_rft.rubricgen.responses import collect_responses, load_source


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", required=True, help="Prompts (or a rubric dataset): JSON/JSONL with `prompt`.")
    parser.add_argument("--out", required=True, help="Responses JSONL to append to.")
    parser.add_argument("--source", action="append", required=True, help="A source config (repeat for several).")
    return parser.parse_args()


def main() -> int:
    setup_logging(logging.WARNING)
    args = parse_args()
    sources = [load_source(value) for value in args.source]  # a bad config fails before any request
    summary = asyncio.run(collect_responses(load_prompts(args.prompts), sources, args.out))
    table = Table(title="responses written, by generator")
    table.add_column("generator")
    table.add_column("written", justify="right")
    for generator, count in sorted(summary.written.items()):
        table.add_row(generator, str(count))
    console = Console()
    console.print(table)
    console.print(
        f"{args.out}: {summary.skipped} already there, {len(summary.errors)} failed "
        f"({summary.costs.calls} requests, {summary.costs.retries} retries, {summary.costs.cache_hits} cached)"
    )
    if summary.errors:
        console.print(f"failed requests: {errors_path(args.out)} (a rerun tries them again)")
    return 1 if summary.errors else 0


if __name__ == "__main__":
    sys.exit(main())
