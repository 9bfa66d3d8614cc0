"""Prompt datasets with a rubric per row, loaded with `datasets`.

A row has `prompt` (chat messages, TRL's conversational format), `prompt_id`, `rubric` (the rubric as JSON
text, so rubrics of any shape share one Arrow column) and optionally `reference`. Local JSON/JSONL files may
be in any format `rubric_rft.rubrics.imports` detects; errors name the file, the line and the field.
A row without a `prompt_id` gets the same id from every source (`rubric_rft.rubrics.imports.dataset_prompt_id`),
so one prompt keeps its id across files and two prompts never share one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset
from pydantic import ValidationError

from rubric_rft.config_values import describe_validation_error
from rubric_rft.rubrics.format import Rubric, RubricFileError
from rubric_rft.rubrics.imports import dataset_prompt_id, read_records


def load_prompt_dataset(source: str, split: str = "train") -> Dataset:
    """Load a local JSON/JSONL/Parquet file or a hub dataset id into the row format above."""
    path = Path(source)
    if path.suffix in {".json", ".jsonl"}:
        rows = [_to_row(location, row) for location, row in read_records(path)]
        if not rows:
            raise RubricFileError(f"{path}: no records")
        return Dataset.from_list(rows)
    if path.suffix == ".parquet":
        dataset = load_dataset("parquet", data_files=str(path), split="train")
    else:
        dataset = load_dataset(source, split=split)
    return _validated(dataset, str(source))


def _to_row(location: str, row: dict[str, Any]) -> dict[str, Any]:
    if "prompt" not in row:
        raise RubricFileError(f"{location}: a bare rubric has no prompt to train on; training rows need 'prompt'")
    out = {"prompt_id": str(row["prompt_id"]), "prompt": as_messages(row["prompt"]), "rubric": row["rubric"]}
    if not isinstance(out["rubric"], str):
        out["rubric"] = json.dumps(out["rubric"], ensure_ascii=False)
    if row.get("reference") is not None:
        out["reference"] = row["reference"]
    return out


def _validated(dataset: Dataset, source: str) -> Dataset:
    missing = [column for column in ("prompt", "rubric") if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{source}: dataset has no {missing} column(s); columns are {dataset.column_names}. "
            "Each row needs 'prompt' (a string or chat messages) and 'rubric' (a rubric object or its JSON)."
        )
    given = dataset["prompt_id"] if "prompt_id" in dataset.column_names else [None] * len(dataset)
    rows = zip(dataset["rubric"], dataset["prompt"], given, strict=True)
    checked = [_checked(source, index, *row) for index, row in enumerate(rows)]
    dataset = dataset.remove_columns([c for c in ("rubric", "prompt_id") if c in dataset.column_names])
    dataset = dataset.add_column("rubric", [r for r, _ in checked]).add_column("prompt_id", [i for _, i in checked])
    return dataset.map(lambda row: {"prompt": as_messages(row["prompt"])})


def _checked(source: str, index: int, value: Any, prompt: Any, prompt_id: Any) -> tuple[str, str]:
    """A row's rubric as JSON text and its prompt id, as a JSON file's row gets them; errors name the row."""
    try:
        rubric = Rubric.from_value(value)
    except ValidationError as exc:
        raise RubricFileError(f"{source}: row {index}: rubric.{describe_validation_error(exc)}") from None
    try:
        return rubric.model_dump_json(exclude_none=True), dataset_prompt_id(prompt_id, rubric, prompt)
    except ValidationError as exc:
        raise RubricFileError(f"{source}: row {index}: {describe_validation_error(exc)}") from None


def as_messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """A plain-string prompt becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def render_prompt(prompt: str | list[dict[str, str]]) -> str:
    """The conversation as plain text for a judge: a lone user turn is shown as is, longer ones role by role."""
    messages = as_messages(prompt)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """The text of a TRL completion: a string, or the content of its assistant message(s)."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role", "assistant") == "assistant")
