"""Gold win rate of a trained policy against its starting policy, or against reference answers.

    python scripts/evaluate.py --model outputs/run --prompts data/everyday/heldout_llm.jsonl --out eval.json \
        --judge '{"backend": "openai", "model": "Qwen/Qwen3-8B", "base_urls": ["http://127.0.0.1:8000/v1"]}'
    python scripts/evaluate.py --model outputs/run --baseline reference --judge gold_judge.yaml --out eval.json ...
    python scripts/evaluate.py ... --judge '{"backend": "rubric", "judge": {"backend": "openai", ...}}'

`--model` is a model folder (or name) or a LoRA adapter folder, whose base model is read from its
`adapter_config.json`. `--baseline start` compares with the starting policy (the adapter's base model, or
`--base_model`); `--baseline reference` with the dataset's `reference` column. Answers are greedy, so a rerun
judges the same texts. Every pair is judged in both orders (`rubric_rft.pairwise.judges.win_rate`). Writes `--out`:
the win rate with its bootstrap interval over prompts, the counts, position consistency, the configuration
(API keys are never in it: judge configs only name the variable holding one) and one row per prompt.
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from peft import PeftModel
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from rubric_rft.llm.generation import generate
from rubric_rft.llm.weights import resolve_model
from rubric_rft.logs import setup_logging
from rubric_rft.pairwise.judges import build_pairwise_judge, load_pairwise_judge
from rubric_rft.pairwise.win_rate import PairItem, WinRateResult, win_rate
from rubric_rft.rubrics.datasets import load_prompt_dataset, render_prompt

logger = logging.getLogger("evaluate")


@dataclass
class EvalArguments:
    model: str = field(metadata={"help": "Policy to evaluate: a model folder or name, or a LoRA adapter folder."})
    prompts: str = field(metadata={"help": "Prompts in the training dataset format: JSON/JSONL/Parquet or hub id."})
    judge: str = field(metadata={"help": "Pairwise judge config: a JSON string or a YAML/JSON file path."})
    out: str = field(metadata={"help": "The JSON report to write."})
    baseline: Literal["start", "reference"] = field(
        default="start", metadata={"help": "start: the starting policy's answers; reference: the dataset's."}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "The starting policy, for --baseline start (default: the adapter's base)."}
    )
    num_prompts: int | None = field(default=None, metadata={"help": "Use the first N prompts (default: all)."})
    split: str = field(default="train", metadata={"help": "Split, for hub datasets."})
    max_new_tokens: int = field(default=256, metadata={"help": "Answer length limit, in tokens."})
    batch_size: int = field(default=8, metadata={"help": "Prompts answered per generate call."})


def main(args: EvalArguments) -> None:
    setup_logging()
    judge_config = load_pairwise_judge(args.judge)  # a bad config fails before any model is loaded
    rows = _rows(args)
    model_path = Path(resolve_model(args.model))
    adapter_base = _adapter_base(model_path)
    if args.baseline == "start" and adapter_base is None and args.base_model is None:
        raise ValueError(f"--baseline start: {args.model} is a full model, so name the starting policy: --base_model")
    if args.baseline == "reference" and args.base_model is not None:
        raise ValueError("--base_model names the starting policy, which only --baseline start uses")

    model, tokenizer = _load(model_path, adapter_base)
    prompts = [row["prompt"] for row in rows]
    candidates = _answers(model, tokenizer, prompts, args, "candidate")
    if args.baseline == "reference":
        baselines = [row["reference"] for row in rows]
    elif args.base_model is not None:
        del model
        baselines = _answers(*_load(Path(resolve_model(args.base_model)), None), prompts, args, "baseline")
    else:
        with model.disable_adapter():
            baselines = _answers(model, tokenizer, prompts, args, "baseline")

    items = [
        PairItem(row["prompt_id"], row["prompt"], candidate, baseline, row["rubric"])
        for row, candidate, baseline in zip(rows, candidates, baselines, strict=True)
    ]
    result = asyncio.run(_judge(judge_config, items))
    config = {
        "model": args.model,
        "baseline": args.baseline,
        "base_model": (args.base_model or adapter_base) if args.baseline == "start" else None,
        "prompts": args.prompts,
        "num_prompts": args.num_prompts,
        "max_new_tokens": args.max_new_tokens,
        "judge": judge_config.model_dump(mode="json"),
    }
    report = {**result.as_dict(with_pairs=False), "config": config, "rows": _report_rows(items, result)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _print_summary(args, result, out)


def _rows(args: EvalArguments) -> list[dict]:
    dataset = load_prompt_dataset(args.prompts, args.split)
    if args.num_prompts is not None:
        if args.num_prompts < 1:
            raise ValueError(f"--num_prompts must be at least 1, got {args.num_prompts}")
        dataset = dataset.select(range(min(args.num_prompts, len(dataset))))
    rows = list(dataset)
    if args.baseline == "reference":
        missing = [row["prompt_id"] for row in rows if not row.get("reference")]
        if missing:
            raise ValueError(f"--baseline reference: {args.prompts} has no 'reference' for prompt ids {missing}")
    return rows


def _adapter_base(folder: Path) -> str | None:
    """The base model named by a LoRA adapter folder's `adapter_config.json`; None for a full model."""
    adapter_config = folder / "adapter_config.json"
    if not adapter_config.exists():
        return None
    base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_config}: no base_model_name_or_path to load the adapter onto")
    return base


