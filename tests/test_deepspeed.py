"""DeepSpeed ZeRO-2 and ZeRO-3 through the training script on two CPU processes (DeepSpeed's CPU accelerator, gloo):
full fine-tuning and LoRA, the monitor with a gold and the best-by-gold model, online refinement, a checkpoint and
a resume. The sharded code paths are the GPU ones; only the device and the collective backend differ."""

import importlib.util
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_online_refinement_training import ANYTHING, LONG, saturated_bank_world, write_rows

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs the deepspeed extra"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(zero_config: str, out: Path, model: str, data: Path, *extra: str) -> str:
    monitor = {"heldout_path": str(EVERYDAY / "heldout_prompt_only.jsonl"),
               "gold": {"rubrics_path": str(EVERYDAY / "heldout_rules.jsonl")},
               "monitor_steps": 2, "num_prompts": 3, "samples_per_prompt": 2, "max_new_tokens": 8}
    command = [
        "accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / zero_config),
        "--main_process_port", str(free_port()), str(ROOT / "scripts" / "train_grpo.py"),
        "--model_name_or_path", model, "--dataset_path", str(data), "--heldout_path", str(data), "--num_samples", "2",
        "--output_dir", str(out), "--per_device_train_batch_size", "4", "--num_generations", "4",
        "--max_completion_length", "8", "--learning_rate", "1e-3", "--report_to", "none", "--save_steps", "2",
        "--use_cpu", "false", "--bf16", "false", "--gradient_checkpointing", "false",
        "--monitor", json.dumps(monitor), *extra,
    ]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stderr


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_zero3_full_fine_tuning_with_the_monitor_and_refinement_checkpoints_and_resumes(tmp_path, tiny_model_path):
    data, refinement = saturated_bank_world(tmp_path)  # refinement has work from the start
    out = tmp_path / "run"
    args = ("--use_peft", "false", "--refinement", json.dumps(refinement))
    launch("cpu_zero3.yaml", out, tiny_model_path, data, *args, "--max_steps", "2")

    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists(), (
        "each process saved as its own rank")
    assert (checkpoint / "global_step2").is_dir(), "a DeepSpeed checkpoint"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]
    assert {"OverOptimizationMonitor", "RubricStoreCallback", "OnlineRefinementCallback"} <= set(saved)
    assert [r["step"] for r in read_jsonl(out / "overopt.jsonl")] == [0, 2]

    best = json.loads((out / "best_gold" / "best_gold.json").read_text())
    assert best["step"] in (0, 2)
    weights = load_file(out / "best_gold" / "model.safetensors")  # gathered from both shards, loadable alone
    start = load_file(Path(tiny_model_path) / "model.safetensors")
    assert {name: w.shape for name, w in weights.items()} == {name: w.shape for name, w in start.items()}
    if best["step"] == 0:
        assert all(torch.equal(weights[name], start[name]) for name in start), "step 0's model is the start model"

    resumed = launch("cpu_zero3.yaml", out, tiny_model_path, data, *args, "--max_steps", "4",
                     "--resume_from_checkpoint", "true")
    assert "monitor: resumed from" in resumed and "with 2 evaluations" in resumed
    assert [r["step"] for r in read_jsonl(out / "overopt.jsonl")] == [0, 2, 4]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    assert {r["step"] for r in read_jsonl(out / "refinements.jsonl")} == {2, 4}
    final = load_file(out / "model.safetensors")
    assert set(final) == set(start) and all(final[name].numel() for name in final), "a gathered, whole model"


def test_zero2_lora_with_the_monitor(tmp_path, tiny_model_path):
    data = write_rows(tmp_path / "data.jsonl", [ANYTHING, LONG])
    out = tmp_path / "run"
    launch("cpu_zero2.yaml", out, tiny_model_path, data, "--use_peft", "true", "--lora_r", "4",
           "--lora_target_modules", "all-linear", "--max_steps", "2")
    assert [r["step"] for r in read_jsonl(out / "overopt.jsonl")] == [0, 2]
    assert all(r["kl"] >= 0 for r in read_jsonl(out / "overopt.jsonl"))
    assert (out / "adapter_model.safetensors").exists() and (out / "best_gold" / "adapter_model.safetensors").exists()
    assert (out / "checkpoint-2" / "rng_state_1.pth").exists()


def test_zero3_with_a_reward_model_as_the_reward_and_the_monitors_proxy(tmp_path, tiny_model_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_model = tmp_path / "reward_model"  # an untrained head: this checks the sharded wiring, not a preference
    AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1).save_pretrained(reward_model)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(reward_model)
    data = write_rows(tmp_path / "data.jsonl", [ANYTHING])
    out = tmp_path / "run"
    launch("cpu_zero3.yaml", out, tiny_model_path, data, "--use_peft", "false", "--max_steps", "2",
           "--reward", json.dumps({"type": "bt", "model": str(reward_model)}))
    history = read_jsonl(out / "overopt.jsonl")
    assert [r["step"] for r in history] == [0, 2]
    assert all(0 < r["proxy"] < 1 and r["proxy_failures"] == 0 for r in history)
    rewards = [m["reward"] for m in read_jsonl(out / "metrics.jsonl") if "reward" in m]
    assert len(rewards) == 2 and all(0 < r < 1 for r in rewards)
