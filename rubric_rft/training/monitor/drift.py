"""How far the policy has moved from the start, cheaply enough to ask between evaluations.

A full evaluation samples and grades held-out answers; whether the policy moved enough to be worth one needs far
less. The starting policy's own answers (the monitor's step-0 samples) are scored by the current policy in one
forward pass, and KL(start ‖ policy) is estimated from them: per token, with d = log p_policy − log p_start, k3 =
exp(d) − d − 1 (unbiased for tokens the start sampled, and never negative), summed over an answer's tokens and
averaged over the answers (both sides at the monitor's sampling temperature). The start's log-probabilities are
computed once (again after a resume, from the saved step-0 texts). No sampling and no grader: the adaptive cadence
(`cadence.drift_move`) reads it at every check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from rubric_rft.llm.generation import Batch, batch_of, chat_prompt_ids
from rubric_rft.training.monitor.policy import token_logps


class DriftProbe:
    """KL(start ‖ policy) per answer on fixed answers of the starting policy (`prompts[i]` answered `answers[i]`)."""

    def __init__(self, tokenizer, prompts: list, answers: list[str], temperature: float) -> None:
        self.batch = _batch(tokenizer, prompts, answers)
        self.temperature = temperature
        self.start_logps: torch.Tensor | None = None

    @torch.no_grad()
    def measure(self, model, reference: Callable[[], contextlib.AbstractContextManager]) -> float:
        """The estimate for `model` now; `reference` yields the starting policy (`policy.reference_of`)."""
        was_training = model.training
        model.eval()  # no dropout: the estimate reads the policy, not a noisy draw of it
        try:
            batch = self.batch.to(model.device)
            if self.start_logps is None:
                with reference() as start:
                    self.start_logps = token_logps(start, batch, self.temperature)
            delta = token_logps(model, batch, self.temperature) - self.start_logps
        finally:
            model.train(was_training)
        k3 = (torch.exp(delta) - delta - 1).clamp(min=0) * batch.completion_mask  # >= 0 but for rounding
        return float(k3.sum(dim=1).mean())


def _batch(tokenizer, prompts: list, answers: list[str]) -> Batch:
    """The start's answers after their prompts, in the layout `generate` returns."""
    return batch_of([chat_prompt_ids(tokenizer, prompt) for prompt in prompts],
                    [tokenizer(answer, add_special_tokens=False)["input_ids"] for answer in answers], tokenizer)
