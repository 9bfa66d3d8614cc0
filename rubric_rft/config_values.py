"""Config values that may be written three ways: a mapping inline in a YAML, a JSON string on the command line,
or the path of a YAML/JSON file; and the JSON parsing and validation messages every file reader shares. Imports
nothing from the package, so every layer can use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError


class ConfigError(ValueError):
    """A configuration a person wrote cannot be used. Its message is one line: where (the source and the field),
    what is wrong, and what to do; the command line prints it instead of a traceback."""


MAX_JSON_DEPTH = 64  # a rubric, a dataset row or a config is a few levels deep


def parse_json(text: str) -> Any:
    """`json.loads` for records and configs. A document nested deeper than `MAX_JSON_DEPTH` is invalid JSON here
    (a `json.JSONDecodeError`, which callers turn into file:line messages): Python's parser, and every recursive
    walk after it, would otherwise end in a `RecursionError`."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
    else:
        if _depth_at_most(value, MAX_JSON_DEPTH):
            return value
    raise json.JSONDecodeError(f"nested more than {MAX_JSON_DEPTH} levels deep", text, 0)


def _depth_at_most(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` objects and arrays; a walk without recursion."""
    level = [value]
    for _ in range(limit + 1):
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return True
    return False


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "<record>"
        lines.append(f"{where}: {problem['msg']}")
    return "; ".join(lines)


def read_mapping(value: str | dict[str, Any], what: str) -> tuple[dict[str, Any], str]:
    """The mapping `value` holds, and where it came from (`what`, or the file's path) for error messages."""
    source = what
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = parse_json(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{what}: not valid JSON: {exc}") from None
        else:
            path = Path(text)
            if not path.exists():
                raise FileNotFoundError(f"{what} file {path} does not exist")
            source = str(path)
            value = yaml.safe_load(path.read_text())
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(value).__name__}")
    return value, source


def load_validated(
    value: str | dict[str, Any], schema: TypeAdapter, what: str, *, field_prefix: str = "", defaults: dict | None = None
) -> tuple[Any, str]:
    """`value` read as above and validated by `schema` (over `defaults`, when given), with where it came from.

    A validation error becomes one `ConfigError` naming the source and the field (`field_prefix` + its path).
    """
    mapping, source = read_mapping(value, what)
    try:
        return schema.validate_python({**(defaults or {}), **mapping}), source
    except ValidationError as exc:
        raise ConfigError(f"{source}: {field_prefix}{describe_validation_error(exc)}") from None
