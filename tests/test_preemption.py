"""CheckpointOnSignal: a signal mid-run saves a checkpoint at the end of the step and stops; the run resumes."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from datasets import Dataset
from test_training import tiny_grpo_config
from transformers import TrainerCallback
from trl import GRPOTrainer

from rubric_rft.training.preemption import PREEMPTED_EXIT_CODE, CheckpointOnSignal

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def length_reward(completions, **kwargs):
    return [len(str(c)) / 100 for c in completions]


class SignalAtStep(TrainerCallback):
    """Sends `signum` to this very process at the end of optimizer step `step`, as a scheduler would."""

    def __init__(self, step: int, signum: int) -> None:
        self.step = step
        self.signum = signum

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def prompts() -> Dataset:
    return Dataset.from_dict({"prompt": [f"Tell me about the number {i}." for i in range(8)]})


def trainer_for(model: str, output_dir, callbacks, **overrides) -> GRPOTrainer:
    return GRPOTrainer(
        model=model,
        reward_funcs=[length_reward],
        args=tiny_grpo_config(output_dir, **overrides),
        train_dataset=prompts(),
        callbacks=callbacks,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_signal_saves_a_checkpoint_stops_and_the_run_resumes(tmp_path, tiny_model_path, signum):
    before = signal.getsignal(signum)
    preemption = CheckpointOnSignal()
    # save_strategy "no": any checkpoint on disk comes from the signal
    trainer = trainer_for(tiny_model_path, tmp_path, [SignalAtStep(2, signum), preemption], max_steps=6)
    trainer.train()

    assert preemption.triggered and preemption.received == signum and preemption.stopped_at_step == 2
    assert trainer.state.global_step == 2, "training stopped at the step the signal arrived in"
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    checkpoint = tmp_path / "checkpoint-2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2
    assert (checkpoint / "optimizer.pt").exists() and (checkpoint / "model.safetensors").exists()
    assert signal.getsignal(signum) == before, "the previous handler is back after training"

    resumed = trainer_for(tiny_model_path, tmp_path, [CheckpointOnSignal()], max_steps=6)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    assert [e["step"] for e in resumed.state.log_history if "reward" in e] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_no_signal_no_checkpoint(tmp_path, tiny_model_path):
    preemption = CheckpointOnSignal()
    trainer = trainer_for(tiny_model_path, tmp_path, [preemption], max_steps=2)
    trainer.train()
    assert not preemption.triggered and preemption.stopped_at_step is None
    assert trainer.state.global_step == 2 and not list(tmp_path.glob("checkpoint-*"))


def test_handlers_install_once_and_restore_what_was_there():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        callback = CheckpointOnSignal(signals=[signal.SIGUSR2])
        assert callback.install() and callback.install() and callback.installed
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert callback.received == signal.SIGUSR2 and seen == []
        callback.uninstall()
        assert not callback.installed
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == [signal.SIGUSR2], "the handler installed before is back"
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_ignored_signal_is_restored_as_ignored():
    """Launchers start workers with SIGUSR1 ignored (see slurm/); the callback handles it, then puts SIG_IGN back."""
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        callback = CheckpointOnSignal()
        callback.install()
        assert signal.getsignal(signal.SIGUSR1) == callback._on_signal
        callback.uninstall()
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_outside_the_main_thread_it_warns_and_does_nothing(caplog):
    import threading

    callback = CheckpointOnSignal()
    results = []
    worker = threading.Thread(target=lambda: results.append(callback.install()))
    worker.start()
    worker.join()
    assert results == [False] and not callback.installed
    assert "not in the main thread" in caplog.text


class FakeAccelerator:
    def __init__(self, is_main_process: bool) -> None:
        self.is_main_process = is_main_process
        self.waited = self.ended = False
        self.calls = []

    def wait_for_everyone(self) -> None:
        self.waited = True
        self.calls.append("barrier")

    def end_training(self) -> None:
        self.ended = self.waited
        self.calls.append("end_training")


@pytest.mark.parametrize("is_main_process,code", [(True, PREEMPTED_EXIT_CODE), (False, 0)])
def test_exit_if_triggered_exits_main_with_ex_tempfail_after_a_barrier(is_main_process, code):
    callback = CheckpointOnSignal()
    accelerator = FakeAccelerator(is_main_process)
    callback.exit_if_triggered(accelerator)  # not triggered: returns
    assert not accelerator.waited
    callback.triggered = True
    with pytest.raises(SystemExit) as exited:
        callback.exit_if_triggered(accelerator)
    assert exited.value.code == code and accelerator.waited and accelerator.ended  # the group ended, then exit


def test_before_exit_runs_after_the_barrier_and_before_the_process_group_ends():
    callback = CheckpointOnSignal()
    accelerator = FakeAccelerator(is_main_process=True)
    callback.triggered = True
    with pytest.raises(SystemExit):
        callback.exit_if_triggered(accelerator, before_exit=lambda: accelerator.calls.append("vLLM shut down"))
    assert accelerator.calls == ["barrier", "vLLM shut down", "end_training"]


def test_exit_code_is_ex_tempfail_and_signals_are_required():
    assert PREEMPTED_EXIT_CODE == 75
    with pytest.raises(ValueError):
        CheckpointOnSignal(signals=[])


DRIVER = '''
import json, os, sys
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from rubric_rft.training.cpu_launch import set_up_cpu_ranks
from rubric_rft.training.preemption import CheckpointOnSignal

set_up_cpu_ranks([])
out, max_steps, model, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def length_reward(completions, **kwargs):
    return [len(str(c)) / 100 for c in completions]


class Started(TrainerCallback):
    """Tells the test which process is which rank, once training is under way."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            with open(os.path.join(out, f"rank{args.process_index}.pid"), "w") as handle:
                handle.write(str(os.getpid()))


