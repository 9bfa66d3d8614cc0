"""Where a chat model is and how to ask it: an OpenAI-compatible endpoint (`vllm serve`, SGLang,
`transformers serve`, OpenAI, ...). Judges, the proposer and response collection all take one.

Secrets never appear here: `api_key_env` names the environment variable that holds the key.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rubric_rft.config_values import load_validated, read_mapping

logger = logging.getLogger(__name__)

# Settings only a judge reads. One file may configure a judge and the endpoints that share its server (the
# proposer, a pairwise judge): there they are ignored, with a warning that names them.
JUDGE_ONLY_FIELDS = ("request_shape", "demonstrations", "yes_probability", "structured_answers", "group_request",
                     "max_group_size", "shuffle_seed")


class ChatEndpointConfig(BaseModel):
    """One chat model behind one or more OpenAI-compatible replicas, and the client's limits."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    backend: Literal["openai"] = "openai"
    model: str
    base_urls: list[str] = Field(min_length=1, description="One URL per replica, each ending in /v1.")
    api_key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    cache_path: str | None = Field(default=None, description="SQLite file of cached answers; none disables the cache.")
    max_concurrency: int = Field(default=64, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    retry_after_max_s: float = Field(
        default=60.0, ge=0, description="The longest wait a server's Retry-After header can ask for before a retry.")
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=512, ge=1)
    max_rpm: int | None = Field(default=None, ge=1, description="Requests per minute to this endpoint, shared by "
                                "every client of it in the process (rubric_rft.llm.rate_limit); none: no limit.")
    max_tpm: int | None = Field(default=None, ge=1, description="Tokens per minute (prompt and answer), shared "
                                "likewise; none: no limit.")


_ENDPOINT: TypeAdapter[ChatEndpointConfig] = TypeAdapter(ChatEndpointConfig)


def load_endpoint(value: str | dict[str, Any] | BaseModel, what: str = "endpoint config") -> ChatEndpointConfig:
    """An endpoint config from a dict, a JSON string or a YAML/JSON path (`backend` optional); errors name the file
    and the field. A judge config is accepted too: its judge-only settings are ignored, with a warning."""
    if type(value) is ChatEndpointConfig:
        return value
    if isinstance(value, BaseModel):  # a judge config object (a subclass): keep what the endpoint needs
        value = value.model_dump(include=set(ChatEndpointConfig.model_fields) - {"backend"})
    mapping, source = read_mapping(value, what)
    return load_validated(without_judge_settings(mapping, source), _ENDPOINT, source, defaults={"backend": "openai"})[0]


def without_judge_settings(mapping: dict[str, Any], source: str) -> dict[str, Any]:
    """`mapping` less the settings only a judge reads, with a warning naming them when there were any."""
    ignored = [name for name in JUDGE_ONLY_FIELDS if name in mapping]
    if ignored:
        logger.warning("%s: %s only matter to a judge; ignored here", source, ", ".join(ignored))
    return {key: value for key, value in mapping.items() if key not in JUDGE_ONLY_FIELDS}
