"""Folded LoRA adapters for generation: the same model, and the frozen weights exactly as they were."""

import contextlib
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from rubric_rft.llm.generation import generate
from rubric_rft.llm.merged_lora import merged_lora


def lora_model(path: str, **options):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", **options)
    model = get_peft_model(model, config)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # trained adapters: B is zero at the start
            torch.nn.init.normal_(parameter, std=0.05)
    return model.eval()


def frozen_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_folded_adapters_compute_the_same_and_leave_every_weight_as_it_was(tiny_model_path):
    model = lora_model(tiny_model_path)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    before, frozen = logits(model, ids), frozen_weights(model)
    with model.disable_adapter():
        base = logits(model, ids)
    assert not torch.allclose(before, base, atol=1e-4), "the adapters must change the model for this test to mean much"
    with merged_lora(model) as folded:
        assert folded is model
        torch.testing.assert_close(logits(folded, ids), before, atol=1e-5, rtol=1e-4)
        assert any(not torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert torch.equal(logits(model, ids), before)  # adapters on again, over the original weights


def test_the_weights_come_back_when_generation_fails(tiny_model_path):
    model = lora_model(tiny_model_path)
    frozen = frozen_weights(model)
    with pytest.raises(RuntimeError, match="stopped"), merged_lora(model):
        raise RuntimeError("stopped")
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not model._adapters_disabled


def test_models_that_cannot_fold_exactly_are_used_as_they_are(tiny_model_path):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    dora = lora_model(tiny_model_path, use_dora=True)
    for model in (plain, dora):
        frozen = frozen_weights(model)
        with merged_lora(model) as used:
            assert used is model and all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_generation_answers_and_measures_with_the_trained_policy(tiny_model_path, monkeypatch):
    """Greedy answers are the unfolded model's; `measure` (the monitor's KL) sees the model with its adapters,
    so switching them off there gives the starting policy, not the folded one again."""
    model = lora_model(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    seen = []

    def measure(policy, batch):
        with policy.disable_adapter():
            seen.append(torch.equal(logits(policy, batch.sequences), logits(reference, batch.sequences)))
        return [0.0] * len(batch.sequences)

    folded = generate(model, tokenizer, prompts, max_new_tokens=8, measure=measure)
    monkeypatch.setattr("rubric_rft.llm.generation.merged_lora", contextlib.nullcontext)
    unfolded = generate(model, tokenizer, prompts, max_new_tokens=8)
    assert seen == [True]
    assert folded.texts == unfolded.texts and folded.lengths == unfolded.lengths


@pytest.mark.slow
def test_the_trainer_folds_the_adapters_for_its_rollouts_and_trains_them(tmp_path, tiny_model_path, monkeypatch):
    from rubric_rft.reward.rubric_reward import RubricReward
    from rubric_rft.rubrics.datasets import load_prompt_dataset
    from rubric_rft.training import trainer as trainer_module
    from tests.test_training import tiny_grpo_config

    folded_while_generating = []

    @contextlib.contextmanager
    def watched(model):
        with merged_lora(model) as used:
            folded_while_generating.append(used._adapters_disabled)  # folded: the adapters are off, W holds them
            yield used

    monkeypatch.setattr(trainer_module, "merged_lora", watched)
    # a rule the tiny model passes about half the time: groups with a spread, so the adapters learn
    rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"Say something about {topic}."}],
             "rubric": {"id": f"p{i}", "criteria": [{"id": "short", "kind": "rule", "weight": 1, "text": "Short.",
                                                     "check": {"type": "char_count", "max": 25}}]}}
            for i, topic in enumerate(["tea", "rain"])]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trainer = trainer_module.RubricGRPOTrainer(
        model=tiny_model_path, reward_funcs=[RubricReward(None)], args=tiny_grpo_config(tmp_path, max_steps=2),
        train_dataset=load_prompt_dataset(str(data)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapters_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert folded_while_generating == [True, True]  # one rollout per step, each with the adapters folded
    trained = trainer.model.named_parameters()
    assert any(not torch.equal(p, adapters_before[n]) for n, p in trained if n in adapters_before)
