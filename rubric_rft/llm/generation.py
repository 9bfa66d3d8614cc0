"""Answers from a local policy to chat prompts: the one generation path of before/after samples, evaluation,
response collection and the over-optimization monitor.

Each prompt is rendered with the tokenizer's chat template (generation prompt added) and repeated
`samples_per_prompt` times, its samples adjacent; the rows are left-padded and generated `batch_size` at a time.
`temperature=0` is greedy. Otherwise batch b is sampled with the seed `seed + b` inside `torch.random.fork_rng`,
so the global random state, and with it training, is untouched. A completion ends at its first end-of-sequence
token; texts are decoded without special tokens and stripped. A LoRA policy generates with its adapters folded
into its weights (`rubric_rft.llm.generation_weights`): fewer operations a token, the same answers up to rounding.

In a distributed run, `generate_on_every_rank` is called by every rank: under DeepSpeed ZeRO-3 (and FSDP) a
model's weights are sharded, so no rank can generate while the others wait elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from rubric_rft.llm.generation_weights import generation_weights

Messages = list[dict[str, str]]


@dataclass
class Batch:
    """The rows of one generate call: prompt and completion tokens, and which of them are real."""

    sequences: torch.Tensor  # (rows, prompt + completion)
    attention_mask: torch.Tensor  # the prompt's padding off, the completion on up to its first end-of-sequence
    completion_mask: torch.Tensor  # (rows, completion): the completion part of `attention_mask`
    # (rows, completion): each generated token's log-probability at the sampling temperature, from the logits the
    # model sampled it from (`generate(token_logprobs=True)`); None when not asked for
    token_logprobs: torch.Tensor | None = None

    def to(self, device) -> Batch:
        return Batch(*(None if tensor is None else tensor.to(device) for tensor in (
            self.sequences, self.attention_mask, self.completion_mask, self.token_logprobs)))


@dataclass
class Generations:
    """One entry per row (prompt i owns rows i*n to (i+1)*n - 1 for n samples per prompt)."""

    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # completion tokens, the end-of-sequence token included
    measured: list[Any] = field(default_factory=list)  # what `measure` returned per row; empty without one


# what `measure` is given: the model that generated (unwrapped) and the batch; it returns one value per row
Measure = Callable[[Any, Batch], list[Any]]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[Messages],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    samples_per_prompt: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    measure: Measure | None = None,
    token_logprobs: bool = False,
) -> Generations:
    """Answers to `prompts` in this process (see the module docstring); `top_k=None` leaves the model's default.

    `measure` runs on each batch right after it is generated, on the same model (e.g. log-probabilities for a KL);
    with `token_logprobs` (sampling without top-k/top-p) the batch it gets carries the log-probability of each
    generated token, read from the logits it was sampled from: no second forward pass for the policy's side.
    The tokenizer's padding side and the model's train/eval mode are restored.
    """
    rows = [messages for messages in prompts for _ in range(samples_per_prompt)]
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if top_k is not None:
            sampling["top_k"] = top_k
    result = Generations()
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        with generation_weights(model) as folded:  # folded once for every batch; measured below, unfolded
            batches = [
                _generate_batch(folded, tokenizer, rows[start : start + batch_size], max_new_tokens, sampling,
                                seed + index, token_logprobs)
                for index, start in enumerate(range(0, len(rows), batch_size))
            ]
        for batch in batches:
            result.texts.extend(completion_texts(tokenizer, batch))
            result.lengths.extend(batch.completion_mask.sum(dim=1).tolist())
            if measure is not None:
                result.measured.extend(measure(model, batch))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return result


def generate_on_every_rank(
    model,
    tokenizer,
    prompts: list[Messages],
    *,
    accelerator=None,
    gradient_checkpointing_kwargs: dict | None = None,
    batch_size: int = 8,
    samples_per_prompt: int = 1,
    seed: int = 0,
    **options,
) -> Generations:
    """`generate` with every rank of a distributed run answering its share; every rank gets all the answers,
    in prompt order. Call it on every rank, with the same arguments. One process: the same as `generate`.

    The batches are those one process would make, each with its own seed, and every rank takes a contiguous
    block of them: the answers do not depend on the number of processes. Ranks with fewer batches repeat the
    last one (the repeat is thrown away), so every rank makes as many generate calls and forward passes as the
    others: generate under ZeRO-3 or FSDP synchronises ranks at each token. With the trainer's `accelerator`
    (and its wrapped model), generation runs inside TRL's `unwrap_model_for_generation`, which gathers ZeRO-3
    parameters once; without one, `model` is used as it is (a callback is given the unwrapped model). The
    processes are those of accelerate's state, which the trainer has set up. `options` are `generate`'s other
    arguments.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    rows = [messages for messages in prompts for _ in range(samples_per_prompt)]
    count = -(-len(rows) // batch_size)
    mine = rank_block(count, state.process_index, state.num_processes)
    with _for_generation(model, accelerator, gradient_checkpointing_kwargs) as policy:
        share = generate(
            policy,
            tokenizer,
            rows[mine.start * batch_size : mine.stop * batch_size],
            batch_size=batch_size,
            seed=seed + mine.start,
            **options,
        )
        for _ in range(-(-count // state.num_processes) - len(mine)):
            generate(policy, tokenizer, rows[(count - 1) * batch_size :], batch_size=batch_size, **options)
    merged = Generations()
    for part in gather_object([share]):
        merged.texts += part.texts
        merged.lengths += part.lengths
        merged.measured += part.measured
    return merged


def _generate_batch(model, tokenizer, rows: list[Messages], max_new_tokens: int, sampling: dict, seed: int,
                    token_logprobs: bool = False) -> Batch:
    texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) for messages in rows]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    devices = [model.device] if model.device.type == "cuda" else []
    if token_logprobs and (not sampling["do_sample"] or sampling["top_p"] < 1.0 or sampling.get("top_k") != 0):
        raise ValueError("token_logprobs needs plain sampling (temperature > 0, top_p 1, top_k 0): with anything else "
                         "the tokens do not come from the logits' distribution")
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling,
            return_dict_in_generate=True, output_logits=token_logprobs,
        )
    completions = output.sequences[:, inputs["input_ids"].shape[1] :]
    mask = _up_to_first_eos(completions, tokenizer.eos_token_id)
    logprobs = None
    if token_logprobs:  # raw logits of each step; the same temperature that sampled
        logits = torch.stack(output.logits, dim=1).float() / sampling["temperature"]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)
    return Batch(output.sequences, torch.cat([inputs["attention_mask"], mask], dim=1), mask, logprobs)


