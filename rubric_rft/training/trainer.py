"""`RubricGRPOTrainer`: TRL's `GRPOTrainer`, whose transformers rollouts, with `rollout_dtype` set, decode with the
policy's generation weights (`rubric_rft.llm.generation_weights`): LoRA adapters folded in, every weight in
`rollout_dtype`. Without it, and for vLLM rollouts, everything is TRL's.

Folded weights sample without the LoRA dropout that TRL's rollouts (in training mode) have; over five seeds of the
CPU default that did not slow its reward rise, and bfloat16 rollouts made its steps 1.4-1.5x faster, so
configs/cpu_default.yaml sets bfloat16 (see docs/training.md, "Rollouts through transformers")."""

from __future__ import annotations

import logging

import torch
from trl import GRPOTrainer

from rubric_rft.llm.generation_weights import generation_weights, has_native_bfloat16
from rubric_rft.training.rollouts import RolloutSettingsError

logger = logging.getLogger(__name__)

ROLLOUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_rollout_dtype(rollout_dtype: str | None, use_vllm: bool) -> None:
    """Refuse a precision that is not one, or one set with vLLM rollouts, which it would not reach."""
    if rollout_dtype is not None and rollout_dtype not in ROLLOUT_DTYPES:
        raise RolloutSettingsError(f"rollout_dtype: expected one of {sorted(ROLLOUT_DTYPES)} or null, "
                                   f"got {rollout_dtype!r}")
    if rollout_dtype is not None and use_vllm:
        raise RolloutSettingsError(
            f"rollout_dtype: {rollout_dtype} sets the precision of transformers rollouts, and use_vllm replaces "
            "them with vLLM's: set rollout_dtype: null (--rollout_dtype null) with use_vllm (configs/cpu_default.yaml "
            "sets bfloat16)")


class RubricGRPOTrainer(GRPOTrainer):
    """`rollout_dtype`: the precision transformers rollouts decode in, adapters folded ("float32", "bfloat16", ...);
    None: TRL's own rollouts."""

    def __init__(self, *args, rollout_dtype: str | None = None, **kwargs) -> None:
        check_rollout_dtype(rollout_dtype, getattr(kwargs.get("args"), "use_vllm", False))
        super().__init__(*args, **kwargs)
        self.rollout_dtype = ROLLOUT_DTYPES.get(rollout_dtype)
        if self.rollout_dtype == torch.bfloat16 and self.args.use_cpu and not has_native_bfloat16():
            logger.warning("rollout_dtype bfloat16: this CPU has no native bfloat16 kernels, so bfloat16 rollouts "
                           "decode slower than float32 here; set rollout_dtype: float32")

    def _generate_single_turn(self, *args, **kwargs):
        if self.use_vllm or self.rollout_dtype is None:
            return super()._generate_single_turn(*args, **kwargs)
        with generation_weights(self.accelerator.unwrap_model(self.model), self.rollout_dtype):
            return super()._generate_single_turn(*args, **kwargs)