args = GRPOConfig(
    output_dir=out, use_cpu=True, bf16=False, seed=0, learning_rate=1e-3, max_steps=max_steps,
    per_device_train_batch_size=4, num_generations=4, max_completion_length=8, logging_steps=1,
    report_to="none", gradient_checkpointing=False, save_strategy="no",
)
preemption = CheckpointOnSignal()
trainer = GRPOTrainer(
    model=model, reward_funcs=[length_reward], args=args, callbacks=[Started(), preemption],
    train_dataset=Dataset.from_dict({"prompt": [f"Count to {i}." for i in range(8)]}),
)
trainer.train(resume_from_checkpoint=None if resume == "none" else resume)
# A file per rank: the ranks share one stdout, where their lines can interleave with each other's.
with open(os.path.join(out, f"report{trainer.accelerator.process_index}.json"), "w") as handle:
    json.dump({
        "rank": trainer.accelerator.process_index, "triggered": preemption.triggered, "step": trainer.state.global_step,
        "received": preemption.received.name if preemption.received else None, "stopped_at": preemption.stopped_at_step,
    }, handle)
preemption.exit_if_triggered(trainer.accelerator)
trainer.accelerator.end_training()
'''


def launch_two_ranks(driver, out, max_steps, model, resume="none"):
    """`accelerate launch` of 2 CPU processes, started as the Slurm scripts start it: SIGUSR1 ignored by the launcher
    (slurm/common.sh's run_ignoring_usr1)."""
    command = [
        "accelerate", "launch", "--config_file", str(ROOT / "configs/accelerate/cpu_2proc.yaml"),
        "--main_process_port", str(free_port()), str(driver), str(out), str(max_steps), model, resume,
    ]
    shell = 'source slurm/common.sh; run_ignoring_usr1 "$@"; rc=0; wait_for_pid "$LAUNCHER_PID" || rc=$?; exit "$rc"'
    return subprocess.Popen(
        ["bash", "-c", shell, "bash", *command], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def rank_reports(out) -> dict[int, dict]:
    """Each rank's report, read and removed so that the next launch writes fresh ones."""
    reports = {}
    for path in out.glob("report*.json"):
        report = json.loads(path.read_text())
        reports[report["rank"]] = report
        path.unlink()
    return reports


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_both_at_the_same_step_and_the_checkpoint_resumes(tmp_path, tiny_model_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "run"
    out.mkdir()
    run = launch_two_ranks(driver, out, 30, tiny_model_path)
    try:
        deadline = time.monotonic() + 120
        while not (out / "rank1.pid").exists():
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.05)
        os.kill(int((out / "rank1.pid").read_text()), signal.SIGUSR1)  # rank 1 only
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0, "torchrun reports the main process's exit 75"
    assert "exitcode  : 75" in stderr
    reports = rank_reports(out)
    assert set(reports) == {0, 1}, stdout + stderr[-3000:]
    step = reports[1]["stopped_at"]
    assert reports[1]["received"] == "SIGUSR1" and reports[0]["received"] is None
    assert all(r["triggered"] and r["stopped_at"] == r["step"] == step for r in reports.values())
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())["global_step"] == step

    resumed = launch_two_ranks(driver, out, step + 1, tiny_model_path, str(out / f"checkpoint-{step}"))
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr[-3000:]
    reports = rank_reports(out)
    assert set(reports) == {0, 1}, stdout + stderr[-3000:]
    assert all(not r["triggered"] and r["step"] == step + 1 for r in reports.values())
