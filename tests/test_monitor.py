"""The over-optimization monitor inside real TRL GRPO runs on the tiny model: outputs, resume, actions, errors."""

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from peft import LoraConfig
from test_rubric_store import save_checkpoint
from test_training import tiny_grpo_config
from transformers import TrainerCallback
from trl import GRPOTrainer

from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.datasets import completion_text, load_prompt_dataset
from rubric_rft.rubrics.format import Rubric
from rubric_rft.training.monitor.callback import OverOptimizationMonitor
from rubric_rft.training.monitor.config import MonitorConfig, load_monitor_config
from rubric_rft.training.monitor.scoring import summarize

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY = ROOT / "data" / "everyday"


def monitor_config(**overrides) -> MonitorConfig:
    settings = {
        "heldout_path": str(EVERYDAY / "heldout_prompt_only.jsonl"),
        "gold": {"rubrics_path": str(EVERYDAY / "heldout_rules.jsonl")},
        "monitor_steps": 1,
        "num_prompts": 3,
        "samples_per_prompt": 2,
        "max_new_tokens": 8,
    }
    return load_monitor_config({**settings, **overrides})


def characters(completions, **kwargs) -> list[float]:
    """A training reward with spread even for the tiny model's gibberish, so that the policy moves."""
    return [len(completion_text(c)) / 40 for c in completions]


def grpo_trainer(model_path, output_dir: Path, monitor, callbacks=(), **overrides) -> GRPOTrainer:
    return GRPOTrainer(
        model=model_path,
        reward_funcs=[characters],
        args=tiny_grpo_config(output_dir, learning_rate=5e-2, **overrides),
        train_dataset=load_prompt_dataset(str(EVERYDAY / "train_prompt_only.jsonl")),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[monitor, *callbacks],
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "monitor_s"} for r in records]


@pytest.mark.slow
def test_the_monitor_records_every_evaluation_and_keeps_the_best(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    gold = {"rubrics_path": str(EVERYDAY / "heldout_rules.jsonl"), "pairwise": {"backend": "rubric"}}
    monitor = OverOptimizationMonitor(monitor_config(monitor_steps=2, gold=gold), str(tmp_path), max_new_tokens=8)
    grpo_trainer(tiny_model_path, tmp_path, monitor, max_steps=3, report_to="wandb").train()

    history = read_jsonl(tmp_path / "overopt.jsonl")
    assert [r["step"] for r in history] == [0, 2, 3]  # step 0, every 2 steps, and the last step
    assert [r["reason"] for r in history] == ["start", "cadence", "last_step"]
    assert history[0]["train_reward"] is None and history[1]["train_reward"] is not None  # logged steps before
    for record in history:
        assert 0 <= record["proxy_ci_low"] <= record["proxy"] <= record["proxy_ci_high"] <= 1
        assert 0 <= record["gold_ci_low"] <= record["gold"] <= record["gold_ci_high"] <= 1
        assert record["proxy_failures"] == record["gold_failures"] == 0
        assert 0 < record["completion_length"] <= 8
        diagnostics = {"pass_rate", "pass_rate/kind/rule", "saturation", "saturated_criteria",
                       "within_group_reward_std"}
        assert diagnostics <= set(record)
    # LoRA starts as the identity: no divergence at step 0; a large learning rate moves the policy
    assert history[0]["kl"] == 0.0 and history[-1]["kl"] > 0.0
    # the starting policy's samples are the baseline of the pairwise gold: no win rate against itself at step 0
    assert "win_rate" not in history[0]
    for record in history[1:]:
        assert 0 <= record["win_rate_ci_low"] <= record["win_rate"] <= record["win_rate_ci_high"] <= 1
        assert record["win_rate_failures"] == 0

    samples = read_jsonl(tmp_path / "overopt_samples.jsonl")
    assert len(samples) == 3 * 3 * 2 and {s["step"] for s in samples} == {0, 2, 3}
    # per-criterion detail per sample, keyed by criterion id within the prompt's rubric version
    for sample in samples:
        assert sample["proxy_rubric"] and sample["proxy_criteria"] and sample["gold_criteria"]
        assert all(isinstance(v, bool) for v in [*sample["proxy_criteria"].values(), *sample["gold_criteria"].values()])

    summary = json.loads((tmp_path / "overopt.json").read_text())
    best_step = max(history, key=lambda r: r["gold"])["step"]
    assert summary["best_gold"]["step"] == best_step and summary["evaluations"] == 3
    assert (tmp_path / "best_gold" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "best_gold" / "best_gold.json").read_text())["step"] == best_step
    assert 0 < summary["monitor_share"] < 1
    # where the monitor's time went: every phase of an evaluation, writing the outputs and the best model included
    phases = summary["monitor_phase_seconds"]
    assert set(phases) == {"sample", "kl", "grade", "write"} and all(s > 0 for s in phases.values())
    assert sum(phases.values()) == pytest.approx(summary["monitor_seconds"])
    assert summary["monitor_seconds"] == pytest.approx(sum(r["monitor_s"] for r in history) + phases["write"])
    assert (tmp_path / "overopt.png").stat().st_size > 10_000


