"""Which reward a policy trains on: `reward:` in a training config (a mapping, a JSON string, or a YAML path).

    reward: {type: rubric}                                # the default: each prompt's rubric (`judge:` grades it)
    reward: {type: bt, model: outputs/bt/reward_model}    # a Bradley-Terry reward model (scripts/train_reward_model.py)

The type is checked first, so that an error names the field as written (`reward.model`, not a union branch).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from rubric_rft.config_values import load_validated, read_mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RubricRewardConfig(_Strict):
    """Each row's rubric, graded by rules and the `judge:` of the training config."""

    type: Literal["rubric"] = "rubric"


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
