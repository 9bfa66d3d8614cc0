"""RubricReward inside real TRL GRPO runs (tiny model), and the training script from its command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trl import GRPOConfig, GRPOTrainer

from rubric_rft.judges.openai_compat import OpenAIJudgeConfig
from rubric_rft.judges.registry import build_judge
from rubric_rft.reward.failure_limit import JudgeFailingError
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.datasets import load_prompt_dataset
from rubric_rft.rubrics.format import Rubric, load_rubrics
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.rubric_checkpoints import RubricStoreCallback

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["How do I make tea?", "How do I boil an egg?", "How do I save money?", "How do I sleep better?"]
SHORT = {"id": "short", "kind": "rule", "weight": 1, "text": "At most 20 words.",
         "check": {"type": "word_count", "max": 20}}


def write_dataset(path: Path) -> Path:
    """Four prompts; each rubric mixes rule criteria with llm criteria that the scripted judge grades."""
    rows = []
    for i, prompt in enumerate(PROMPTS):
        criteria = [
            SHORT,
            {"id": "mentions_the", "kind": "llm", "weight": 2, "text": "Mentions 'the'."},
            {"id": "says_a", "kind": "llm", "weight": -1, "text": "Uses the word 'a'."},
        ]
        rows.append({"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": prompt}],
                     "rubric": {"id": f"p{i}", "criteria": criteria}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_grpo_config(output_dir: Path, **overrides) -> GRPOConfig:
    settings = dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, seed=0, learning_rate=1e-3, max_steps=2,
        per_device_train_batch_size=4, num_generations=4, max_completion_length=8, logging_steps=1,
        report_to="none", gradient_checkpointing=False, save_strategy="no",
    )
    return GRPOConfig(**{**settings, **overrides})


@pytest.mark.slow
def test_rubric_reward_inside_grpo_grades_each_completion_once(tmp_path, tiny_model_path, start_judge_server):
    server = start_judge_server(latency_s=0.01)
    judge = build_judge(OpenAIJudgeConfig(model="scripted-judge", base_urls=[server.base_url]))
    trainer = GRPOTrainer(
        model=tiny_model_path,
        reward_funcs=[RubricReward(judge)],
        args=tiny_grpo_config(tmp_path),
        train_dataset=load_prompt_dataset(str(write_dataset(tmp_path / "data.jsonl"))),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2
    # 2 steps x 4 completions, one batched call each: no completion is graded twice, none skipped
    assert server.stats.requests == 8
    for entry in logs:
        assert entry["rubric/failure_rate"] == 0.0
        assert entry["rubric/judge_calls"] == 4.0
        assert 0.0 <= entry["reward"] <= 1.0
        assert 0.0 <= entry["rubric/pass_rate/kind/rule"] <= 1.0


@pytest.mark.slow
def test_failed_grades_are_masked_not_zeroed_and_training_goes_on(tmp_path, tiny_model_path, start_judge_server):
    server = start_judge_server(fail_first_n=10_000, fail_status=503)
    judge = build_judge(
        OpenAIJudgeConfig(model="scripted-judge", base_urls=[server.base_url], max_retries=1, backoff_initial_s=0.0)
    )
    trainer = GRPOTrainer(
        model=tiny_model_path,
        reward_funcs=[RubricReward(judge)],
        args=tiny_grpo_config(tmp_path, max_steps=1),
        train_dataset=load_prompt_dataset(str(write_dataset(tmp_path / "data.jsonl"))),
    )
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "rubric/failure_rate" in e)
    assert entry["rubric/failure_rate"] == 1.0
    assert entry["rubric/judge_retries"] == 4.0  # each of the 4 completions asked twice
    assert server.stats.requests == 8
    assert trainer.state.global_step == 1


@pytest.mark.slow
def test_a_judge_that_always_fails_stops_training_with_its_error(tmp_path, tiny_model_path, start_judge_server):
    server = start_judge_server(fail_first_n=10_000, fail_status=503)
    judge = build_judge(OpenAIJudgeConfig(model="scripted-judge", base_urls=[server.base_url], max_retries=0))
    trainer = GRPOTrainer(
        model=tiny_model_path,
        reward_funcs=[RubricReward(judge)],  # the default limit: more than 16 failures in the last 32
        args=tiny_grpo_config(tmp_path, max_steps=50),
        train_dataset=load_prompt_dataset(str(write_dataset(tmp_path / "data.jsonl"))),
    )
    with pytest.raises(JudgeFailingError, match=r"^20 of the last 20 completions .*503.*scripted failure"):
        trainer.train()
    assert server.stats.requests == 20 and trainer.state.global_step == 4, "5 steps of 4 completions, not 50"


@pytest.mark.slow
def test_training_script_takes_the_failure_limit_from_the_reward_config(tmp_path, tiny_model_path, start_judge_server):
    server = start_judge_server(fail_first_n=10_000)
    judge = json.dumps({"backend": "openai", "model": "scripted-judge", "base_urls": [server.base_url],
                        "max_retries": 0})
    out = tmp_path / "run"
    args = script_args(out, tiny_model_path, write_dataset(tmp_path / "data.jsonl"), "--max_steps", "50",
                       "--judge", judge, "--reward", '{"type": "rubric", "failure_window": 8}')
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_grpo.py"), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "JudgeFailingError: 8 of the last 8 completions sent to the judge failed" in result.stderr
    assert "scripted failure" in result.stderr
    assert server.stats.requests == 8 and not (out / "model.safetensors").exists()


def run_script(args: list[str], env: dict | None = None, launcher: list[str] | None = None):
    command = [*(launcher or [sys.executable]), str(ROOT / "scripts" / "train_grpo.py"), *args]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def script_args(output_dir: Path, model: str, data: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", model, "--use_peft", "false",
        "--dataset_path", str(data), "--heldout_path", str(data), "--num_samples", "2",
        "--output_dir", str(output_dir), "--per_device_train_batch_size", "4", "--num_generations", "4",
        "--max_completion_length", "8", "--learning_rate", "1e-3", "--report_to", "none", *extra,
    ]


@pytest.mark.slow
def test_training_script_writes_its_outputs_and_resumes(tmp_path, tiny_model_path, start_judge_server):
    server = start_judge_server()
    judge = json.dumps({"backend": "openai", "model": "scripted-judge", "base_urls": [server.base_url]})
    data = write_dataset(tmp_path / "data.jsonl")
    out = tmp_path / "run"
    run_script(script_args(out, tiny_model_path, data, "--max_steps", "2", "--save_steps", "1", "--judge", judge))

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert sum("reward" in entry for entry in state["log_history"]) == 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "reward" in m] == [1, 2]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == PROMPTS[:2]
    assert all(0.0 <= s["before_score"] <= 1.0 and 0.0 <= s["after_score"] <= 1.0 for s in samples)
    assert (out / "model.safetensors").exists() and (out / "checkpoint-1").is_dir()
    dataset_rubrics = RubricStore.from_rows(load_prompt_dataset(str(data))).current()
    assert store_in(out / "checkpoint-2").current() == dataset_rubrics
    assert load_rubrics(out / "rubrics.jsonl") == dataset_rubrics

    # rubrics changed before the checkpoint was saved: the resumed run grades with them and ends with them
    store = store_in(out / "checkpoint-2")
    for prompt_id in ("p0", "p1", "p2", "p3"):
        store.update(prompt_id, Rubric.model_validate({"id": "x", "criteria": [SHORT]}), step=2, reason="rules only")
    trainer_state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    trainer_state["stateful_callbacks"]["RubricStoreCallback"]["attributes"] = store.state_dict()
    (out / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(trainer_state))
    requests = server.stats.requests
    run_script(
        script_args(out, tiny_model_path, data, "--max_steps", "3", "--save_steps", "1", "--judge", judge,
                    "--resume_from_checkpoint", str(out / "checkpoint-2"))
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [e["step"] for e in state["log_history"] if "reward" in e] == [1, 2, 3]
    # step 3 graded by rules alone; the held-out answers (2 prompts, before and after, graded together: an answer
    # the step left unchanged is asked once) by the rows' own rubrics
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    asked = {(s["prompt"], answer) for s in samples for answer in (s["before"], s["after"])}
    assert server.stats.requests - requests == len(asked)
    final = load_rubrics(out / "rubrics.jsonl")
    assert [(r.id, r.parent, r.reason) for r in final] == [(f"p{i}-v2", f"p{i}", "rules only") for i in range(4)]
    assert store_in(out / "checkpoint-3").state_dict() == store.state_dict()


def store_in(checkpoint) -> RubricStore:
    """The rubric store a checkpoint holds."""
    store = RubricStore()
    RubricStoreCallback(store).restore(checkpoint)
    return store


@pytest.mark.slow
def test_accelerate_launch_with_wandb_offline_keeps_the_api_key_out(tmp_path, tiny_model_path, start_judge_server):
    secret = "sk-test-0123456789abcdef"
    server = start_judge_server()
    judge = json.dumps(
        {"backend": "openai", "model": "scripted-judge", "base_urls": [server.base_url], "api_key_env": "JUDGE_KEY"}
    )
    out = tmp_path / "run"
    env = {"JUDGE_KEY": secret, "WANDB_API_KEY": "", "HOME": str(tmp_path), "WANDB_MODE": ""}
    env = {k: v for k, v in env.items() if v} | {"WANDB_SILENT": "true"}
    os_env_without_wandb = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        ["accelerate", "launch", "--num_processes", "1", "--cpu", str(ROOT / "scripts" / "train_grpo.py"),
         *script_args(out, tiny_model_path, write_dataset(tmp_path / "data.jsonl"), "--max_steps", "1",
                      "--judge", judge, "--report_to", "wandb", "--save_steps", "1")],
        cwd=ROOT, env={**os_env_without_wandb, **env}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B ran offline inside output_dir"
    assert server.stats.authorizations and all(secret in a for a in server.stats.authorizations)
    leaked = [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == [], f"the judge API key leaked into {leaked}"
    assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_default_config_trains_the_real_model(tmp_path, smollm2_path):
    """The README's main job, cut to two steps: the default config as shipped, on SmolLM2-135M-Instruct."""
    out = tmp_path / "default"
    run_script(
        ["--max_steps", "2", "--save_steps", "2", "--output_dir", str(out), "--report_to", "none"],
        env={"RUBRIC_RFT_CACHE": str(Path(smollm2_path).parent), "HF_HUB_OFFLINE": "1"},
    )
    state = json.loads((out / "trainer_state.json").read_text())
    rewards = [e["reward"] for e in state["log_history"] if "reward" in e]
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(len(s["before"].split()) > 5 for s in samples), "real English answers"
    assert (out / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_model_config_flags_reach_the_loaded_policy(tmp_path, tiny_model_path):
    """`--dtype`, `--attn_implementation` (every `ModelConfig` loading field) load the policy, as in TRL's scripts."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt_id": f"p{i}", "prompt": p, "rubric": {"id": f"p{i}", "criteria": [
        SHORT]}}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "run"
    probe = tmp_path / "probe.py"  # the script, with a look at the model the trainer loaded
    probe.write_text(
        "import json, runpy, sys\n"
        "from trl import GRPOTrainer\n"
        "built = GRPOTrainer.__init__\n"
        "def init(self, *args, **kwargs):\n"
        "    built(self, *args, **kwargs)\n"
        "    json.dump({'dtype': str(self.model.dtype), 'attn': self.model.config._attn_implementation},\n"
        f"              open({str(tmp_path / 'loaded.json')!r}, 'w'))\n"
        "GRPOTrainer.__init__ = init\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    run_script(script_args(out, tiny_model_path, data, "--max_steps", "1", "--num_samples", "0", "--use_cpu", "true",
                           "--bf16", "false", "--dtype", "bfloat16", "--attn_implementation", "eager"),
               launcher=[sys.executable, str(probe)])
    assert json.loads((tmp_path / "loaded.json").read_text()) == {"dtype": "torch.bfloat16", "attn": "eager"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