class CrashAfter(TrainerCallback):
    """Kills the run after a given step (after the monitor has evaluated it), as a pre-emption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after step {self.step}")


@pytest.mark.slow
def test_a_killed_and_resumed_run_reports_what_an_uninterrupted_run_reports(tmp_path, tiny_model_path):
    config = monitor_config()
    whole = tmp_path / "whole"
    grpo_trainer(tiny_model_path, whole, OverOptimizationMonitor(config, str(whole)), max_steps=4).train()

    broken = tmp_path / "broken"
    save = {"save_strategy": "steps", "save_steps": 2}
    with pytest.raises(KeyboardInterrupt):
        grpo_trainer(
            tiny_model_path, broken, OverOptimizationMonitor(config, str(broken)), [CrashAfter(3)], max_steps=4, **save
        ).train()
    assert [r["step"] for r in read_jsonl(broken / "overopt.jsonl")] == [0, 1, 2, 3]
    saved = json.loads((broken / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert [r["step"] for r in saved["OverOptimizationMonitor"]["attributes"]["history"]] == [0, 1, 2]

    monitor = OverOptimizationMonitor(config, str(broken))
    monitor.restore(broken / "checkpoint-2")
    assert [r["step"] for r in read_jsonl(broken / "overopt.jsonl")] == [0, 1, 2], "lines past the checkpoint go"
    grpo_trainer(tiny_model_path, broken, monitor, max_steps=4, **save).train(
        resume_from_checkpoint=str(broken / "checkpoint-2")
    )

    assert without_timings(read_jsonl(broken / "overopt.jsonl")) == without_timings(read_jsonl(whole / "overopt.jsonl"))
    assert read_jsonl(broken / "overopt_samples.jsonl") == read_jsonl(whole / "overopt_samples.jsonl")
    resumed, uninterrupted = (json.loads((d / "overopt.json").read_text()) for d in (broken, whole))
    for key in ("peak_step", "onset_step", "detected_step", "evaluations"):
        assert resumed[key] == uninterrupted[key]
    assert without_timings([resumed["at_peak"]]) == without_timings([uninterrupted["at_peak"]])
    assert resumed["best_gold"]["step"] == uninterrupted["best_gold"]["step"]


@pytest.mark.slow
def test_stop_at_onset_stops_training(tmp_path, tiny_model_path):
    monitor = OverOptimizationMonitor(monitor_config(on_onset="stop", keep_best=False), str(tmp_path))
    # A history whose gold rose far above anything the tiny model scores, under a proxy that has not fallen:
    # the next real evaluations are a fall from that peak.
    monitor.history = [
        {"step": -3 + i, "proxy": 0.0, "gold": gold, "gold_ci_high": gold} for i, gold in enumerate([0.9, 0.95, 1.0])
    ]
    trainer = grpo_trainer(tiny_model_path, tmp_path, monitor, max_steps=6)
    trainer.train()
    summary = json.loads((tmp_path / "overopt.json").read_text())
    assert summary["onset_step"] == 1 and summary["detected_step"] == 2
    assert trainer.state.global_step == 2, "training stopped at the evaluation that confirmed the onset"
    assert not (tmp_path / "best_gold").exists()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="monitor.monitor_steps"):
        monitor_config(monitor_steps=0)
    with pytest.raises(ValueError, match="monitor.gold.rubric_path"):
        monitor_config(gold={"rubric_path": "x.jsonl"})
    with pytest.raises(ValueError, match="has no gold"):
        monitor_config(gold={})
    with pytest.raises(ValueError, match="on_onset"):
        monitor_config(on_onset="panic")
    with pytest.raises(ValueError, match="set monitor.gold.rubrics_path"):
        monitor_config(gold={"pairwise": {"backend": "rubric"}})


def test_a_prompt_without_a_gold_rubric_is_named(tmp_path):
    gold = tmp_path / "gold.jsonl"
    lines = (EVERYDAY / "heldout_rules.jsonl").read_text().splitlines()
    gold.write_text("\n".join(lines[1:]) + "\n")
    first_id = json.loads(lines[0])["prompt_id"]
    with pytest.raises(ValueError, match=f"no gold rubric for held-out prompt_id.*{first_id}"):
        OverOptimizationMonitor(monitor_config(gold={"rubrics_path": str(gold)}), str(tmp_path))


def test_restoring_from_a_checkpoint_without_monitor_state_is_a_clear_error(tmp_path):
    monitor = OverOptimizationMonitor(monitor_config(), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        monitor.restore(tmp_path)
    save_checkpoint(tmp_path)  # saved by a run without the monitor
    with pytest.raises(FileNotFoundError, match="no monitor state in this checkpoint"):
        monitor.restore(tmp_path)


def test_criterion_statistics_keep_criteria_of_different_prompts_apart():
    """Imported criteria are numbered c1..cN in every rubric: `c1` of one prompt says nothing about another's."""
    first, second = (Rubric.model_validate({"id": p, "prompt_id": p, "criteria": [
        {"id": "c1", "text": f"Says {word}.", "weight": 1, "kind": "rule",
         "check": {"type": "contains", "any_of": [word]}},
    ]}) for p, word in (("a", "yes"), ("b", "no")))
    texts = ["yes", "yes", "no", "maybe"]  # a.c1 passes in both samples, b.c1 in one of two
    proxy = asyncio.run(RubricReward(None).grade(["q"] * 4, texts, [first, first, second, second]))
    record = summarize(0, ["a", "a", "b", "b"], proxy, None, None, [0.0] * 4, [1] * 4, seed=0)
    assert not [key for key in record if key.startswith("pass_rate/c")]
    assert record["pass_rate"] == record["pass_rate/kind/rule"] == record["pass_rate/positive"] == 3 / 4
    assert record["saturated_criteria"] == 1 / 2  # a.c1 always passes, b.c1 half the time
    assert record["saturation"] == 3 / 4


