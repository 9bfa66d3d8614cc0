"""Which reward a policy trains on: `reward:` in a training config (a mapping, a JSON string, or a YAML path).

    reward: {type: rubric}                                # the default: each prompt's rubric (`judge:` grades it)
    reward: {type: rubric, max_failure_rate: 0.5, failure_window: 32}  # stop when the judge keeps failing
    reward: {type: rubric, objectives: [content, format]} # a reward per criterion tag (rubric_rft.reward.objectives)
    reward: {type: bt, model: outputs/bt/reward_model}    # a Bradley-Terry reward model (scripts/train_reward_model.py)

The type is checked first, so that an error names the field as written (`reward.model`, not a union branch).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rubric_rft.config_values import load_validated, read_mapping
from rubric_rft.reward.failure_limit import DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURE_RATE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RubricRewardConfig(_Strict):
    """Each row's rubric, graded by rules and the `judge:` of the training config."""

    type: Literal["rubric"] = "rubric"
    max_failure_rate: float | None = Field(
        default=DEFAULT_MAX_FAILURE_RATE,
        ge=0,
        lt=1,
        description="Stop training when more than this share of the last `failure_window` completions sent to the "
        "judge failed (a broken judge masks every reward and training goes on on nothing); null: never stop.",
    )
    failure_window: int = Field(
        default=DEFAULT_FAILURE_WINDOW, ge=1, description="How many recent judged completions the limit looks at."
    )
    objectives: list[str] | None = Field(
        default=None, min_length=2,
        description="Criterion tags to train as separate rewards (one TRL reward function each, combined by "
        "GRPOConfig's reward_weights and multi_objective_aggregation); null: the whole rubric as one reward.")


class BTRewardConfig(_Strict):
    """A sequence-classification reward model with one output, scoring prompt + completion."""

    type: Literal["bt"]
    model: str = Field(description="Folder of the reward model (save_pretrained layout) or a hub id.")
    batch_size: int = Field(default=16, ge=1, description="Sequences scored per forward pass.")


REWARD_TYPES: dict[str, type[_Strict]] = {"rubric": RubricRewardConfig, "bt": BTRewardConfig}


def load_reward_config(value: str | dict[str, Any] | None) -> RubricRewardConfig | BTRewardConfig:
    """Parse `reward:`; None (not set) is the rubric reward."""
    if value is None:
        return RubricRewardConfig()
    mapping, source = read_mapping(value, "reward config")
    kind = mapping.get("type", "rubric")
    if kind not in REWARD_TYPES:
        raise ValueError(f"{source}: reward.type: expected one of {sorted(REWARD_TYPES)}, got {kind!r}")
    return load_validated(mapping, TypeAdapter(REWARD_TYPES[kind]), source, field_prefix="reward.")[0]
