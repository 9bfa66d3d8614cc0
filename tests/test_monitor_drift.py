"""The policy's KL from the start on the start's answers (the adaptive cadence's `drift_move`): exact against a
forward pass per answer, zero for the start itself, and read by the monitor inside a real GRPO run."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_monitor import grpo_trainer, monitor_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from rubric_rft.training.monitor.callback import OverOptimizationMonitor
from rubric_rft.training.monitor.drift import DriftProbe
from rubric_rft.training.monitor.policy import reference_of

PROMPTS = [[{"role": "user", "content": "How do I boil an egg?"}],
           [{"role": "user", "content": "Name a fruit that is red and small."}]]
ANSWERS = ["Put it in boiling water for nine minutes.", "A cherry."]


def answer_logps(model, tokenizer, prompt, answer, temperature) -> torch.Tensor:
    """The answer's token log-probabilities from one unpadded forward pass."""
    prompt_ids = tokenizer(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(answer_ids).unsqueeze(-1)).squeeze(-1)


def test_the_drift_is_zero_at_the_start_and_the_kl_estimate_on_the_starts_answers_after_a_move(tiny_model_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.5))
    model.train()
    probe = DriftProbe(tokenizer, PROMPTS, ANSWERS, temperature=0.7)
    assert probe.measure(model, reference_of(model)) == 0.0  # LoRA starts as the identity
    assert model.training  # its mode is given back

    torch.manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.5)
    model.eval()
    with model.disable_adapter():
        start = [answer_logps(model, tokenizer, p, a, 0.7) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    moved = [answer_logps(model, tokenizer, p, a, 0.7) for p, a in zip(PROMPTS, ANSWERS, strict=True)]
    k3 = [(torch.exp(m - s) - (m - s) - 1).sum().item() for s, m in zip(start, moved, strict=True)]
    expected = sum(k3) / len(k3)
    model.train()  # dropout on: the probe must read the policy without it
    assert probe.measure(model, reference_of(model)) == pytest.approx(expected, abs=1e-4)
    assert expected > 0.01


@pytest.mark.slow
def test_an_adaptive_monitor_evaluates_when_the_policy_moved_and_counts_the_probe_as_its_cost(tmp_path,
                                                                                               tiny_model_path):
    still = {"adaptive": True, "reward_move": 100.0, "length_move": 100.0, "max_gap": 100}
    monitor = OverOptimizationMonitor(monitor_config(monitor_steps=1, cadence={**still, "drift_move": 0.01}),
                                      str(tmp_path / "moved"), max_new_tokens=8)
    grpo_trainer(tiny_model_path, tmp_path / "moved", monitor, max_steps=3).train()
    history = [json.loads(line) for line in (tmp_path / "moved" / "overopt.jsonl").read_text().splitlines()]
    assert history[0]["reason"] == "start" and history[0]["drift"] == 0.0
    assert [r["reason"] for r in history[1:]] == ["policy_moved"] * 3
    assert all(r["drift"] > 0 for r in history[1:])
    assert monitor.monitor_seconds > sum(r["monitor_s"] for r in history)  # the probe's forward passes count too

    monitor = OverOptimizationMonitor(monitor_config(monitor_steps=1, cadence={**still, "drift_move": 1000.0}),
                                      str(tmp_path / "still"), max_new_tokens=8)
    grpo_trainer(tiny_model_path, tmp_path / "still", monitor, max_steps=3).train()
    history = [json.loads(line) for line in (tmp_path / "still" / "overopt.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in history] == ["start", "last_step"]
