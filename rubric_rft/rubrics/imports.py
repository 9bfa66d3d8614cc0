"""Import the rubric formats people already have, detected from the content of each record.

Every record becomes one dataset row in this project's format:
`{"prompt_id": str, "prompt": [{"role", "content"}, ...], "rubric": <Rubric dict>, "reference": str}`
(`reference` only when the source has one; a bare rubric has no `prompt`).

Conventions applied on import, so that scores mean the same whatever the source:
- Criteria are numbered `c1..cN` in source order unless the source has its own ids (`local_id`). RaR titles are
  dropped: the description carries the criterion, and titles repeat within a rubric.
- A negative weight is a pitfall phrased as the bad thing happening. RaR sets phrase pitfalls either way, so
  `pitfall_phrasing="avoids"` turns "avoids X" pitfalls (met is good) into positive weights.
- A zero weight is an error, never silently dropped: such a criterion cannot move the score, so it is a
  mistake in the source.
- `prompt_id` (and the rubric id) is the source's `prompt_id`, else its `id`, else `prompt_key`: the first 12 hex
  digits of the sha1 of the prompt messages as canonical JSON. Our own dataset rows (and Parquet and hub datasets,
  `dataset_prompt_id`) take the row's `prompt_id`, else the rubric's, else `prompt_key`.
- References: HealthBench `ideal_completions_data.ideal_completion`, RaR `reference_answer`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from rubric_rft.config_values import describe_validation_error, parse_json
from rubric_rft.rubrics.format import Criterion, Rubric, RubricFileError, _drop_nulls, iter_json_records

PitfallPhrasing = Literal["mentions", "avoids"]


class FormatError(RubricFileError):
    """A record in no known format, or one that does not import; the message names the field at fault."""


def _nonzero_weight(weight: float) -> float:
    if not math.isfinite(weight) or weight == 0:
        raise ValueError(f"must be a finite non-zero number (negative for a pitfall), got {weight}")
    return weight


def _key_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _messages(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the prompt is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise ValueError(f"expected a string or a list of {{role, content}} messages, got {type(value).__name__}")
    return value


Weight = Annotated[float, Field(strict=True), AfterValidator(_nonzero_weight)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Key = Annotated[str, BeforeValidator(_key_text), StringConstraints(min_length=1)]


class _Lenient(BaseModel):
    """Sources carry many fields this project does not use; only the ones read here are checked."""

    model_config = ConfigDict(extra="ignore")


class _Message(_Lenient):
    role: str
    content: str


Prompt = Annotated[list[_Message], BeforeValidator(_messages), Field(min_length=1)]


class _PromptOnly(_Lenient):
    prompt: Prompt


def prompt_key(prompt: str | Sequence[Mapping[str, Any] | _Message]) -> str:
    """A short stable id for a prompt that comes without one: the hash of its messages, so that a prompt gets the same
    id in every file and source, and a plain string the id of the same text as one user message.

    Raises `ValidationError` (field `prompt`) for an empty prompt or a message without `role` or `content`.
    """
    messages = _PromptOnly(prompt=prompt).prompt
    canonical = json.dumps([m.model_dump() for m in messages], ensure_ascii=False, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def dataset_prompt_id(prompt_id: Any, rubric: Rubric, prompt: str | Sequence[Mapping[str, Any] | _Message]) -> str:
    """A dataset row's id: its own `prompt_id`, else its rubric's, else `prompt_key`. Never the row's position nor
    the rubric's `id`, which both repeat across files: the rubric store is keyed by prompt id, so a held-out prompt
    would find a training prompt's rubric under a shared id."""
    if prompt_id is not None:
        return str(prompt_id)
    return rubric.prompt_id or prompt_key(prompt)


def _row(prompt_id: str, prompt: list[_Message] | None, rubric: Rubric, reference: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"prompt_id": prompt_id}
    if prompt is not None:
        row["prompt"] = [m.model_dump() for m in prompt]
    row["rubric"] = rubric.model_dump(mode="json", exclude_none=True)
    if reference:
        row["reference"] = reference
    return row


def _numbered(items: list[tuple[str, float]]) -> list[Criterion]:
    return [Criterion(id=f"c{index}", text=text, weight=weight) for index, (text, weight) in enumerate(items, 1)]


class _ImportedRecord(_Lenient):
    """A source record with a prompt and weighted criteria; subclasses say where the criteria are."""

    prompt: Prompt
    prompt_id: Key | None = None
    id: Key | None = None

    def to_criteria(self, pitfall_phrasing: PitfallPhrasing) -> list[Criterion]:
        raise NotImplementedError

    def reference(self) -> str | None:
        return None

    def to_row(self, pitfall_phrasing: PitfallPhrasing) -> dict[str, Any]:
        key = self.prompt_id or self.id or prompt_key(self.prompt)
        rubric = Rubric(id=key, prompt_id=key, criteria=self.to_criteria(pitfall_phrasing))
        return _row(key, self.prompt, rubric, self.reference())


