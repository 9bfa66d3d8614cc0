"""Held-out answers from the run's own colocated vLLM engine, when training has one.

Sampling the held-out answers is most of an evaluation's cost (`monitor_phase_seconds`), and a run with vLLM
rollouts already holds an engine that decodes far faster than `generate` on a GPU. Its weights are the policy's as
of TRL's last sync; the monitor syncs them first when the policy has moved since (and tells the trainer, so the
next step's rollouts do not sync the same weights again). The engine samples at the monitor's temperature with
top-k/top-p off and returns each token's log-probability at that temperature (TRL builds it with
`logprobs_mode="processed_logprobs"`), so only the reference runs a forward pass for the KL, as with `generate`.

Each prompt's answers are seeded, and the engine samples inside `torch.random.fork_rng`: a colocated engine draws
from the training process's own random generators, so without it an evaluation would change the rollouts after it.
The main process generates every answer and broadcasts them; every rank then measures the KL on all of them in the
same batches, so a ZeRO-3 forward pass (a collective) runs the same number of times on every rank. Server mode (a
separate vLLM server), tensor parallelism and sleep mode are left to `generate`: `vllm_engine` says why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from accelerate.utils import broadcast_object_list

from rubric_rft.llm.generation import batch_of, chat_prompt_ids, completion_texts
from rubric_rft.training.monitor.policy import PolicySamples, kl_of


def vllm_engine(trainer) -> tuple[object | None, str]:
    """TRL's colocated vLLM generation of `trainer` if the monitor can sample with it, else None; and why not."""
    if trainer is None or not getattr(trainer, "use_vllm", False):
        return None, "training has no vLLM engine"
    generation = trainer.vllm_generation
    if trainer.vllm_mode != "colocate":
        return None, "vllm_mode is server: the monitor samples with generate"
    if generation.tensor_parallel_size > 1:
        return None, "vllm_tensor_parallel_size > 1: the monitor samples with generate"
    if generation.enable_sleep_mode:
        return None, "vllm_enable_sleep_mode: the monitor samples with generate"
    return generation, "colocated vLLM"


def sample_with_vllm(
    trainer,
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
    """`policy.sample_policy`'s result, sampled by `trainer`'s colocated vLLM engine (see the module docstring);
    `model` is the policy `reference` disables the adapters of, put in eval mode for the KL. Call it on every rank."""
    from vllm import SamplingParams

    sync_started = time.perf_counter()
    _sync_weights(trainer)
    sync_s = time.perf_counter() - sync_started
    generated = None
    if trainer.accelerator.is_main_process:
        prompt_ids = [chat_prompt_ids(tokenizer, messages) for messages in prompts]
        params = [
            SamplingParams(n=samples_per_prompt, temperature=temperature, top_p=1.0, top_k=0, max_tokens=max_new_tokens,
                           logprobs=0, seed=seed + i)
            for i in range(len(prompts))
        ]
        devices = [trainer.accelerator.device] if trainer.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the engine samples from this process's generators
            outputs = trainer.vllm_generation.llm.generate(
                [{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        generated = [
            (ids, list(sample.token_ids), _sampled_logprobs(sample))
            for ids, output in zip(prompt_ids, outputs, strict=True)
            for sample in output.outputs
        ]
    generated = broadcast_object_list([generated])[0]
    texts, lengths, kl, kl_s = [], [], [], 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(generated), batch_size):
                prompt_ids, completions, logprobs = zip(*generated[start : start + batch_size], strict=True)
                batch = batch_of(list(prompt_ids), list(completions), tokenizer, list(logprobs))
                texts += completion_texts(tokenizer, batch)
                lengths += batch.completion_mask.sum(dim=1).tolist()
                started = time.perf_counter()
                kl += kl_of(reference, batch.to(model.device), temperature)
                kl_s += time.perf_counter() - started
    finally:
        model.train(was_training)
    return PolicySamples(texts, lengths, kl, kl_s, sync_s)


def _sync_weights(trainer) -> None:
    """Bring the engine to the policy's current weights unless TRL already has for this step; TRL's own check of
    `_last_loaded_step` then skips the same sync at the next rollout."""
    step = trainer.state.global_step
    if getattr(trainer, "_last_loaded_step", None) != step:
        trainer.vllm_generation.sync_weights()
        trainer._last_loaded_step = step


def _sampled_logprobs(sample) -> list[float]:
    """The log-probability of each token the engine sampled (`logprobs=0` returns just that one per position)."""
    return [entry[token].logprob for token, entry in zip(sample.token_ids, sample.logprobs, strict=True)]