GRADE_ON_EVERY_RANK = """
import asyncio, json, sys
from pathlib import Path

import torch.distributed as dist
from accelerate import PartialState

sys.path.insert(0, sys.argv[2])
from test_monitor import monitor_config
from rubric_rft.reward.rubric_reward import GradedCompletion
from rubric_rft.training.monitor.callback import OverOptimizationMonitor


class RecordingProxy:
    def __init__(self):
        self.graded = []

    async def grade(self, prompts, texts, rubrics):
        self.graded += texts
        return [GradedCompletion(float(text)) for text in texts]

    async def aclose(self):
        pass


out = Path(sys.argv[1])
state = PartialState(cpu=True)
monitor = OverOptimizationMonitor(monitor_config(gold={"rubrics_path": sys.argv[3]}), str(out))
graders = monitor.graders
graders.proxy, graders.gold = RecordingProxy(), None
rows = graders.rows[:1] * 5
proxy, gold, pairs = graders.grade_on_every_rank(rows, [str(i) for i in range(5)], None)
Path(out, f"rank{state.process_index}.json").write_text(json.dumps(
    {"graded": graders.proxy.graded, "scores": [g.score for g in proxy], "gold": gold, "pairs": pairs}))
state.destroy_process_group()  # left to the interpreter's exit, gloo's threads can abort the process
"""


@pytest.mark.slow
def test_every_rank_grades_its_share_of_the_samples_and_the_main_process_gets_them_all(tmp_path):
    """No rank waits in a collective while another grades alone (a slow gold judge would pass the timeout)."""
    driver = tmp_path / "driver.py"
    driver.write_text(GRADE_ON_EVERY_RANK)
    port = str(20000 + os.getpid() % 20000)
    command = ["accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"),
               "--main_process_port", port, str(driver), str(tmp_path), str(Path(__file__).parent),
               str(EVERYDAY / "heldout_rules.jsonl")]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["graded"] == ["0", "1", "2"]
    assert ranks[1]["graded"] == ["3", "4", "4"], "padded to the other rank's count with its last sample"
    assert ranks[0]["scores"] == [0.0, 1.0, 2.0, 3.0, 4.0], "every grade, in order, the padding dropped"
    assert ranks[0]["gold"] is None and ranks[0]["pairs"] is None
