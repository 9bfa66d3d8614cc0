"""The `rubric-rft` command line: check and convert rubric files, compare over-optimization across runs.

Each subcommand is a function taking the parsed arguments and returning the exit status, listed once in
`SUBCOMMANDS` with the function that declares its arguments. Bad input is reported as one message on stderr
that starts with `file:line` (exit status 1), never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rubric_rft.formats import FORMATS, import_records
from rubric_rft.rubric import RubricFileError, write_json_records


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


def _overopt_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rubric_rft.monitor.report import compare_runs

    rows = compare_runs(args.runs, args.out)
    table = Table(title="over-optimization monitor, run by run")
    for column in rows[0]:
        table.add_column(column.replace("_", " "), justify="left" if column == "run" else "right")
    for row in rows:
        table.add_row(*("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=200).print(table)
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')}")
    return 0


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
    Subcommand(
        "overopt-report", "compare the monitor's findings across runs", _overopt_report_arguments, _overopt_report
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rubric-rft", description=__doc__.splitlines()[0])
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
    except RubricFileError as exc:
        print(exc, file=sys.stderr)
    except OSError as exc:
        print(f"{exc.filename}: {exc.strerror}" if exc.filename else exc, file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
