"""A checkpoint is complete or not a checkpoint: callback state rides in `trainer_state.json`, the file the trainer
writes last, and resuming skips a checkpoint whose save was cut short."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trl import GRPOConfig

from rubric_rft.training.checkpoint_state import ResumeSettingsError, check_resume_settings, last_complete_checkpoint

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"


def test_the_last_complete_checkpoint_skips_missing_and_cut_short_trainer_states(tmp_path):
    assert last_complete_checkpoint(tmp_path / "nothing-here") is None
    for step, trainer_state in ((2, "{}"), (10, "{}"), (12, '{"global_step": 12, "stateful'), (14, None)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if trainer_state is not None:
            (folder / "trainer_state.json").write_text(trainer_state)
    (tmp_path / "checkpoint-99-old").mkdir()  # not a checkpoint name
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # 10 > 2 as numbers, not strings
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-12"


def test_transformers_rebuilding_the_callbacks_is_refused_with_the_reason():
    args = GRPOConfig(output_dir="unused", use_cpu=True, bf16=False, restore_callback_states_from_checkpoint=True)
    with pytest.raises(ResumeSettingsError, match="restore_callback_states_from_checkpoint: leave it false"):
        check_resume_settings(args)
    check_resume_settings(GRPOConfig(output_dir="unused", use_cpu=True, bf16=False))


# Runs scripts/train_grpo.py, but the process dies while the trainer writes checkpoint-4's trainer_state.json,
# after the weights and optimizer state are on disk: what a kill at the worst moment of a save leaves.
KILLED_INSIDE_THE_SAVE = """
import os, runpy, sys
from transformers.trainer_callback import TrainerState

script = sys.argv[1]
write = TrainerState.save_to_json

def killed_while_writing(self, json_path):
    if "checkpoint-4" in json_path:
        with open(json_path, "w") as handle:
            handle.write('{"global_step": 4, "stateful_callbacks": {"OverOpt')
        os._exit(137)
    write(self, json_path)

TrainerState.save_to_json = killed_while_writing
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def train(out: Path, model: str, *extra: str, killed_inside_save: bool = False) -> subprocess.CompletedProcess:
    monitor = {"heldout_path": str(EVERYDAY / "heldout_prompt_only.jsonl"),
               "gold": {"rubrics_path": str(EVERYDAY / "heldout_rules.jsonl")},
               "monitor_steps": 2, "num_prompts": 2, "samples_per_prompt": 2, "max_new_tokens": 8}
    script = str(ROOT / "scripts" / "train_grpo.py")
    driver = out.parent / "killed_inside_the_save.py"
    driver.write_text(KILLED_INSIDE_THE_SAVE)
    command = [sys.executable, *([str(driver)] if killed_inside_save else []), script,
               "--model_name_or_path", model, "--use_peft", "false",
               "--dataset_path", str(EVERYDAY / "train_rules.jsonl"), "--num_samples", "0", "--output_dir", str(out),
               "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "8",
               "--learning_rate", "1e-3", "--report_to", "none", "--save_steps", "2", "--use_cpu", "true",
               "--max_steps", "6", "--monitor", json.dumps(monitor), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_job_killed_inside_a_checkpoint_save_resumes_from_the_last_complete_one(tmp_path, tiny_model_path):
    out = tmp_path / "run"
    killed = train(out, tiny_model_path, killed_inside_save=True)
    assert killed.returncode == 137, killed.stderr[-3000:]
    assert (out / "checkpoint-4" / "model.safetensors").exists(), "killed after the weights were written"
    assert [r["step"] for r in read_jsonl(out / "overopt.jsonl")] == [0, 2, 4]

    resumed = train(out, tiny_model_path, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-4 is incomplete" in resumed.stderr
    assert "monitor: resumed from" in resumed.stderr and "checkpoint-2 with 2 evaluations" in resumed.stderr
    assert "rubric store: resumed 40 prompts" in resumed.stderr
    assert [r["step"] for r in read_jsonl(out / "overopt.jsonl")] == [0, 2, 4, 6], "step 4 evaluated once more"
    assert {s["step"] for s in read_jsonl(out / "overopt_samples.jsonl")} == {0, 2, 4, 6}
    final = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert final["global_step"] == 6
    saved = final["stateful_callbacks"]
    assert [r["step"] for r in saved["OverOptimizationMonitor"]["attributes"]["history"]] == [0, 2, 4, 6]
    assert len(saved["RubricStoreCallback"]["attributes"]["versions"]) == 40
