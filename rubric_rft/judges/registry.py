"""Judge backends, found by name: a judge config's `backend` picks the class that grades with it.

A backend is one class with a pydantic `Config` (whose `backend` field defaults to the backend's name), decorated
with `register_backend`; `load_judge_config` then accepts its configs and `build_judge` builds it. A config is a
dict (inline in a training YAML under `judge:`), a JSON string (CLI override), or the path of a YAML/JSON file.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from rubric_rft.config_values import load_validated

# Modules whose backends register themselves when imported.
BUILTIN_BACKENDS = ("rubric_rft.judges.openai_compat", "rubric_rft.judges.hf_local", "rubric_rft.judges.panel",
                    "rubric_rft.judges.listwise")

_BACKENDS: dict[str, type] = {}


def register_backend(judge_class: type) -> type:
    """Class decorator: make `judge_class` the backend named by its `Config.backend` default."""
    name = judge_class.Config.model_fields["backend"].default
    if name in _BACKENDS and _BACKENDS[name] is not judge_class:
        raise ValueError(f"judge backend {name!r} is registered twice: {_BACKENDS[name]} and {judge_class}")
    _BACKENDS[name] = judge_class
    return judge_class


def backends() -> dict[str, type]:
    """Every registered backend by name, the built-in ones included."""
    for module in BUILTIN_BACKENDS:
        importlib.import_module(module)
    return dict(_BACKENDS)


def load_judge_config(value: str | dict[str, Any] | BaseModel) -> BaseModel:
    """Parse a judge config from a dict, a JSON string, or a YAML/JSON file path; errors name the file and field."""
    configs = tuple(judge_class.Config for judge_class in backends().values())
    if isinstance(value, configs):
        return value
    if isinstance(value, BaseModel):  # an endpoint config: a judge with default judge settings
        value = value.model_dump()
    adapter = TypeAdapter(Annotated[Union[configs], Field(discriminator="backend")])  # noqa: UP007 (a runtime tuple)
    return load_validated(value, adapter, "judge config")[0]


def build_judge(config: str | dict[str, Any] | BaseModel):
    """The judge a config names (parsed first when it is not a config object yet)."""
    config = load_judge_config(config)
    return backends()[config.backend](config)
