"""Judge configuration: which backend grades `llm` criteria, and how. Rule criteria never need one.

A config is a dict (inline in a training YAML under `judge:`), a JSON string (CLI override), or the path of
a YAML/JSON file. Secrets never appear here: `api_key_env` names the environment variable that holds the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from rubric_rft.config_values import load_validated


class _JudgeConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    cache_path: str | None = Field(default=None, description="SQLite file of cached verdicts; none disables the cache.")


class OpenAIJudgeConfig(_JudgeConfigBase):
    """Any OpenAI-compatible chat endpoint: `vllm serve`, SGLang, `transformers serve`, OpenAI, ..."""

    backend: Literal["openai"] = "openai"
    model: str
    base_urls: list[str] = Field(min_length=1, description="One URL per replica, each ending in /v1.")
    api_key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    request_shape: Literal["batched", "per_criterion", "yes_no"] = Field(
        default="batched",
        description="All criteria of a rubric in one JSON answer, one JSON answer per criterion, or one call per "
        "criterion answered Yes or No (for small judges that do not write JSON reliably).",
    )
    demonstrations: bool = Field(
        default=False,
        description="Show worked examples of the question answered in the expected format before each question: "
        "small judges (e.g. SmolLM2-135M) then answer in that format instead of prose.",
    )
    yes_probability: bool = Field(
        default=False,
        description="With request_shape yes_no: also request the top log-probabilities of the answer's first token "
        "and report P(yes) per criterion (vLLM, SGLang and OpenAI give them; servers that ignore the request, "
        "such as transformers serve, give verdicts only).",
    )
    max_concurrency: int = Field(default=64, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=512, ge=1)

    @model_validator(mode="after")
    def _yes_probability_needs_yes_no(self) -> OpenAIJudgeConfig:
        if self.yes_probability and self.request_shape != "yes_no":
            raise ValueError(f"yes_probability needs request_shape 'yes_no', not {self.request_shape!r}")
        return self


class HFJudgeConfig(_JudgeConfigBase):
    """A transformers causal LM loaded in-process; P(yes) per criterion from its next-token distribution."""

    backend: Literal["hf"] = "hf"
    model: str
    device: str = "cpu"
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=2048, ge=64, description="Prompt tokens kept (left-truncated).")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="P(yes) at or above which a criterion is met.")


JudgeConfig = Annotated[OpenAIJudgeConfig | HFJudgeConfig, Field(discriminator="backend")]
_adapter: TypeAdapter[JudgeConfig] = TypeAdapter(JudgeConfig)


def load_judge_config(value: str | dict[str, Any] | BaseModel) -> OpenAIJudgeConfig | HFJudgeConfig:
    """Parse a judge config from a dict, a JSON string, or a YAML/JSON file path."""
    if isinstance(value, (OpenAIJudgeConfig, HFJudgeConfig)):
        return value
    return load_validated(value, _adapter, "judge config")[0]


def build_judge(config: OpenAIJudgeConfig | HFJudgeConfig):
    """Instantiate the backend a config names."""
    if isinstance(config, OpenAIJudgeConfig):
        from rubric_rft.judges.openai_compat import OpenAIJudge

        return OpenAIJudge(config)
    from rubric_rft.judges.hf_local import HFJudge

    return HFJudge(config)
