"""Greedy answers from a policy on a fixed prompt set: what "before" and "after" samples are made of.

Greedy decoding keeps samples comparable across checkpoints: the same prompts and the same weights always
give the same answers.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_answers(
    model, tokenizer, prompts: list[list[dict[str, str]]], max_new_tokens: int = 64, batch_size: int = 8
) -> list[str]:
    """One greedy answer per chat prompt, decoded without special tokens."""
    was_training = model.training
    model.eval()
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                for messages in prompts[start : start + batch_size]
            ]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return answers
