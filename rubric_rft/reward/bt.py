"""`BTReward`: a Bradley-Terry reward model (`scripts/train_reward_model.py`) as a TRL reward function.

A completion is scored as the chat template renders the conversation with it, exactly the way TRL's
`RewardTrainer` tokenized the pairs it trained on: prompt messages, then the assistant turn, no generation
prompt. The score is σ(r): the reward model's output r is a logit whose scale only its differences fix, and
σ(r) puts it on the [0, 1] scale of a rubric score, so that the over-optimization monitor compares both
rewards with the same tolerances (r = 0 is the average response of its training pairs when they were trained
with centred rewards). `grade` has `RubricReward.grade`'s shape, so the monitor takes this reward as its proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rubric_rft.judges.base import AsyncClosing
from rubric_rft.llm.weights import resolve_model
from rubric_rft.reward.rubric_reward import GradedCompletion
from rubric_rft.rubrics.datasets import as_messages, completion_text
from rubric_rft.rubrics.format import iter_json_records

PAIR_FIELDS = ("prompt", "chosen", "rejected")


class BTReward(AsyncClosing):
    """TRL reward function: `reward_funcs=[BTReward("outputs/bt/reward_model")]`."""

    def __init__(self, model: str, *, batch_size: int = 16, name: str = "bt_reward"):
        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"{model}: a reward model has one output (num_labels=1); this one has {self.model.config.num_labels}"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # the score is read at the last non-pad token
        self.model.to(PartialState().device).eval().requires_grad_(False)
        self.batch_size = batch_size
        self.__name__ = name

    def use_accelerator(self, accelerator) -> None:
        """Under DeepSpeed ZeRO-3 the model was loaded sharded (transformers' `zero.Init`): wrap it as TRL wraps the
        reward models it is given (`prepare_deepspeed`), so that its forward passes gather the shards. Every rank
        must then score as many batches as the others, as in training and the monitor's grading."""
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            from trl.models.utils import prepare_deepspeed

            self.model = prepare_deepspeed(self.model, accelerator)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        return self.score(prompts, completions)

    async def grade(
        self, prompts: Sequence[Any], completions: Sequence[Any], rubrics: Sequence[Any]
    ) -> list[GradedCompletion]:
        """`RubricReward.grade`'s shape, for the monitor; the rubrics are not used."""
        return [GradedCompletion(score) for score in self.score(prompts, completions)]

    async def aclose(self) -> None:
        """Nothing to close: the model runs in-process. (The same lifecycle as `RubricReward`.)"""

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """σ(r) for each prompt + completion, in input order."""
        return torch.sigmoid(torch.tensor(self.rewards(prompts, completions), dtype=torch.float64)).tolist()

    @torch.no_grad()
    def rewards(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """The reward model's output r for each prompt + completion, `batch_size` sequences per forward pass,
        right-padded as `RewardTrainer` pads them."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; expected one of each")
        ids = [
            self.tokenizer.apply_chat_template(
                [*as_messages(prompt), {"role": "assistant", "content": completion_text(completion)}],
                tokenize=True,
                return_dict=True,
            )["input_ids"]
            for prompt, completion in zip(prompts, completions, strict=True)
        ]
        rewards: list[float] = []
        for start in range(0, len(ids), self.batch_size):
            batch = self.tokenizer.pad(
                {"input_ids": ids[start : start + self.batch_size]}, padding_side="right", return_tensors="pt"
            )
            rewards.extend(self.model(**batch.to(self.model.device)).logits[:, 0].float().tolist())
        return rewards


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Preference pairs from a JSONL/JSON file: every record needs `prompt`, `chosen` and `rejected` (TRL's
    preference format, conversational or plain text); other fields are kept."""
    pairs = []
    for location, record in iter_json_records(Path(path)):
        missing = [name for name in PAIR_FIELDS if not record.get(name)]
        if missing:
            raise ValueError(f"{location}: a preference pair needs {list(PAIR_FIELDS)}; missing or empty: {missing}")
        pairs.append(record)
    if not pairs:
        raise ValueError(f"{path}: no preference pairs")
    return pairs


def pairwise_accuracy(reward: BTReward, pairs: Sequence[dict[str, Any]]) -> float:
    """Share of preference pairs (`prompt`, `chosen`, `rejected`) whose chosen response scores higher; a tie
    counts half."""
    if not pairs:
        raise ValueError("no pairs to measure accuracy on")
    prompts = [pair["prompt"] for pair in pairs]
    chosen = reward.rewards(prompts, [pair["chosen"] for pair in pairs])
    rejected = reward.rewards(prompts, [pair["rejected"] for pair in pairs])
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)) / len(pairs)
