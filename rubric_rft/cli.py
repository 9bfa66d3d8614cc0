"""The `rubric-rft` command line: check, convert and grade rubric files, serve a judge, compare over-optimization
across runs.

Each subcommand is a function taking the parsed arguments and returning the exit status, listed once in
`SUBCOMMANDS` with the function that declares its arguments. Bad input is reported as one message on stderr
that starts with `file:line` or the config field (exit status 1), never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rubric_rft import __version__
from rubric_rft.config_values import ConfigError
from rubric_rft.llm.serving import JudgeServerError
from rubric_rft.rubrics.format import RubricFileError, write_json_records
from rubric_rft.rubrics.imports import FORMATS, import_records


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="the format of every record (default: detected from each record's content)",
    )


def _add_pitfall_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pitfall-phrasing",
        choices=("mentions", "avoids"),
        default="mentions",
        help="how Rubrics-as-Rewards pitfalls are phrased: 'mentions X' (met is bad, the weight stays negative) "
        "or 'avoids X' (met is good, the weight becomes positive)",
    )


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a JSON or JSONL file of rubrics or dataset rows, in any format")
    _add_format_option(parser)
    _add_pitfall_option(parser)


def _validate(args: argparse.Namespace) -> int:
    """Import every record, which validates it, and summarise what the file holds."""
    formats: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for imported in import_records(args.file, args.format, args.pitfall_phrasing):
        formats[imported.format] += 1
        kinds.update(criterion["kind"] for criterion in imported.row["rubric"]["criteria"])
    if not formats:
        raise RubricFileError(f"{args.file}: no records")
    print(
        f"{args.file}: {_count(formats.total(), 'valid record')} "
        f"(formats: {', '.join(f'{name} {count}' for name, count in formats.items())}), "
        f"{_count(kinds.total(), 'criterion', 'criteria')} ({kinds['llm']} llm, {kinds['rule']} rule)"
    )
    return 0


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a JSON or JSONL file of rubrics, in any format")
    parser.add_argument("output", type=Path, help="where to write: JSONL, or a JSON list for a .json path")
    _add_format_option(parser)
    _add_pitfall_option(parser)
    parser.add_argument(
        "--rubrics-only", action="store_true", help="write bare rubrics (as save_rubrics does), not dataset rows"
    )


def _convert(args: argparse.Namespace) -> int:
    """Convert every record, then write them all: a bad record leaves no half-written output behind."""
    records = []
    for imported in import_records(args.input, args.format, args.pitfall_phrasing):
        if args.rubrics_only:
            records.append(imported.row["rubric"])
        elif "prompt" not in imported.row:
            raise RubricFileError(
                f"{imported.location}: a bare rubric has no prompt to train on; convert with --rubrics-only"
            )
        else:
            records.append(imported.row)
    if not records:
        raise RubricFileError(f"{args.input}: no records")
    write_json_records(records, args.output)
    what = "rubrics" if args.rubrics_only else "dataset rows"
    print(f"converted {_count(len(records), 'record')} from {args.input} to {what} in {args.output}")
    return 0


def _overopt_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", help="output directories of runs trained with `monitor:`")
    parser.add_argument("--out", type=Path, required=True, help="PREFIX: writes PREFIX.png and PREFIX.json")
    parser.add_argument(
        "--pattern",
        type=_regex,
        help="a regular expression (multiline): also report and plot the share of each step's monitor samples "
        "that match it, e.g. an artifact the proxy may reward: '^- ' for bulleted lists",
    )


def _regex(text: str) -> re.Pattern:
    try:
        return re.compile(text, re.MULTILINE)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r} ({error})") from error


def _overopt_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rubric_rft.training.monitor.report import compare_runs

    rows = compare_runs(args.runs, args.out, args.pattern)
    table = Table(title="over-optimization monitor, run by run")  # a column per run: the figures are many
    table.add_column("")
    for row in rows:
        table.add_column(str(row["run"]), justify="right")
    for figure in (name for name in rows[0] if name != "run"):
        table.add_row(figure.replace("_", " "), *(_shown(row[figure]) for row in rows))
    Console(width=200).print(table)
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')}")
    return 0


def _shown(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _grade_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rubrics", type=Path, required=True, help="dataset rows with prompts and rubrics")
    parser.add_argument("--responses", type=Path, required=True, help="JSONL of {prompt_id, response, ...}")
    parser.add_argument("--judge", help="judge config (YAML/JSON path or JSON); needed for llm criteria")
    parser.add_argument("--out", type=Path, required=True, help="JSONL of graded responses, in input order")
    parser.add_argument(
        "--label-column", default="labels", help="column of {criterion id: true|false} labels (default: labels)"
    )
    parser.add_argument(
        "--cache", type=Path, help="verdict cache when the judge config sets none (default: OUT.cache.sqlite)"
    )


def _grade(args: argparse.Namespace) -> int:
    """Grade every response with a progress bar, write one line per response and a summary beside it, and print
    the summary (and the judge's agreement with labels, if any). Exit status 1 when a response failed to grade."""
    import asyncio

    from tqdm import tqdm

    from rubric_rft.evaluation.grading import agreement, grade_responses, graded_record, load_responses, summarize
    from rubric_rft.judges.registry import build_judge, load_judge_config
    from rubric_rft.reward.rubric_reward import RubricReward
    from rubric_rft.rubricgen.records import load_rubric_rows, replace_file

    rubrics = {row.prompt_id: row for row in load_rubric_rows(args.rubrics)}
    responses = load_responses(args.responses, rubrics, args.label_column)
    judge = None
    if args.judge:
        try:
            config = load_judge_config(args.judge)
        except ValueError as exc:
            raise RubricFileError(str(exc)) from None
        if config.cache_path is None:
            cache = args.cache or args.out.with_name(f"{args.out.name}.cache.sqlite")
            config = config.model_copy(update={"cache_path": str(cache)})
        judge = build_judge(config)
    elif any(rubrics[r.prompt_id].rubric.llm_criteria for r in responses):
        raise RubricFileError(f"{args.rubrics}: the rubrics have llm criteria; give a judge config with --judge")
    started = time.monotonic()
    with tqdm(total=len(responses), desc="grading", unit="response") as progress:
        graded = asyncio.run(grade_responses(RubricReward(judge), rubrics, responses, lambda: progress.update()))
    records = [graded_record(r, rubrics[r.prompt_id].rubric, g) for r, g in zip(responses, graded, strict=True)]
    summary = {"summary": summarize(records, time.monotonic() - started), "agreement": agreement(records)}
    replace_file(args.out, records)
    summary_path = args.out.with_name(f"{args.out.stem}.summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    _print_grade_summary(summary, judge.name if judge else "rules only")
    print(f"wrote {args.out} and {summary_path}")
    for record in records:
        if record["error"]:
            print(f"failed: {record['prompt_id']}/{record['response_id']}: {record['error']}", file=sys.stderr)
    return 1 if summary["summary"]["failed"] else 0


def _print_grade_summary(summary: dict, judge_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"graded with {judge_name}", show_header=False)
    figures = dict(summary["summary"])
    if summary["agreement"]:
        figures.update({f"agreement: {k.replace('_', ' ')}": v for k, v in summary["agreement"].items()})
    for name, value in figures.items():
        table.add_row(
            name.replace("_", " "), "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        )
    Console(width=120).print(table)


def _serve_judge_arguments(parser: argparse.ArgumentParser) -> None:
    from rubric_rft.llm.serving import DEFAULT_JUDGE_MODEL, ENGINES, EngineOptions

    defaults = EngineOptions()
    parser.add_argument(
        "--engine",
        choices=("auto", *ENGINES),
        default="auto",
        help="vllm (vLLM's OpenAI server), transformers (`transformers serve`), or auto: vllm when `import vllm` "
        "works, else transformers (default)",
    )
    parser.add_argument("--model", default=DEFAULT_JUDGE_MODEL, help="a local folder or a model found offline")
    parser.add_argument(
        "--served-model-name", help="the name requests must give as `model` (default: --model), as in vLLM"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the first answer")
    parser.add_argument("--write-config", type=Path, help="also write the judge config YAML pointing at the server")
    served = parser.add_argument_group("transformers serve")
    served.add_argument("--device", default=defaults.device, help="cpu, cuda:0, auto, ...")
    served.add_argument(
        "--no-continuous-batching",
        dest="continuous_batching",
        action="store_false",
        help="answer one request at a time (continuous batching is ~4x faster for concurrent judge calls)",
    )
    served.add_argument(
        "--kv-cache-blocks",
        type=int,
        default=defaults.kv_cache_blocks,
        help="KV cache size in blocks; transformers' default takes 60-90%% of free memory (RAM on CPU)",
    )
    served.add_argument("--max-batch-tokens", type=int, default=defaults.max_batch_tokens, help="tokens per pass")
    vllm = parser.add_argument_group("vllm")
    vllm.add_argument("--kv-cache-gib", type=_whole_gib, default=defaults.kv_cache_gib, help="CPU KV cache, whole GiB")
    vllm.add_argument(
        "--gpu-memory-utilization",
        type=_gpu_share,
        default=defaults.gpu_memory_utilization,
        help="on a CUDA GPU, the share of its memory for vLLM's weights and KV cache (on the CPU: --kv-cache-gib)",
    )
    vllm.add_argument("--max-model-len", type=int, default=defaults.max_model_len, help="context length in tokens")
    vllm.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        help="compute again the prompt start every judge question shares (system prompt, worked examples)",
    )


def _whole_gib(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of GiB, at least 1, got {text!r}")
    return int(text)


def _gpu_share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = 0.0
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"expected a share of the GPU's memory in (0, 1], got {text!r}")
    return share


def _serve_judge(args: argparse.Namespace) -> int:
    """Start the judge server, wait until it answers, print how to point a judge config at it, and keep it
    running until Ctrl-C or SIGTERM (which stop the server too)."""
    import dataclasses
    import signal

    import yaml

    from rubric_rft.llm.serving import EngineOptions, start_judge_server, stop_judge_server

    started = time.monotonic()
    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(EngineOptions)}
    served = start_judge_server(
        args.model,
        engine=args.engine,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port,
        ready_timeout_s=args.ready_timeout,
        **options,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds through `finally`, like Ctrl-C
    try:
        config = served.judge_config()
        print(f"judge server ({served.engine}) ready in {time.monotonic() - started:.0f} s (log: {served.log_path})")
        print(yaml.safe_dump({"judge": config}, sort_keys=False).rstrip(), flush=True)
        if args.write_config:
            args.write_config.write_text(yaml.safe_dump(config, sort_keys=False))
            print(f"wrote {args.write_config}", flush=True)
        return served.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_judge_server(served)


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


@dataclass(frozen=True)
class Subcommand:
    """One `rubric-rft NAME ...` command: the function declaring its arguments and the one running it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS = (
    Subcommand("validate", "check a rubric or dataset file and summarise it", _validate_arguments, _validate),
    Subcommand("convert", "convert rubrics of any known format to dataset rows", _convert_arguments, _convert),
    Subcommand("grade", "grade responses against their rubrics with a judge", _grade_arguments, _grade),
    Subcommand(
        "serve-judge",
        "serve a local judge model with vLLM or `transformers serve`",
        _serve_judge_arguments,
        _serve_judge,
    ),
    Subcommand(
        "overopt-report", "compare the monitor's findings across runs", _overopt_report_arguments, _overopt_report
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rubric-rft", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        subparser = subparsers.add_parser(subcommand.name, help=subcommand.help, description=subcommand.help)
        subcommand.add_arguments(subparser)
        subparser.set_defaults(run=subcommand.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (argparse exits with 2 on a bad command line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (RubricFileError, JudgeServerError, ConfigError) as exc:
        print(exc, file=sys.stderr)
    except OSError as exc:
        print(f"{exc.filename}: {exc.strerror}" if exc.filename else exc, file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
