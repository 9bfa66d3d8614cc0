"""Rubric and criterion types, validation, scoring, and JSON / JSONL files.

A rubric belongs to one prompt and lists weighted criteria. A criterion is *satisfied* or not; satisfying a
criterion with a positive weight is good, satisfying one with a negative weight (a pitfall, phrased as the
bad thing happening: "Recommends a dangerous dose") costs its weight.

Score (default, `normalize=True`): sum of the weights of satisfied criteria over the sum of positive weights,
clipped to [0, 1]. With `normalize=False` the raw weighted sum is returned, as the paper's released code does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rubric_rft.config_values import describe_validation_error, parse_json

ModelT = TypeVar("ModelT", bound=BaseModel)


def checked_weight(weight: float) -> float:
    """A criterion weight: finite and non-zero (negative for a pitfall)."""
    if not math.isfinite(weight) or weight == 0:
        raise ValueError(f"weight must be a finite non-zero number (negative for a pitfall), got {weight}")
    return weight


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegexCheck(_Strict):
    """Satisfied when `pattern` matches anywhere in the response (Python `re.search`)."""

    type: Literal["regex"] = "regex"
    pattern: str
    ignore_case: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        import re

        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return pattern


class ContainsCheck(_Strict):
    """Satisfied when the response contains at least `min_matches` of the phrases in `any_of`."""

    type: Literal["contains"] = "contains"
    any_of: list[str] = Field(min_length=1)
    min_matches: int = Field(default=1, ge=1)
    case_sensitive: bool = False

    @field_validator("any_of")
    @classmethod
    def _no_empty_phrase(cls, phrases: list[str]) -> list[str]:
        return _phrases(phrases)

    @model_validator(mode="after")
    def _reachable(self) -> ContainsCheck:
        distinct = len({p if self.case_sensitive else p.casefold() for p in self.any_of})
        if self.min_matches > distinct:
            raise ValueError(f"min_matches ({self.min_matches}) exceeds the {distinct} distinct phrases in any_of")
        return self


class NotContainsCheck(_Strict):
    """Satisfied when the response contains none of the phrases in `none_of`."""

    type: Literal["not_contains"] = "not_contains"
    none_of: list[str] = Field(min_length=1)
    case_sensitive: bool = False

    @field_validator("none_of")
    @classmethod
    def _no_empty_phrase(cls, phrases: list[str]) -> list[str]:
        return _phrases(phrases)


class _CountWindow(_Strict):
    """A count that must lie in [min, max]; either bound may be left out."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> _CountWindow:
        _check_bounds(self.min, self.max)
        return self


class WordCountCheck(_CountWindow):
    """Satisfied when the number of words lies in [min, max]."""

    type: Literal["word_count"] = "word_count"


class CharCountCheck(_CountWindow):
    """Satisfied when the number of characters lies in [min, max]."""

    type: Literal["char_count"] = "char_count"


class NoRepetitionCheck(_Strict):
    """Satisfied when no word n-gram repeats too often and no sentence is repeated.

    `max_repeat_fraction` bounds the share of n-grams that are repeats of an earlier n-gram.
    """

    type: Literal["no_repetition"] = "no_repetition"
    ngram: int = Field(default=3, ge=1)
    max_repeat_fraction: float = Field(default=0.2, ge=0.0, le=1.0)


def _phrases(phrases: list[str]) -> list[str]:
    if any(not phrase.strip() for phrase in phrases):
        raise ValueError("phrases must not be empty (an empty phrase is found in every response)")
    return phrases


def _check_bounds(low: int | None, high: int | None) -> None:
    if low is None and high is None:
        raise ValueError("give at least one of min and max")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min ({low}) is greater than max ({high})")


RuleCheck = Annotated[
    RegexCheck | ContainsCheck | NotContainsCheck | WordCountCheck | CharCountCheck | NoRepetitionCheck,
    Field(discriminator="type"),
]