def _load(folder: Path, adapter_base: str | None):
    """Model and tokenizer from `folder`; an adapter goes on its base model (the tokenizer saved with it wins)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if device == "cpu" else "auto"
    base_path = resolve_model(adapter_base) if adapter_base is not None else str(folder)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype).to(device)
    if adapter_base is not None:
        model = PeftModel.from_pretrained(model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder if (folder / "tokenizer_config.json").exists() else base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _answers(model, tokenizer, prompts: list, args: EvalArguments, who: str) -> list[str]:
    answers: list[str] = []
    with tqdm(total=len(prompts), desc=f"answering ({who})", unit="prompt") as bar:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            answered = generate(model, tokenizer, batch, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
            answers += answered.texts
            bar.update(len(batch))
    return answers


async def _judge(config, items: list[PairItem]) -> WinRateResult:
    """Judge every pair in both orders on this event loop, closing the judge's clients on it."""
    judge = build_pairwise_judge(config)
    with tqdm(total=len(items), desc="judging (both orders)", unit="pair") as bar:
        try:
            return await win_rate(judge, items, on_pair=lambda _: bar.update())
        finally:
            await judge.aclose()


def _report_rows(items: list[PairItem], result: WinRateResult) -> list[dict]:
    return [
        {
            "prompt_id": item.prompt_id,
            "prompt": render_prompt(item.prompt),
            "candidate": item.candidate,
            "baseline": item.baseline,
            "outcome": pair.outcome,
            "candidate_first": pair.candidate_first,
            "candidate_second": pair.candidate_second,
            "consistent": pair.consistent,
            "error": pair.error,
        }
        for item, pair in zip(items, result.pairs, strict=True)
    ]


def _print_summary(args: EvalArguments, result: WinRateResult, out: Path) -> None:
    estimate = result.estimate
    table = Table(title=f"Gold win rate of {args.model} against {args.baseline}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("win rate", f"{estimate.mean:.3f}")
    table.add_row(f"{result.confidence:.0%} interval (over prompts)", f"[{estimate.low:.3f}, {estimate.high:.3f}]")
    table.add_row("wins / ties / losses", f"{result.wins} / {result.ties} / {result.losses}")
    table.add_row("failed pairs (left out)", str(result.failures))
    table.add_row("position consistency", f"{result.position_consistency:.3f}")
    table.add_row("prompts", str(result.num_prompts))
    table.add_row("judge calls (retries)", f"{result.costs.calls} ({result.costs.retries})")
    console = Console()
    console.print(table)
    console.print(f"report: {out}")


if __name__ == "__main__":
    main(*HfArgumentParser((EvalArguments,)).parse_args_into_dataclasses())