class _BareRubric(Rubric):
    """Our own rubric file (what `save_rubrics` writes): validated as strictly as `load_rubrics` does."""

    def to_row(self, pitfall_phrasing: PitfallPhrasing) -> dict[str, Any]:
        return _row(self.prompt_id or self.id, None, self, None)


class _DatasetRow(_Lenient):
    """Our own dataset row. The rubric may be JSON text, and nulls in it mean absent, as in Arrow exports."""

    prompt: Prompt
    prompt_id: Key | None = None
    rubric: Rubric
    reference: str | None = None

    @field_validator("rubric", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = parse_json(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"rubric text is not valid JSON: {exc.msg}") from None
        return _drop_nulls(value)

    def to_row(self, pitfall_phrasing: PitfallPhrasing) -> dict[str, Any]:
        key = dataset_prompt_id(self.prompt_id, self.rubric, self.prompt)
        return _row(key, self.prompt, self.rubric, self.reference)


class _PaperCriterion(_Lenient):
    criterion: Text
    weight: Weight


class _Paper(_ImportedRecord):
    """Chasing the Tail, published data: `{prompt, rubrics: [{criterion, weight}], ...}`."""

    rubrics: list[_PaperCriterion] = Field(min_length=1)

    def to_criteria(self, pitfall_phrasing: PitfallPhrasing) -> list[Criterion]:
        return _numbered([(item.criterion, item.weight) for item in self.rubrics])


class _GeneratorCriterion(_PaperCriterion):
    local_id: Key


class _PaperGenerator(_ImportedRecord):
    """Chasing the Tail, rubric generator output: criteria keep the generator's `local_id`."""

    criteria: list[_GeneratorCriterion] = Field(min_length=1)

    def to_criteria(self, pitfall_phrasing: PitfallPhrasing) -> list[Criterion]:
        return [Criterion(id=item.local_id, text=item.criterion, weight=item.weight) for item in self.criteria]


class _PointsCriterion(_Lenient):
    criterion: Text
    points: Weight


class _IdealCompletions(_Lenient):
    ideal_completion: str | None = None


class _HealthBench(_ImportedRecord):
    """HealthBench: signed points, negative ones already phrased as the bad thing happening."""

    rubrics: list[_PointsCriterion] = Field(min_length=1)
    ideal_completions_data: _IdealCompletions | None = None

    def to_criteria(self, pitfall_phrasing: PitfallPhrasing) -> list[Criterion]:
        return _numbered([(item.criterion, item.points) for item in self.rubrics])

    def reference(self) -> str | None:
        return self.ideal_completions_data.ideal_completion if self.ideal_completions_data else None


class _RaRCriterion(_Lenient):
    description: Text
    weight: Weight


class _RaR(_ImportedRecord):
    """Rubrics-as-Rewards: weights 5..1, pitfalls -1/-2 whose phrasing depends on the set."""

    prompt: Prompt = Field(validation_alias=AliasChoices("question", "prompt"))
    rubric: list[_RaRCriterion] = Field(min_length=1)
    reference_answer: str | None = None

    def to_criteria(self, pitfall_phrasing: PitfallPhrasing) -> list[Criterion]:
        def weight(item: _RaRCriterion) -> float:
            return abs(item.weight) if pitfall_phrasing == "avoids" else item.weight

        return _numbered([(item.description, weight(item)) for item in self.rubric])

    def reference(self) -> str | None:
        return self.reference_answer


class _RubricHubRewardModel(_Lenient):
    rubrics: list[_PointsCriterion] = Field(min_length=1)


class _RubricHub(_ImportedRecord):
    """RubricHub / RuscaRL, verl-style: the criteria sit under `reward_model.rubrics`."""

    prompt: Prompt = Field(validation_alias=AliasChoices("prompt", "question"))
    reward_model: _RubricHubRewardModel

    def to_criteria(self, pitfall_phrasing: PitfallPhrasing) -> list[Criterion]:
        return _numbered([(item.criterion, item.points) for item in self.reward_model.rubrics])


def _item_keys(value: Any) -> set[str]:
    """The keys of the first item of a list of objects (empty for anything else): what the items look like."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return set(value[0])
    return set()


def _is_dataset_row(record: dict[str, Any]) -> bool:
    return "prompt" in record and isinstance(record.get("rubric"), (dict, str))


def _is_rubrichub(record: dict[str, Any]) -> bool:
    reward_model = record.get("reward_model")
    return isinstance(reward_model, dict) and "rubrics" in reward_model


@dataclass(frozen=True)
class _Format:
    expects: str  # what a record of the format looks like, for error messages
    matches: Callable[[dict[str, Any]], bool]
    source: type[_BareRubric | _DatasetRow | _ImportedRecord]


# Detection looks at what the items of the criteria list hold, because the list names alone are ambiguous
# (`rubrics` is the paper's and HealthBench's, `criteria` ours and the paper generator's).
_FORMATS: dict[str, _Format] = {
    "rubric": _Format("criteria: [{id, text, weight}]", lambda r: "text" in _item_keys(r.get("criteria")), _BareRubric),
    "dataset": _Format("prompt and rubric: {id, criteria}", _is_dataset_row, _DatasetRow),
    "paper": _Format(
        "prompt and rubrics: [{criterion, weight}]", lambda r: "weight" in _item_keys(r.get("rubrics")), _Paper
    ),
    "paper_generator": _Format(
        "prompt and criteria: [{criterion, weight, local_id}]",
        lambda r: "criterion" in _item_keys(r.get("criteria")),
        _PaperGenerator,
    ),
    "healthbench": _Format(
        "prompt and rubrics: [{criterion, points, tags}]",
        lambda r: "points" in _item_keys(r.get("rubrics")),
        _HealthBench,
    ),
    "rar": _Format(
        "question (or prompt) and rubric: [{title, description, weight}]",
        lambda r: "description" in _item_keys(r.get("rubric")),
        _RaR,
    ),
    "rubrichub": _Format(
        "prompt (or question) and reward_model: {rubrics: [{criterion, points}]}", _is_rubrichub, _RubricHub
    ),
}

FORMATS: tuple[str, ...] = tuple(_FORMATS)


def detect_format(record: dict[str, Any]) -> str:
    """The name of the one format `record` looks like; `FormatError` when it looks like none, or several."""
    matching = [name for name, format_ in _FORMATS.items() if format_.matches(record)]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise FormatError(f"record looks like several formats ({', '.join(matching)}); name one explicitly")
    expected = "; ".join(f"{name}: {format_.expects}" for name, format_ in _FORMATS.items())
    raise FormatError(
        f"no known rubric format matches a record with keys {_describe_keys(record)}; expected {expected}"
    )


def _describe_keys(record: dict[str, Any]) -> str:
    """Top-level keys, with the keys of list items and nested objects: `rubrics[{criterion, score}]`."""
    parts = []
    for key, value in record.items():
        if _item_keys(value):
            parts.append(f"{key}[{{{', '.join(sorted(_item_keys(value)))}}}]")
        elif isinstance(value, dict) and value:
            parts.append(f"{key}{{{', '.join(sorted(value))}}}")
        else:
            parts.append(key)
    return ", ".join(parts) or "(none)"


def to_dataset_row(
    record: dict[str, Any], fmt: str = "auto", pitfall_phrasing: PitfallPhrasing = "mentions"
) -> dict[str, Any]:
    """Import one record as a dataset row (see the module docstring); `FormatError` names the field at fault."""
    if pitfall_phrasing not in ("mentions", "avoids"):
        raise ValueError(f"pitfall_phrasing must be 'mentions' or 'avoids', got {pitfall_phrasing!r}")
    name = _checked_format_name(fmt)
    if not isinstance(record, dict):
        raise FormatError(f"expected a JSON object, got {type(record).__name__}")
    if name == "auto":
        name = detect_format(record)
    try:
        return _FORMATS[name].source.model_validate(record).to_row(pitfall_phrasing)
    except ValidationError as exc:
        raise FormatError(f"{describe_validation_error(exc)} (read as format {name!r})") from None


def _checked_format_name(fmt: str) -> str:
    if fmt != "auto" and fmt not in _FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected 'auto' or one of {', '.join(FORMATS)}")
    return fmt


class ImportedRecord(NamedTuple):
    """One imported record: where it was (`file:line`), the format it was read as, and the dataset row."""

    location: str
    format: str
    row: dict[str, Any]


def import_records(
    path: str | Path, fmt: str = "auto", pitfall_phrasing: PitfallPhrasing = "mentions"
) -> Iterator[ImportedRecord]:
    """Import every record of a JSON or JSONL file; errors (`RubricFileError`) start with `file:line`."""
    path = Path(path)
    _checked_format_name(fmt)
    try:
        for location, record in iter_json_records(path):
            try:
                name = detect_format(record) if fmt == "auto" else fmt
                row = to_dataset_row(record, name, pitfall_phrasing)
            except FormatError as exc:
                raise FormatError(f"{location}: {exc}") from None
            yield ImportedRecord(location, name, row)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text ({exc.reason})") from None


def read_records(
    path: str | Path, fmt: str = "auto", pitfall_phrasing: PitfallPhrasing = "mentions"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(location, row)` for every record of a JSON or JSONL file, in this project's row format."""
    for imported in import_records(path, fmt, pitfall_phrasing):
        yield imported.location, imported.row