class Criterion(_Strict):
    """One weighted, checkable statement about a response. "Satisfied" means the statement is true of it."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    weight: float
    kind: Literal["llm", "rule"] = "llm"
    check: RuleCheck | None = None
    tags: list[str] | None = Field(default=None, description="Objectives this criterion counts toward (e.g. content, "
                                   "format, safety): a reward split by objective grades each tag apart.")

    @field_validator("weight")
    @classmethod
    def _finite_nonzero(cls, weight: float) -> float:
        return checked_weight(weight)

    @model_validator(mode="after")
    def _check_matches_kind(self) -> Criterion:
        if self.kind == "rule" and self.check is None:
            raise ValueError(f"criterion {self.id!r} has kind 'rule' but no 'check'")
        if self.kind == "llm" and self.check is not None:
            raise ValueError(f"criterion {self.id!r} has a 'check' but kind 'llm'; set kind to 'rule'")
        return self


class Rubric(_Strict):
    """The criteria for one prompt, with the history that refinement leaves (`version`, `parent`, `reason`)."""

    id: str = Field(min_length=1)
    prompt_id: str | None = None
    criteria: list[Criterion] = Field(min_length=1)
    version: int = Field(default=1, ge=1)
    parent: str | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _valid_set(self) -> Rubric:
        ids = [c.id for c in self.criteria]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"criterion ids must be unique, repeated: {duplicates}")
        if not any(c.weight > 0 for c in self.criteria):
            raise ValueError("a rubric needs at least one criterion with a positive weight")
        return self

    @property
    def llm_criteria(self) -> list[Criterion]:
        return [c for c in self.criteria if c.kind == "llm"]

    @property
    def rule_criteria(self) -> list[Criterion]:
        return [c for c in self.criteria if c.kind == "rule"]

    @property
    def total_positive_weight(self) -> float:
        return sum(c.weight for c in self.criteria if c.weight > 0)

    def score(self, satisfied: Mapping[str, bool | float], normalize: bool = True) -> float:
        """Aggregate per-criterion verdicts (criterion id -> satisfied, or a degree in [0, 1]) into a score.

        Every criterion must have a verdict: a missing one is an error, never a silent zero.
        """
        missing = [c.id for c in self.criteria if c.id not in satisfied]
        if missing:
            raise KeyError(f"rubric {self.id!r}: no verdict for criteria {missing}")
        raw = sum(c.weight * float(satisfied[c.id]) for c in self.criteria)
        if not normalize:
            return raw
        return min(1.0, max(0.0, raw / self.total_positive_weight))

    def objective_score(self, tag: str, satisfied: Mapping[str, bool | float]) -> float | None:
        """The score of the criteria tagged `tag` alone, in [0, 1]: their weighted sum over their positive weight,
        or, for pitfalls alone, 1 less the share of their weight met; None when no criterion has the tag."""
        tagged = [c for c in self.criteria if tag in (c.tags or ())]
        if not tagged:
            return None
        raw = sum(c.weight * float(satisfied[c.id]) for c in tagged)
        positive = sum(c.weight for c in tagged if c.weight > 0)
        if positive:
            return min(1.0, max(0.0, raw / positive))
        return 1.0 + raw / -sum(c.weight for c in tagged)

    def next_version(self, criteria: list[Criterion], reason: str | None) -> Rubric:
        """The rubric that replaces this one: version + 1, its parent this rubric, the reason for the change kept.

        Ids follow the shipped datasets' convention, `{prompt_id}-v{version}`.
        """
        version = self.version + 1
        prompt_id = self.prompt_id or self.id
        return Rubric(
            id=f"{prompt_id}-v{version}",
            prompt_id=self.prompt_id,
            criteria=criteria,
            version=version,
            parent=self.id,
            reason=reason,
        )

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any] | Rubric) -> Rubric:
        """Build a rubric from a dataset cell: a `Rubric`, its JSON text, or a dict.

        Arrow stores nested dicts as structs and fills absent fields with null, so null-valued keys are
        dropped before validation (null and absent mean the same in this format).
        """
        if isinstance(value, Rubric):
            return value
        if isinstance(value, str):
            value = parse_json(value)
        return cls.model_validate(_drop_nulls(value))


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


class RubricFileError(ValueError):
    """A rubric file that does not parse or validate; the message names the file, line and field."""


def load_rubrics(path: str | Path) -> list[Rubric]:
    """Load rubrics in this project's format from a `.json` file (one rubric or a list) or a `.jsonl` file.

    Raises `RubricFileError` naming the file, the line (JSONL) and the offending field.
    """
    path = Path(path)
    rubrics = []
    for where, record in iter_json_records(path):
        try:
            rubrics.append(Rubric.model_validate(record))
        except ValidationError as exc:
            raise RubricFileError(f"{where}: {describe_validation_error(exc)}") from None
    return rubrics


def save_rubrics(rubrics: list[Rubric], path: str | Path) -> None:
    """Write rubrics as JSONL (one per line) or, for a `.json` path, as a JSON list."""
    write_json_records([r.model_dump(mode="json", exclude_none=True) for r in rubrics], path)


def write_json_records(records: list[dict[str, Any]], path: str | Path) -> None:
    """JSONL, or a JSON list for a `.json` path: the two layouts `iter_json_records` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    else:
        path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def validated_record(location: str, record: Any, model: type[ModelT]) -> ModelT:
    """`record` validated as `model`, or a `RubricFileError` naming `location` (file:line) and the field."""
    try:
        return model.model_validate(record)
    except ValidationError as exc:
        raise RubricFileError(f"{location}: {describe_validation_error(exc)}") from None


def iter_json_records(path: Path):
    """Yield `(location, record)` for each record of a JSON or JSONL file; `location` is `file:line` for JSONL.

    A `.json` file holds one object or a list of objects; anything else is read as JSONL.
    """
    if not path.exists():
        raise RubricFileError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise RubricFileError(f"{path}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise RubricFileError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        records = data if isinstance(data, list) else [data]
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise RubricFileError(f"{path}: item {index}: expected a JSON object, got {type(record).__name__}")
            yield (f"{path}: item {index}" if isinstance(data, list) else str(path)), record
        return
    with path.open(encoding="utf-8", errors="strict") as handle:
        for line_number, line in enumerate(_lines(handle, path), start=1):
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except json.JSONDecodeError as exc:
                raise RubricFileError(f"{path}:{line_number}: invalid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise RubricFileError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield f"{path}:{line_number}", record


def _lines(handle, path: Path):
    try:
        yield from handle
    except UnicodeDecodeError:
        raise RubricFileError(f"{path}: not UTF-8 text") from None
