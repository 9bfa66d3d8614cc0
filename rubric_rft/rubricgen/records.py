"""The records the rubric tools read and write, and the append-only JSONL files that make them resumable.

- prompts: any JSON/JSONL record with a `prompt` (text or chat messages), optionally `prompt_id` and `reference`
  (the ids and references that `rubric_rft.rubrics.imports` reads, so dataset rows of any known format work too);
- rubric rows: dataset rows `{prompt_id, prompt, rubric, reference?}` (what `load_prompt_dataset` trains on);
- candidates: `{prompt_id, generator, index, response, ...}`, one response of one generator to one prompt.

Appended files are written one line at a time and read back tolerating a cut-off last line, so a run killed
mid-write resumes from its last complete record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from rubric_rft.config_values import parse_json
from rubric_rft.rubrics.datasets import render_prompt
from rubric_rft.rubrics.format import Rubric, RubricFileError, iter_json_records, validated_record
from rubric_rft.rubrics.imports import Key, Prompt, prompt_key, read_records


@dataclass(frozen=True)
class PromptRow:
    """One prompt: chat messages, its id, a reference answer if known, and its rubric once it has one."""

    prompt_id: str
    prompt: list[dict[str, str]]
    reference: str | None = None
    rubric: Rubric | None = None

    @property
    def text(self) -> str:
        """The conversation as plain text, as judges and the proposer see it."""
        return render_prompt(self.prompt)

    def as_row(self) -> dict[str, Any]:
        """The dataset row `load_prompt_dataset` reads."""
        if self.rubric is None:
            raise ValueError(f"prompt {self.prompt_id!r} has no rubric")
        row: dict[str, Any] = {"prompt_id": self.prompt_id, "prompt": self.prompt}
        row["rubric"] = self.rubric.model_dump(mode="json", exclude_none=True)
        if self.reference:
            row["reference"] = self.reference
        return row


class _PromptRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: Prompt = Field(validation_alias=AliasChoices("prompt", "question"))
    prompt_id: Key | None = None
    id: Key | None = None
    reference: str | None = Field(default=None, validation_alias=AliasChoices("reference", "reference_answer"))


def load_prompts(path: str | Path) -> list[PromptRow]:
    """Prompts to write rubrics for; ids default as in `rubric_rft.rubrics.imports` (sha1 of the messages)."""
    rows = []
    for location, record in iter_json_records(Path(path)):
        parsed = validated_record(location, record, _PromptRecord)
        messages = [m.model_dump() for m in parsed.prompt]
        key = parsed.prompt_id or parsed.id or prompt_key(parsed.prompt)
        rows.append((location, PromptRow(key, messages, parsed.reference or None)))
    return _unique(rows, path)


def load_rubric_rows(path: str | Path) -> list[PromptRow]:
    """Dataset rows with prompts and rubrics, in any format `rubric_rft.rubrics.imports` reads."""
    rows = []
    for location, row in read_records(path):
        if "prompt" not in row:
            raise RubricFileError(f"{location}: a bare rubric has no prompt; these tools need dataset rows")
        rubric = Rubric.model_validate(row["rubric"])
        rows.append((location, PromptRow(str(row["prompt_id"]), row["prompt"], row.get("reference"), rubric)))
    return _unique(rows, path)


def _unique(rows: list[tuple[str, PromptRow]], path: str | Path) -> list[PromptRow]:
    seen: dict[str, str] = {}
    for location, row in rows:
        if row.prompt_id in seen:
            raise RubricFileError(f"{location}: prompt_id {row.prompt_id!r} repeats {seen[row.prompt_id]}")
        seen[row.prompt_id] = location
    if not rows:
        raise RubricFileError(f"{path}: no records")
    return [row for _, row in rows]


class Candidate(BaseModel):
    """One candidate response: `generator` names where it came from, `index` numbers its samples.

    `rewrite_of` is `{"generator", "index"}` of the response a rewrite improved; `label` an optional known
    quality score (higher is better) that can stand in for a gold judge.
    """

    model_config = ConfigDict(extra="forbid")

    prompt_id: str = Field(min_length=1)
    generator: str = Field(min_length=1)
    index: int = Field(ge=0)
    response: str
    rewrite_of: dict[str, Any] | None = None
    label: float | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.prompt_id, self.generator, self.index)

    @property
    def name(self) -> str:
        """`generator#index`, how reports refer to it."""
        return f"{self.generator}#{self.index}"


def load_candidates(path: str | Path) -> list[Candidate]:
    """Candidates from a JSONL file (a cut-off last line is skipped); errors name the file, line and field."""
    candidates, seen = [], {}
    for location, record in read_appended(Path(path)):
        candidate = validated_record(location, record, Candidate)
        if candidate.key in seen:
            raise RubricFileError(f"{location}: candidate {candidate.key} repeats {seen[candidate.key]}")
        seen[candidate.key] = location
        candidates.append(candidate)
    return candidates


def read_appended(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """`(file:line, record)` of an append-only JSONL file; a last line without its newline (a write cut off
    by a crash) is skipped when it does not parse, any other bad line is an error."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: cut off mid-write
                break
            raise RubricFileError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise RubricFileError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((f"{path}:{number}", record))
    return records


class Appender:
    """Appends records to a JSONL file, one complete line per write, flushed (what `read_appended` reads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_line()
        self._handle = self.path.open("a", encoding="utf-8")

    def _drop_partial_line(self) -> None:
        """Cut a last line that a crash left without its newline, so the next record starts on its own line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def write(self, record: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def errors_path(out: str | Path) -> Path:
    """Where a tool writing `out` lists what it could not do: `<out stem>.errors.jsonl` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.errors.jsonl")


def write_errors(out: str | Path, errors: list[dict[str, Any]]) -> None:
    """List `errors` beside `out`, or remove a stale list when there are none."""
    if errors:
        replace_file(errors_path(out), errors)
    else:
        errors_path(out).unlink(missing_ok=True)


def replace_file(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write JSONL to a temporary sibling and rename it into place: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(temporary, path)
