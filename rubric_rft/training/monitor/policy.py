"""Sample the current policy on held-out prompts and estimate its KL divergence from the starting policy.

TRL logs no KL when `beta` is 0 (its default), and over-optimization is read against how far the policy moved,
so the monitor measures it itself: on the sampled answers, per token, with the low-variance non-negative
estimator k3 = exp(d) - d - 1, d = log p_ref - log p_policy (Schulman, "Approximating KL divergence"), summed
over the answer's tokens. Both distributions are taken at the sampling temperature, with top-k/top-p off, so
the samples come from the distribution whose KL is estimated.

Sampling is seeded without touching the global random state: training after an evaluation is the same as
training without one, which keeps a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rubric_rft.llm.generation import Batch, generate_on_every_rank


@dataclass
class PolicySamples:
    """`samples_per_prompt` answers per prompt, grouped by prompt (prompt i owns texts[i*n:(i+1)*n])."""

    texts: list[str]
    lengths: list[int]
    kl: list[float]
    kl_s: float = 0.0  # of the sampling call's time, the reference's forward passes for the KL
    sync_s: float = 0.0  # of the sampling call's time, bringing a vLLM engine to the policy's weights


class StartingWeights:
    """The starting weights at `path`, for the KL of a model trained without adapters (a PEFT model is its own
    reference, adapters off): loaded on every rank on first use, once. Under ZeRO-3 they are sharded and wrapped as
    TRL wraps its reference model (`prepare_deepspeed`), through the trainer's accelerator."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.model = None

    def for_model(self, model, trainer=None):
        """The frozen starting model for `model`, or None when `model` has adapters."""
        if hasattr(model, "disable_adapter") or self.model is not None:
            return self.model
        if self.path is None:
            raise ValueError("the monitor needs start_model_path to measure the KL of a model trained without LoRA")
        from transformers import AutoModelForCausalLM
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        reference = AutoModelForCausalLM.from_pretrained(self.path, dtype=model.dtype)
        if is_deepspeed_zero3_enabled():
            if trainer is None:
                raise ValueError("under DeepSpeed ZeRO-3 the monitor needs use_trainer(trainer) to shard its "
                                 "reference model")
            from trl.models.utils import prepare_deepspeed

            self.model = prepare_deepspeed(reference, trainer.accelerator)
        else:
            self.model = reference.to(model.device).eval().requires_grad_(False)
        return self.model


def reference_of(model, frozen_copy=None) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory that yields the starting policy: a PEFT model with its adapters disabled, or
    `frozen_copy` (the starting weights) for a fully fine-tuned one."""
    if hasattr(model, "disable_adapter"):
        return lambda: _adapters_off(model)
    if frozen_copy is None:
        raise ValueError("a model without adapters needs a frozen copy of its starting weights for the KL")
    return lambda: contextlib.nullcontext(frozen_copy)


@contextlib.contextmanager
def _adapters_off(model):
    with model.disable_adapter():
        yield model


def sample_policy(
    model,
    tokenizer,
    prompts: list[list[dict[str, str]]],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    reference: Callable[[], contextlib.AbstractContextManager],
    batch_size: int = 16,
    accelerator=None,
    gradient_checkpointing_kwargs: dict | None = None,
) -> PolicySamples:
    """Samples with their length and KL. Call it on every rank of a distributed run: each rank samples and
    measures its share of the batches (`rubric_rft.llm.generation.generate_on_every_rank`), and gets all of them.
    With the trainer's `accelerator`, `model` is its wrapped model (see `generate_on_every_rank`)."""
    kl_s = 0.0

    def measure(policy, batch: Batch) -> list[float]:
        nonlocal kl_s
        started = time.perf_counter()
        kl = kl_of(reference, batch, temperature)
        kl_s += time.perf_counter() - started
        return kl

    generated = generate_on_every_rank(
        model,
        tokenizer,
        prompts,
        accelerator=accelerator,
        gradient_checkpointing_kwargs=gradient_checkpointing_kwargs,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        samples_per_prompt=samples_per_prompt,
        temperature=temperature,
        top_p=1.0,
        top_k=0,
        seed=seed,
        measure=measure,
        token_logprobs=True,
    )
    return PolicySamples(generated.texts, generated.lengths, generated.measured, kl_s)


def kl_of(reference, batch: Batch, temperature: float) -> list[float]:
    """k3 summed over each completion's tokens (see the module docstring); the policy's log-probabilities are those
    the tokens were sampled with, so only the reference runs a forward pass."""
    with reference() as reference_model:
        reference_logps = token_logps(reference_model, batch, temperature)
    delta = reference_logps - batch.token_logprobs
    k3 = (torch.exp(delta) - delta - 1).clamp(min=0)  # >= 0 but for rounding (cached decoding vs a full forward)
    return (k3 * batch.completion_mask).sum(dim=1).tolist()


def token_logps(model, batch: Batch, temperature: float) -> torch.Tensor:
    """Log-probabilities of each completion's tokens under `model`."""
    sequences, attention = batch.sequences, batch.attention_mask
    completion_length = batch.completion_mask.shape[1]
    positions = (torch.cumsum(attention, dim=1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=attention, position_ids=positions,
                   logits_to_keep=completion_length + 1).logits  # no vocabulary projection for the prompt
    logits = logits[:, :-1].float() / temperature
    targets = sequences[:, -completion_length:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