def chat_prompt_ids(tokenizer, messages: Messages) -> list[int]:
    """A chat prompt's tokens as `generate` feeds them: the chat template with its generation prompt, no special
    tokens added."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def batch_of(prompts: list[list[int]], completions: list[list[int]], tokenizer,
             token_logprobs: list[list[float]] | None = None) -> Batch:
    """Token lists in `generate`'s layout: prompts left-padded, completions right-padded, each completion counted up
    to and including its first end-of-sequence token; `token_logprobs` (one per completion token) padded alike."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width_p = max(len(prompt) for prompt in prompts)
    width_c = max(1, max(len(completion) for completion in completions))
    sequences = torch.tensor([
        [pad] * (width_p - len(prompt)) + prompt + completion + [pad] * (width_c - len(completion))
        for prompt, completion in zip(prompts, completions, strict=True)
    ])
    real = torch.arange(width_c) < torch.tensor([len(completion) for completion in completions]).unsqueeze(1)
    completion_mask = _up_to_first_eos(sequences[:, width_p:], tokenizer.eos_token_id) * real  # a pad may be the EOS
    prompt_mask = torch.arange(width_p) >= torch.tensor([width_p - len(prompt) for prompt in prompts]).unsqueeze(1)
    logprobs = None
    if token_logprobs is not None:
        logprobs = torch.tensor([row + [0.0] * (width_c - len(row)) for row in token_logprobs])
    return Batch(sequences, torch.cat([prompt_mask.long(), completion_mask], dim=1), completion_mask, logprobs)


def completion_texts(tokenizer, batch: Batch) -> list[str]:
    """The text before each completion's first end-of-sequence token."""
    completions = batch.sequences[:, -batch.completion_mask.shape[1] :]
    text = batch.completion_mask.bool() & ~_is_eos(completions, tokenizer.eos_token_id)
    answers = tokenizer.batch_decode(
        [row[kept] for row, kept in zip(completions, text, strict=True)], skip_special_tokens=True
    )
    return [answer.strip() for answer in answers]


def _up_to_first_eos(tokens: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    """1 for every generated token up to and including the first end-of-sequence token, 0 after it."""
    is_eos = _is_eos(tokens, eos_token_id).long()
    ended_before = torch.cumsum(is_eos, dim=1) - is_eos
    return (ended_before == 0).long()


def _is_eos(tokens: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    eos_ids = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=tokens.device)
    return torch.isin(tokens, eos_ids)


def rank_block(count: int, rank: int, ranks: int) -> range:
    """Rank `rank`'s contiguous share of `count` items, balanced as accelerate's `split_between_processes`."""
    per_rank, extra = divmod(count, ranks)
    start = rank * per_rank + min(rank, extra)
    return range(start, start + per_rank + (rank < extra))


@contextlib.contextmanager
def _for_generation(model, accelerator, gradient_checkpointing_kwargs: dict | None):
    """The model to generate with: with an accelerator, TRL's unwrapped model (ZeRO-3 parameters gathered,
    gradient checkpointing off); without one, `model` itself."""
    if accelerator is None:
        yield model
        return
    from trl.models import unwrap_model_for_generation

    with unwrap_model_for_generation(
        model, accelerator, gradient_checkpointing_kwargs=gradient_checkpointing_kwargs
    ) as unwrapped:
        yield unwrapped
