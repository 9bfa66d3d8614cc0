"""Fresh samples: when a broad trigger fires (the monitor sees the proxy rise while the gold falls, or most prompts
answered lately saturate their rubrics), answer the prompts that have not been answered under their current rubric
now, instead of waiting for their next visit.

With many prompts and few per step, a prompt comes back only once an epoch, and a policy can collapse onto a
loophole well within one (see the README's static-against-online experiment): the rubric refined at a prompt's
next visit then grades answers that all fail it alike, and GRPO learns nothing from it. Answering prompts at the
refinement step gives the round the policy's current tail for them. Which prompts: those with fewer than
`min_completions` completions under their current rubric, not in their cooldown and with rounds left, in dataset
order, at most `fresh_samples.prompts`. The main process chooses (it holds the buffer and the budgets), every rank
generates its share (`generate_on_every_rank`: under ZeRO-3 no rank can generate alone), and the main process
grades the answers with the prompts' rubrics and buffers them as completions of this step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rubric_rft.llm.generation import Messages, generate_on_every_rank
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.refinement.config import RefinementConfig
from rubric_rft.training.refinement.rounds import RefinementState, resting
from rubric_rft.training.refinement.tail_buffer import TailBuffer


def prompts_to_answer(step: int, prompt_ids: Sequence[str], buffer: TailBuffer, store: RubricStore,
                      state: RefinementState, config: RefinementConfig) -> list[str]:
    """The prompts to answer at `step` (see the module docstring), in `prompt_ids` order."""
    chosen = []
    for prompt_id in prompt_ids:
        if len(chosen) == config.fresh_samples.prompts:
            break
        if prompt_id not in store or resting(prompt_id, step, state, config.budgets) is not None:
            continue
        if len(buffer.entries(prompt_id, version=store.rubric_for(prompt_id).version)) < config.min_completions:
            chosen.append(prompt_id)
    return chosen


def answer(model, tokenizer, messages: Sequence[Messages], config: RefinementConfig, max_new_tokens: int,
           seed: int, trainer=None) -> list[str]:
    """`samples_per_prompt` sampled answers per prompt, adjacent; call on every rank with the same arguments. With
    the `trainer`, through its wrapped model and accelerator (TRL's unwrapping: ZeRO-3 gathers each layer once)."""
    fresh = config.fresh_samples
    policy, accelerator, checkpointing = (model, None, None) if trainer is None else (
        trainer.model_wrapped, trainer.accelerator, trainer.args.gradient_checkpointing_kwargs)
    return generate_on_every_rank(
        policy, tokenizer, list(messages),
        accelerator=accelerator,
        gradient_checkpointing_kwargs=checkpointing,
        max_new_tokens=fresh.max_new_tokens or max_new_tokens,
        batch_size=fresh.batch_size,
        samples_per_prompt=fresh.samples_per_prompt,
        temperature=fresh.temperature,
        top_p=1.0,
        top_k=0,
        seed=seed,
    ).texts


async def grade_into_buffer(step: int, prompt_ids: Sequence[str], prompts: Mapping[str, str], texts: Sequence[str],
                            grader: RubricReward, store: RubricStore, buffer: TailBuffer,
                            seconds: float) -> dict[str, Any]:
    """Grade the answers (prompt i owns a contiguous run of them) and buffer them; returns the round's record."""
    started = time.perf_counter()
    per_prompt = len(texts) // len(prompt_ids)
    ids = [prompt_id for prompt_id in prompt_ids for _ in range(per_prompt)]
    graded = await grader.grade([prompts[i] for i in ids], list(texts), [store.rubric_for(i) for i in ids])
    buffer.record(ids, list(texts), graded, step)
    return {
        "step": step,
        "prompt_id": None,
        "status": "sampled",
        "reason": "monitor_divergence",
        "prompt_ids": list(prompt_ids),
        "completions": len(texts),
        "grading_failures": sum(g.error is not None for g in graded),
        "generation_s": round(seconds, 3),
        "grading_s": round(time.perf_counter() - started, 3),
    }
