"""Rubric quality on held-out comparisons, rubric sets side by side (before and after refinement, say).

    python scripts/rubric_report.py --rubrics before=rubrics.jsonl --rubrics after=outputs/refine/rubrics.jsonl \
        --responses heldout_responses.jsonl --gold gold_judge.yaml --judge judge.yaml --out outputs/report
    python scripts/rubric_report.py --rubrics v1=a.jsonl --pairs labelled_pairs.jsonl --out outputs/report

Comparisons come from `--pairs` (`{prompt_id, response_a, response_b, preference?}`; preference "A", "B", "tie"
or A's share in [0, 1]) or from every pair of each prompt's responses in `--responses` (a collected responses
file; held-out responses, not the ones refined on). Unlabelled comparisons are labelled by `--gold` (a pairwise
judge config, both orders; with backend 'rubric', by `--gold-rubrics`). The figures are described in
`rubric_rft.rubricgen.report`. Prints a table and writes `--out`.json and `--out`.png.
"""

import argparse
import asyncio
import logging
import sys

from rich.console import Console

from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.logs import setup_logging
from rubric_rft.rubricgen.gold import build_gold
from rubric_rft.rubricgen.records import load_candidates, load_rubric_rows
from rubric_rft.rubricgen.report import (
    QualityReport,
    comparisons_from_candidates,
    load_comparisons,
    quality_table,
    rubric_report,
    write_report,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rubrics", action="append", required=True, help="NAME=PATH of a rubric dataset (repeat).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pairs", help="Comparisons JSON/JSONL.")
    source.add_argument("--responses", help="Held-out responses JSONL; every pair of a prompt's responses.")
    parser.add_argument("--max-pairs-per-prompt", type=int, help="Sample this many pairs per prompt (--responses).")
    parser.add_argument("--gold", help="Pairwise gold judge config, for unlabelled comparisons.")
    parser.add_argument("--gold-rubrics", help="Gold rubric dataset, for a gold judge with backend 'rubric'.")
    parser.add_argument("--judge", help="Judge config for the rubrics' llm criteria.")
    parser.add_argument("--tail-fraction", type=float, default=0.5, help="Top share of responses in the gold tail.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="PREFIX: writes PREFIX.json and PREFIX.png.")
    return parser.parse_args()


def rubric_sets(values: list[str]) -> dict:
    sets = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator or not name or not path:
            raise SystemExit(f"--rubrics {value!r}: expected NAME=PATH")
        if name in sets:
            raise SystemExit(f"--rubrics: the name {name!r} is given twice")
        sets[name] = load_rubric_rows(path)
    return sets


async def run(args: argparse.Namespace) -> QualityReport:
    if args.pairs:
        comparisons = load_comparisons(args.pairs)
    else:
        candidates = load_candidates(args.responses)
        comparisons = comparisons_from_candidates(candidates, max_per_prompt=args.max_pairs_per_prompt, seed=args.seed)
    judge = build_judge(load_judge_config(args.judge)) if args.judge else None
    gold = build_gold(args.gold, args.gold_rubrics) if args.gold else None
    try:
        return await rubric_report(
            rubric_sets(args.rubrics), comparisons, judge=judge, gold=gold, tail_fraction=args.tail_fraction
        )
    finally:
        await asyncio.gather(*([judge.aclose()] if judge else []), *([gold.aclose()] if gold else []))


def main() -> int:
    setup_logging(logging.WARNING)
    args = parse_args()
    report = asyncio.run(run(args))
    json_path, png_path = write_report(report, args.out)
    console = Console()
    console.print(quality_table(report))
    notes = [f"{report.comparisons} comparisons"]
    if report.unlabelled:
        notes.append(f"{report.unlabelled} the gold judge could not label (left out)")
    if report.dropped:
        notes.append(f"{report.dropped} about prompts some rubric set lacks (left out)")
    console.print("; ".join(notes))
    console.print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
