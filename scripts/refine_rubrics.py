"""Refine rubrics by progressive differentiation: tail pairs, gold preferences, tested proposer edits, round by round.

    python scripts/refine_rubrics.py --rubrics rubrics.jsonl --responses responses.jsonl --out-dir outputs/refine \
        --proposer proposer.yaml --judge judge.yaml --gold gold_judge.yaml
    python scripts/refine_rubrics.py ... --gold '{"backend": "rubric"}' --gold-rubrics gold_rubrics.jsonl
    python scripts/refine_rubrics.py ... --rounds 6            # continue a finished run for two more rounds
    python scripts/refine_rubrics.py ... --pairs 8 --acceptance '{"holdout_fraction": 0.5, "min_pairs": 4}'

`--judge` grades the rubrics' llm criteria (any judge config; rule criteria need none). `--gold` is a pairwise
judge config (`rubric_rft.pairwise.judges`), asked in both orders; without it, the candidates' `label`s decide. An
edit is kept only when it passes the acceptance test online refinement uses; `--acceptance` (JSON) overrides the
offline defaults, `rubric_rft.rubricgen.refine.OFFLINE_ACCEPTANCE`. The method and the files in `--out-dir` are
described in `rubric_rft.rubricgen.refine`; `--out-dir/rubrics.jsonl` is the refined dataset for
`scripts/train_grpo.py`. An interrupted run resumes when run again with the same arguments.
"""

import argparse
import asyncio
import json
import logging
import sys

from rich.console import Console
from rich.table import Table

from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.llm.endpoint import load_endpoint
from rubric_rft.logs import setup_logging
from rubric_rft.rubricgen.gold import build_gold
from rubric_rft.rubricgen.proposer import RubricProposer
from rubric_rft.rubricgen.records import load_candidates, load_rubric_rows
from rubric_rft.rubricgen.refine import OFFLINE_ACCEPTANCE, RefineConfig, RefineResult, refine_rubrics
from rubric_rft.rubricgen.selection import SelectionConfig


def parse_args() -> argparse.Namespace:
    defaults, selection = RefineConfig(), SelectionConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rubrics", required=True, help="Rubric dataset to refine (rows with prompts).")
    parser.add_argument("--responses", required=True, help="Candidate responses (scripts/collect_responses.py).")
    parser.add_argument("--out-dir", required=True, help="State and results folder (resumable).")
    parser.add_argument("--proposer", required=True, help="Proposer endpoint config: JSON or a YAML/JSON path.")
    parser.add_argument("--judge", help="Judge config for llm criteria: JSON or a YAML/JSON path.")
    parser.add_argument("--gold", help="Pairwise gold judge config; default: the candidates' labels.")
    parser.add_argument("--gold-rubrics", help="Gold rubric dataset, for a gold judge with backend 'rubric'.")
    parser.add_argument("--rounds", type=int, default=defaults.max_rounds, help="Most refinement rounds.")
    parser.add_argument("--pairs", type=int, default=selection.num_pairs, help="Pairs per prompt and round.")
    parser.add_argument("--tail-fraction", type=float, default=selection.tail_fraction, help="Top share in the tail.")
    parser.add_argument("--min-tail", type=int, default=selection.min_tail, help="Fewest candidates in the tail.")
    parser.add_argument("--max-similarity", type=float, default=selection.max_similarity, help="Token Jaccard cap.")
    parser.add_argument("--same-generator-pairs", action="store_true", help="Allow pairs of one generator.")
    parser.add_argument("--threshold", type=float, default=defaults.agreement_threshold, help="Agreement to stop.")
    parser.add_argument("--patience", type=int, default=defaults.patience, help="Rounds at the threshold to stop.")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--hide-scores", action="store_true", help="Do not show the proposer the current scores.")
    parser.add_argument("--acceptance", type=json.loads, default={},
                        help="Acceptance test settings (JSON), over the offline defaults; see rubricgen.acceptance.")
    return parser.parse_args()


async def run(args: argparse.Namespace, config: RefineConfig) -> RefineResult:
    proposer = RubricProposer(load_endpoint(args.proposer, "proposer config"))
    judge = build_judge(load_judge_config(args.judge)) if args.judge else None
    gold = build_gold(args.gold, args.gold_rubrics)
    try:
        return await refine_rubrics(
            load_rubric_rows(args.rubrics),
            load_candidates(args.responses),
            proposer=proposer,
            judge=judge,
            gold=gold,
            out_dir=args.out_dir,
            config=config,
        )
    finally:
        await asyncio.gather(proposer.aclose(), gold.aclose(), *([judge.aclose()] if judge else []))


def main() -> int:
    setup_logging(logging.WARNING)
    args = parse_args()
    selection = SelectionConfig(
        num_pairs=args.pairs,
        tail_fraction=args.tail_fraction,
        min_tail=args.min_tail,
        max_similarity=args.max_similarity,
        distinct_generators=not args.same_generator_pairs,
    )
    try:
        config = RefineConfig(
            max_rounds=args.rounds,
            selection=selection,
            agreement_threshold=args.threshold,
            patience=args.patience,
            seed=args.seed,
            show_scores=not args.hide_scores,
            acceptance={**OFFLINE_ACCEPTANCE, **args.acceptance},
        )
    except ValueError as exc:  # a setting out of range: the error names it
        raise SystemExit(f"refine_rubrics.py: {exc}") from None
    result = asyncio.run(run(args, config))
    table = Table(title=f"refinement rounds ({args.out_dir})")
    for column in ("round", "prompts", "statuses", "mean agreement"):
        table.add_column(column, justify="left" if column == "statuses" else "right")
    for summary in result.rounds:
        statuses = ", ".join(f"{status} {count}" for status, count in summary["status"].items())
        agreement = summary["mean_agreement"]
        table.add_row(
            str(summary["round"]), str(summary["prompts"]), statuses, "-" if agreement is None else f"{agreement:.3f}"
        )
    console = Console()
    console.print(table)
    final = result.as_dict()["final_status"]
    console.print(f"final: {', '.join(f'{s} {n}' for s, n in final.items())}; rubrics: {args.out_dir}/rubrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
