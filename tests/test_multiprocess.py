"""The training script in two processes on CPU (gloo), launched the way GPU runs are: `accelerate launch` with a
config file (configs/accelerate/cpu_2proc.yaml), llm criteria graded by the scripted judge server."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from test_training import PROMPTS, store_in, write_dataset

from rubric_rft.llm.weights import TINY_MODEL_ID
from rubric_rft.rubrics.datasets import load_prompt_dataset
from rubric_rft.rubrics.store import RubricStore

ROOT = Path(__file__).resolve().parent.parent
PER_DEVICE = 4  # completions per process per step
PROCESSES = 2
GENERATIONS = 4  # completions per prompt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(out: Path, data: Path, judge_url: str, cache: str, *extra: str) -> subprocess.CompletedProcess:
    judge = json.dumps({"backend": "openai", "model": "scripted-judge", "base_urls": [judge_url]})
    command = [
        "accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port", str(free_port()),  # other runs on this machine may hold the default port
        str(ROOT / "scripts" / "train_grpo.py"),
        "--model_name_or_path", TINY_MODEL_ID, "--use_peft", "false", "--use_cpu", "true", "--bf16", "false",
        "--dataset_path", str(data), "--output_dir", str(out), "--judge", judge,
        "--per_device_train_batch_size", str(PER_DEVICE), "--num_generations", str(GENERATIONS),
        "--max_completion_length", "8", "--learning_rate", "1e-3", "--logging_steps", "1", "--save_steps", "1",
        "--report_to", "none", "--seed", "0", *extra,
    ]
    env = {**os.environ, "RUBRIC_RFT_CACHE": cache, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_two_cpu_processes_grade_each_completion_once_log_once_and_resume(
    tmp_path, tiny_model_path, start_judge_server
):
    server = start_judge_server()
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    cache = str(Path(tiny_model_path).parent)  # the session's cache, where the fixture built the tiny model

    first = launch(out, data, server.base_url, cache, "--max_steps", "2", "--heldout_path", str(data),
                   "--num_samples", "2")

    # two processes: both resolved the model, and each step consumed PER_DEVICE x 2 completions of the data set
    assert first.stderr.count(f"{TINY_MODEL_ID}: tiny test model at") == PROCESSES
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    prompts_per_step = PER_DEVICE * PROCESSES // GENERATIONS
    steps = [e for e in state["log_history"] if "reward" in e]
    assert [e["epoch"] for e in steps] == [prompts_per_step / len(PROMPTS) * s for s in (1, 2)]
    # each rank grades only its own slice (one batched request per completion); TRL gathers the rewards
    assert all(e["rubric/judge_calls"] == PER_DEVICE for e in steps)
    # every completion graded exactly once across ranks, plus the held-out samples (main process only): 2 prompts,
    # before and after, graded together, so an answer training left unchanged is asked once (single flight)
    completions = 2 * PER_DEVICE * PROCESSES
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    heldout = len({(s["prompt"], answer) for s in samples for answer in (s["before"], s["after"])})
    assert server.stats.requests == completions + heldout

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "reward" in m] == [1, 2], "written by the main process only"
    assert len(metrics) == len(state["log_history"])
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2
    assert (out / "checkpoint-2" / "trainer_state.json").exists()
    # the rubric store, in the checkpoint's trainer_state.json (which the main process alone writes): the dataset's
    dataset_rubrics = RubricStore.from_rows(load_prompt_dataset(str(data))).current()
    assert store_in(out / "checkpoint-2").current() == dataset_rubrics

    # the 2-process checkpoint resumes (in 2 processes), through the script's `true` = last checkpoint
    resumed = launch(out, data, server.base_url, cache, "--max_steps", "3", "--num_samples", "0",
                     "--resume_from_checkpoint", "true")
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert resumed.stderr.count("rubric store: resumed 4 prompts") == PROCESSES, "every rank reads the store"
    assert [e["step"] for e in state["log_history"] if "reward" in e] == [1, 2, 3]
    assert server.stats.requests == completions + heldout + PER_DEVICE * PROCESSES
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "reward" in m] == [1, 2, 3]
