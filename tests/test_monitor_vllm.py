"""The monitor sampling its held-out answers with the run's colocated vLLM engine (monitor.engine)."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from rubric_rft.llm.generation import batch_of
from rubric_rft.training.monitor.callback import OverOptimizationMonitor
from rubric_rft.training.monitor.vllm_sampling import _sync_weights, vllm_engine

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"


def fake_trainer(**overrides):
    generation = types.SimpleNamespace(tensor_parallel_size=1, enable_sleep_mode=False, synced=0)
    generation.sync_weights = lambda: setattr(generation, "synced", generation.synced + 1)
    settings = dict(use_vllm=True, vllm_mode="colocate", vllm_generation=generation,
                    state=types.SimpleNamespace(global_step=3), _last_loaded_step=2)
    return types.SimpleNamespace(**{**settings, **overrides})


def test_the_colocated_engine_is_used_and_every_other_setup_says_why_not():
    assert vllm_engine(fake_trainer())[0] is not None
    assert vllm_engine(None) == (None, "training has no vLLM engine")
    assert vllm_engine(fake_trainer(use_vllm=False))[1] == "training has no vLLM engine"
    assert "server" in vllm_engine(fake_trainer(vllm_mode="server"))[1]
    tensor_parallel = fake_trainer()
    tensor_parallel.vllm_generation.tensor_parallel_size = 2
    assert "tensor_parallel_size" in vllm_engine(tensor_parallel)[1]
    sleeping = fake_trainer()
    sleeping.vllm_generation.enable_sleep_mode = True
    assert "sleep" in vllm_engine(sleeping)[1]


def test_weights_are_synced_once_per_step_and_trl_is_told():
    trainer = fake_trainer()
    _sync_weights(trainer)
    _sync_weights(trainer)
    assert trainer.vllm_generation.synced == 1 and trainer._last_loaded_step == 3  # TRL's rollout skips it too
    trainer.state.global_step = 4
    _sync_weights(trainer)
    assert trainer.vllm_generation.synced == 2


def test_engine_answers_take_generates_layout_masked_after_the_first_end_of_sequence_token():
    tokenizer = types.SimpleNamespace(pad_token_id=0, eos_token_id=2)
    batch = batch_of([[5, 6, 7], [5]], [[8, 2, 9], [8, 9, 9, 9]], tokenizer,
                     [[-0.1, -0.2, -0.3], [-1.0, -1.0, -1.0, -1.0]])
    assert batch.sequences.tolist() == [[5, 6, 7, 8, 2, 9, 0], [0, 0, 5, 8, 9, 9, 9]]
    assert batch.completion_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]  # the end-of-sequence token counts
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1]]
    assert torch.equal(batch.token_logprobs[0], torch.tensor([-0.1, -0.2, -0.3, 0.0]))


def test_asking_for_vllm_without_an_engine_is_an_error_naming_the_setting(tmp_path):
    monitor = OverOptimizationMonitor(_monitor_config(engine="vllm"), str(tmp_path))
    with pytest.raises(ValueError, match="monitor.engine is vllm, but training has no vLLM engine"):
        monitor._engine()
    assert OverOptimizationMonitor(_monitor_config(), str(tmp_path))._engine() == "transformers"


@pytest.mark.slow
@pytest.mark.vllm
def test_a_vllm_run_samples_the_heldout_answers_with_its_engine_and_their_kl_starts_at_zero(tiny_model_path, tmp_path):
    """The engine's answers, their log-probabilities and the layout they are scored in agree with the policy: at step
    0 the policy is the start, so the KL measured against a forward pass of the start is rounding, not nats. Later
    the engine samples the trained policy (synced), which has moved from the start."""
    pytest.importorskip("vllm")
    result = train_with_vllm_rollouts(tiny_model_path, tmp_path / "run", "auto")
    assert "monitor: held-out answers sampled by vllm (colocated vLLM)" in result.stderr
    history = [json.loads(line) for line in (tmp_path / "run" / "overopt.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [0, 1, 2, 3] and {r["engine"] for r in history} == {"vllm"}
    assert 0 <= history[0]["kl"] < 0.001  # engine-vs-forward rounding over 8 tokens (5e-6 measured)
    assert history[-1]["kl"] > 0.01  # an engine left with the starting weights would measure the start: ~0
    samples = [json.loads(line) for line in (tmp_path / "run" / "overopt_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * 3 * 2 and all(isinstance(s["response"], str) for s in samples)
    assert all(0 < r["completion_length"] <= 8 for r in history)
    phases = json.loads((tmp_path / "run" / "overopt.json").read_text())["monitor_phase_seconds"]
    assert set(phases) == {"sync", "sample", "kl", "grade", "write"} and phases["sync"] > 0  # the engine's weights


@pytest.mark.slow
@pytest.mark.vllm
def test_the_rollouts_after_an_evaluation_are_the_same_whatever_sampled_its_answers(tiny_model_path, tmp_path):
    """The colocated engine samples from the training process's random generators: the monitor's answers must not
    move them, or a monitored run would train differently from an unmonitored one."""
    pytest.importorskip("vllm")
    logs = {}
    for engine in ("vllm", "transformers"):
        train_with_vllm_rollouts(tiny_model_path, tmp_path / engine, engine)
        state = json.loads((tmp_path / engine / "trainer_state.json").read_text())
        logs[engine] = [(e["reward"], e["completions/mean_length"], e["loss"]) for e in state["log_history"]
                        if "reward" in e]
    assert len(logs["vllm"]) == 3 and logs["vllm"] == logs["transformers"]


def train_with_vllm_rollouts(model_path: str, output_dir: Path, engine: str, *flags: str):
    """scripts/train_grpo.py on configs/cpu_vllm.yaml and the tiny model, the monitor on at every step; the
    prompt-only rubric gives the tiny model's answers different rewards by step 3, so the policy moves."""
    monitor = {"heldout_path": str(EVERYDAY / "heldout_rules.jsonl"), "gold": {"rubrics_path": str(
        EVERYDAY / "heldout_gold.jsonl")}, "monitor_steps": 1, "num_prompts": 3, "samples_per_prompt": 2,
        "max_new_tokens": 8, "engine": engine}
    command = [sys.executable, str(ROOT / "scripts" / "train_grpo.py"), "--config",
               str(ROOT / "configs" / "cpu_vllm.yaml"), "--model_name_or_path", model_path,
               "--output_dir", str(output_dir), "--report_to", "none", "--num_samples", "0", "--max_steps", "3",
               "--dataset_path", str(EVERYDAY / "train_prompt_only.jsonl"),
               "--max_completion_length", "8", "--save_strategy", "no", "--learning_rate", "0.05",
               "--monitor", json.dumps(monitor), *flags]
    env = {**os.environ, "VLLM_CPU_CI_ENV": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _monitor_config(**overrides):
    from rubric_rft.training.monitor.config import load_monitor_config

    return load_monitor_config({"heldout_path": str(EVERYDAY / "heldout_prompt_only.jsonl"),
                                "gold": {"rubrics_path": str(EVERYDAY / "heldout_rules.jsonl")}, **overrides})
