"""Config values that may be written three ways: a mapping inline in a YAML, a JSON string on the command line,
or the path of a YAML/JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def read_mapping(value: str | dict[str, Any], what: str) -> tuple[dict[str, Any], str]:
    """The mapping `value` holds, and where it came from (`what`, or the file's path) for error messages."""
    source = what
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
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
