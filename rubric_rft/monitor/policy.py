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
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class PolicySamples:
    """`samples_per_prompt` answers per prompt, grouped by prompt (prompt i owns texts[i*n:(i+1)*n])."""

    texts: list[str]
    lengths: list[int]
    kl: list[float]


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


@torch.no_grad()
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
) -> PolicySamples:
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    chats = [
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in prompts
        for _ in range(samples_per_prompt)
    ]
    result = PolicySamples([], [], [])
    try:
        for index, start in enumerate(range(0, len(chats), batch_size)):
            inputs = tokenizer(
                chats[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            devices = [model.device] if model.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed + index)
                output = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_k=0,
                    top_p=1.0,
                    pad_token_id=tokenizer.pad_token_id,
                )
            completion = output[:, inputs["input_ids"].shape[1] :]
            mask = _up_to_first_eos(completion, tokenizer.eos_token_id)
            attention = torch.cat([inputs["attention_mask"], mask], dim=1)
            policy_logps = _token_logps(model, output, attention, completion.shape[1], temperature)
            with reference() as reference_model:
                reference_logps = _token_logps(reference_model, output, attention, completion.shape[1], temperature)
            delta = reference_logps - policy_logps
            k3 = (torch.exp(delta) - delta - 1) * mask
            result.kl.extend(k3.sum(dim=1).tolist())
            result.lengths.extend(mask.sum(dim=1).long().tolist())
            answers = [row[: int(kept.sum())] for row, kept in zip(completion, mask, strict=True)]
            result.texts.extend(t.strip() for t in tokenizer.batch_decode(answers, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return result


def _up_to_first_eos(tokens: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    """1 for every generated token up to and including the first end-of-sequence token, 0 after it."""
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=tokens.device)
    is_eos = torch.isin(tokens, eos_ids).long()
    ended_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (ended_before == 0).long()


def _token_logps(model, sequences, attention, completion_length: int, temperature: float) -> torch.Tensor:
    """Log-probabilities of the last `completion_length` tokens of each sequence under `model`."""
    positions = (torch.cumsum(attention, dim=1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=attention, position_ids=positions).logits
    logits = logits[:, -completion_length - 1 : -1].float() / temperature
    targets = sequences[:, -completion_length:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
