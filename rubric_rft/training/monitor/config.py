"""The monitor's configuration: `monitor:` in a training config (a mapping, a JSON string, or a YAML path).

    monitor:
      heldout_path: data/everyday/heldout_rules.jsonl   # prompts with the proxy (training) rubric
      monitor_steps: 2                                  # evaluate every N optimizer steps (and at step 0)
      cadence: {adaptive: false}                        # true: at those steps only when training signals moved
      gold:
        rubrics_path: data/everyday/gold.jsonl           # gold rubric per prompt_id
        judge: {backend: openai, model: ..., base_urls: [...]}   # for the gold rubric's llm criteria
      on_onset: alert                                   # or: stop
      keep_best: true                                   # keep the best-by-gold model in OUTPUT_DIR/best_gold
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rubric_rft.config_values import load_validated
from rubric_rft.training.monitor.cadence import Cadence
from rubric_rft.training.monitor.onset import OnsetRule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GoldConfig(_Strict):
    """The separate evaluator the proxy is checked against: a gold rubric set and/or a pairwise gold judge."""

    rubrics_path: str | None = Field(
        default=None, description="Gold rubrics (JSON/JSONL in any supported format), matched by prompt_id."
    )
    judge: dict[str, Any] | None = Field(
        default=None, description="Judge config for the gold rubrics' llm criteria (rule criteria need none)."
    )
    pairwise: dict[str, Any] | None = Field(
        default=None,
        description="Pairwise gold judge config: win rate of each sample against the starting policy's sample.",
    )


class MonitorConfig(_Strict):
    heldout_path: str = Field(description="Held-out prompts with the proxy rubric (the training dataset format).")
    gold: GoldConfig
    monitor_steps: int = Field(default=5, ge=1, description="Evaluate every N optimizer steps, and at step 0.")
    cadence: Cadence = Field(default_factory=Cadence, description="Adaptive: at those steps, only when the "
                                                                  "training signals moved (or max_gap passed).")
    num_prompts: int | None = Field(default=None, ge=1, description="First N held-out prompts; all by default.")
    samples_per_prompt: int = Field(default=4, ge=1, description="Sampled answers per prompt at each evaluation.")
    max_new_tokens: int | None = Field(default=None, ge=1, description="Defaults to max_completion_length.")
    temperature: float = Field(
        default=0.7, gt=0, description="Sampling temperature: answers as users would see them; KL is measured at it."
    )
    batch_size: int = Field(default=16, ge=1, description="Sequences generated at once.")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="What samples the held-out answers: the run's colocated vLLM engine (auto: when "
                                    "training has one the monitor can use) or transformers' generate.")
    seed: int = Field(default=1234, description="Sampling seed; each step uses seed + step.")
    onset: OnsetRule = Field(default_factory=OnsetRule)
    on_onset: Literal["alert", "stop"] = Field(default="alert", description="Alert only, or also stop training.")
    keep_best: bool = Field(default=True, description="Save the best-by-gold model to OUTPUT_DIR/best_gold.")


def load_monitor_config(value: str | dict[str, Any] | MonitorConfig) -> MonitorConfig:
    """Parse a monitor config from a mapping, a JSON string, or a YAML/JSON file path."""
    if isinstance(value, MonitorConfig):
        return value
    config, source = load_validated(value, TypeAdapter(MonitorConfig), "monitor config", field_prefix="monitor.")
    gold = config.gold
    if gold.rubrics_path is None and gold.pairwise is None:
        raise ValueError(f"{source}: monitor.gold needs 'rubrics_path' and/or 'pairwise': the monitor has no gold")
    if gold.pairwise is not None and gold.pairwise.get("backend") == "rubric" and gold.rubrics_path is None:
        raise ValueError(f"{source}: monitor.gold.pairwise with backend 'rubric' compares by the gold rubrics: "
                         "set monitor.gold.rubrics_path")
    return config
