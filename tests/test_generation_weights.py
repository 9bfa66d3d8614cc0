"""Generation weights: LoRA adapters folded in, optionally cast; the same model, and every weight exactly as it was
afterwards."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from rubric_rft.llm.generation import generate
from rubric_rft.llm.generation_weights import generation_weights
from rubric_rft.training.rollouts import RolloutSettingsError

ROOT = Path(__file__).resolve().parent.parent


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
    with generation_weights(model) as folded:
        assert folded is model
        torch.testing.assert_close(logits(folded, ids), before, atol=1e-5, rtol=1e-4)
        assert any(not torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert torch.equal(logits(model, ids), before)  # adapters on again, over the original weights


def test_the_weights_come_back_when_generation_fails(tiny_model_path):
    model = lora_model(tiny_model_path)
    frozen = frozen_weights(model)
    with pytest.raises(RuntimeError, match="stopped"), generation_weights(model):
        raise RuntimeError("stopped")
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not model._adapters_disabled


def test_cast_weights_compute_nearly_the_same_and_are_restored_with_their_dtype(tiny_model_path):
    for model in (lora_model(tiny_model_path), AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()):
        ids = torch.randint(0, model.config.vocab_size, (2, 12))
        before, weights = logits(model, ids), {n: p.detach().clone() for n, p in model.named_parameters()}
        with generation_weights(model, torch.bfloat16) as cast:
            assert {p.dtype for n, p in cast.named_parameters() if "lora_" not in n} == {torch.bfloat16}
            during = logits(cast, ids).float()
        assert (during - before).abs().max() < 0.05 * before.abs().max()  # bfloat16 rounding, not another model
        assert all(torch.equal(p, weights[n]) and p.dtype == torch.float32 for n, p in model.named_parameters())


def test_models_that_cannot_fold_exactly_are_used_as_they_are(tiny_model_path):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    dora = lora_model(tiny_model_path, use_dora=True)
    for model in (plain, dora):
        frozen = frozen_weights(model)
        with generation_weights(model) as used:
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
    monkeypatch.setattr("rubric_rft.llm.generation.generation_weights", contextlib.nullcontext)
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
    def watched(model, dtype):
        with generation_weights(model, dtype) as used:
            weight = used.get_input_embeddings().weight
            folded_while_generating.append((used._adapters_disabled, weight.dtype))  # folded: adapters off
            yield used

    monkeypatch.setattr(trainer_module, "generation_weights", watched)
    # a rule the tiny model passes about half the time: groups with a spread, so the adapters learn
    rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"Say something about {topic}."}],
             "rubric": {"id": f"p{i}", "criteria": [{"id": "short", "kind": "rule", "weight": 1, "text": "Short.",
                                                     "check": {"type": "char_count", "max": 25}}]}}
            for i, topic in enumerate(["tea", "rain"])]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trainer = trainer_module.RubricGRPOTrainer(
        model=tiny_model_path, reward_funcs=[RubricReward(None)], args=tiny_grpo_config(tmp_path, max_steps=2),
        rollout_dtype="bfloat16",
        train_dataset=load_prompt_dataset(str(data)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapters_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert folded_while_generating == [(True, torch.bfloat16)] * 2  # one rollout a step, folded and cast
    trained = dict(trainer.model.named_parameters())
    assert any(not torch.equal(trained[n], before) for n, before in adapters_before.items())
    assert {p.dtype for p in trained.values()} == {torch.float32}  # trained in float32, only decoded in bfloat16


def test_without_rollout_dtype_the_rollouts_are_trls_own(tmp_path, tiny_model_path, monkeypatch):
    from rubric_rft.training import trainer as trainer_module
    from tests.test_training import tiny_grpo_config

    monkeypatch.setattr(trainer_module, "generation_weights", None)  # would fail if called
    trainer = trainer_module.RubricGRPOTrainer(
        model=tiny_model_path, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=tiny_grpo_config(tmp_path, max_steps=1), train_dataset=Dataset.from_list(
            [{"prompt": [{"role": "user", "content": "Hello?"}]}] * 4),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    assert trainer.state.global_step == 1


def test_rollout_dtype_is_checked_before_the_trainer_is_built(tiny_model_path, tmp_path):
    from rubric_rft.training.trainer import RubricGRPOTrainer
    from tests.test_training import tiny_grpo_config

    with pytest.raises(ValueError, match="rollout_dtype: expected one of"):
        RubricGRPOTrainer(model=tiny_model_path, reward_funcs=[], args=tiny_grpo_config(tmp_path),
                          rollout_dtype="bf16")
    with pytest.raises(RolloutSettingsError, match=r"set rollout_dtype: null \(--rollout_dtype null\) with use_vllm"):
        RubricGRPOTrainer(model=tiny_model_path, reward_funcs=[], args=tiny_grpo_config(tmp_path, use_vllm=True),
                          rollout_dtype="bfloat16")


def test_the_default_config_decodes_in_bfloat16_and_null_gives_trls_rollouts_back():
    from tests.test_scale_path import parse_training_args

    default = ["--config", str(ROOT / "configs" / "cpu_default.yaml")]
    assert parse_training_args(default)[0].rollout_dtype == "bfloat16"
    for null in ("null", "None"):
        assert parse_training_args([*default, "--rollout_dtype", null])[0].rollout_dtype is None
    assert parse_training_args([*default, "--rollout_dtype", "float32"])[0].rollout_dtype == "float32"


@pytest.mark.slow
def test_the_script_refuses_vllm_rollouts_with_a_rollout_dtype_before_loading_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--use_vllm", "true", "--output_dir",
         str(tmp_path / "run"), "--report_to", "none"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error: rollout_dtype: bfloat16" in result.stderr and "--rollout_dtype null" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
