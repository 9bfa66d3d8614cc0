"""Config values that may be written three ways: a mapping inline in a YAML, a JSON string on the command line,
or the path of a YAML/JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from rubric_rft.rubrics.format import describe_validation_error, parse_json


def read_mapping(value: str | dict[str, Any], what: str) -> tuple[dict[str, Any], str]:
    """The mapping `value` holds, and where it came from (`what`, or the file's path) for error messages."""
    source = what
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = parse_json(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{what}: not valid JSON: {exc}") from None
        else:
            path = Path(text)
            if not path.exists():
                raise FileNotFoundError(f"{what} file {path} does not exist")
            source = str(path)
            value = yaml.safe_load(path.read_text())
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(value).__name__}")
    return value, source


def load_validated(
    value: str | dict[str, Any], schema: TypeAdapter, what: str, *, field_prefix: str = "", defaults: dict | None = None
) -> tuple[Any, str]:
    """`value` read as above and validated by `schema` (over `defaults`, when given), with where it came from.

    A validation error becomes one `ValueError` naming the source and the field (`field_prefix` + its path).
    """
    mapping, source = read_mapping(value, what)
    try:
        return schema.validate_python({**(defaults or {}), **mapping}), source
    except ValidationError as exc:
        raise ValueError(f"{source}: {field_prefix}{describe_validation_error(exc)}") from None
