"""Answers written at the refinement step: prompts the round needs answers for are answered now instead of at
their next visit.

- Fresh samples: when a broad trigger fires (the monitor sees the proxy rise while the gold falls, most prompts
  answered lately saturate their rubrics, or a scheduled step comes), the prompts not answered under their current
  rubric. With many prompts and few per step, a prompt comes back only once an epoch, and a policy can collapse onto
  a loophole well within one: the rubric refined at a prompt's next visit then grades answers that all fail it
  alike, and GRPO learns nothing from it. Which prompts: those with fewer than `min_completions` completions under
  their current rubric, or only completions an earlier attempt was made on (retrying needs new answers), not in
  their cooldown and with rounds left, in dataset order, at most `fresh_samples.prompts`.
- Stuck prompts (`stuck`): the last groups of a prompt were flat, at any mean; its answers are too alike to pair,
  so it is answered again hotter (`stuck.temperature`), the source of spread its refinement needs.

The main process chooses (it holds the buffer and the budgets), every rank generates its share
(`generate_on_every_rank`: under ZeRO-3 no rank can generate alone), and the main process grades the answers with
the prompts' rubrics and buffers them as completions of this step.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rubric_rft.llm.generation import Messages, generate_on_every_rank
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.refinement.config import RefinementConfig, Sampling
from rubric_rft.training.refinement.rounds import RefinementState, all_tried, resting
from rubric_rft.training.refinement.tail_buffer import TailBuffer
from rubric_rft.training.refinement.trigger import spread_collapsed


@dataclass
class Answered:
    """Prompts answered at a refinement step and why (`stuck`, or the broad trigger that fired); prompt i owns a
    contiguous run of `texts`."""

    reason: str
    prompt_ids: list[str]
    texts: list[str]
    seconds: float


def prompts_to_answer(step: int, prompt_ids: Sequence[str], buffer: TailBuffer, store: RubricStore,
                      state: RefinementState, config: RefinementConfig, taken: Collection[str] = ()) -> list[str]:
    """The prompts to answer at `step` for fresh samples (see the module docstring), in `prompt_ids` order, none
    of `taken` (answered at this step already)."""
    chosen = []
    for prompt_id in prompt_ids:
        if len(chosen) == config.fresh_samples.prompts:
            break
        if prompt_id in taken or prompt_id not in store or resting(prompt_id, step, state, config.budgets) is not None:
            continue
        entries = buffer.entries(prompt_id, version=store.rubric_for(prompt_id).version)
        if len(entries) < config.min_completions or all_tried(prompt_id, entries, state):
            chosen.append(prompt_id)
    return chosen


def stuck_prompts(step: int, buffer: TailBuffer, store: RubricStore, state: RefinementState,
                  config: RefinementConfig) -> list[str]:
    """The stuck prompts to answer at `step`: flat last groups under the current rubric, newest first."""
    stuck = config.stuck
    chosen = []
    for prompt_id in buffer.newest_first():
        if len(chosen) == stuck.prompts:
            break
        if prompt_id not in store or resting(prompt_id, step, state, config.budgets) is not None:
            continue
        entries = buffer.entries(prompt_id, version=store.rubric_for(prompt_id).version)
        if spread_collapsed(entries, stuck.groups, stuck.max_std, min_mean=0.0):
            chosen.append(prompt_id)
    return chosen


def answer(model, tokenizer, messages: Sequence[Messages], sampling: Sampling, max_new_tokens: int,
           seed: int, trainer=None) -> list[str]:
    """`sampling.samples_per_prompt` sampled answers per prompt, adjacent; call on every rank with the same
    arguments. With the `trainer`, through its wrapped model and accelerator (TRL's unwrapping: ZeRO-3 gathers each
    layer once)."""
    policy, accelerator, checkpointing = (model, None, None) if trainer is None else (
        trainer.model_wrapped, trainer.accelerator, trainer.args.gradient_checkpointing_kwargs)
    return generate_on_every_rank(
        policy, tokenizer, list(messages),
        accelerator=accelerator,
        gradient_checkpointing_kwargs=checkpointing,
        max_new_tokens=sampling.max_new_tokens or max_new_tokens,
        batch_size=sampling.batch_size,
        samples_per_prompt=sampling.samples_per_prompt,
        temperature=sampling.temperature,
        top_p=1.0,
        top_k=0,
        seed=seed,
    ).texts


async def grade_into_buffer(step: int, answered: Answered, prompts: Mapping[str, str], grader: RubricReward,
                            store: RubricStore, buffer: TailBuffer) -> dict[str, Any]:
    """Grade the answers with the prompts' current rubrics and buffer them; returns the round's record."""
    started = time.perf_counter()
    per_prompt = len(answered.texts) // len(answered.prompt_ids)
    ids = [prompt_id for prompt_id in answered.prompt_ids for _ in range(per_prompt)]
    graded = await grader.grade([prompts[i] for i in ids], answered.texts, [store.rubric_for(i) for i in ids])
    buffer.record(ids, answered.texts, graded, step)
    return {
        "step": step,
        "prompt_id": None,
        "status": "sampled",
        "reason": answered.reason,
        "prompt_ids": answered.prompt_ids,
        "completions": len(answered.texts),
        "grading_failures": sum(g.error is not None for g in graded),
        "generation_s": round(answered.seconds, 3),
        "grading_s": round(time.perf_counter() - started, 3),
    }
