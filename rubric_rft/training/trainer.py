"""`RubricGRPOTrainer`: TRL's `GRPOTrainer`, whose transformers rollouts decode a LoRA policy with its adapters
folded into its weights (`rubric_rft.llm.merged_lora`): the same rollouts, fewer operations a token. Everything
else is TRL's. vLLM rollouts are untouched (TRL already merges the adapters before it syncs the weights)."""

from __future__ import annotations

from trl import GRPOTrainer

from rubric_rft.llm.merged_lora import merged_lora


class RubricGRPOTrainer(GRPOTrainer):
    def _generate_single_turn(self, *args, **kwargs):
        if self.use_vllm:
            return super()._generate_single_turn(*args, **kwargs)
        with merged_lora(self.accelerator.unwrap_model(self.model)):
            return super()._generate_single_turn(*args, **kwargs)
