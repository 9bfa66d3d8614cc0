"""Train a policy with TRL's GRPO against rubric rewards.

    accelerate launch scripts/train_grpo.py                                  # configs/cpu_default.yaml
    accelerate launch scripts/train_grpo.py --config configs/cpu_llm_judge.yaml
    accelerate launch scripts/train_grpo.py --config X.yaml --learning_rate 1e-5 --max_steps 100
    accelerate launch scripts/train_grpo.py --config X.yaml --resume_from_checkpoint outputs/run/checkpoint-10

Every `GRPOConfig` and `ModelConfig` field is a YAML key or a `--flag` (TRL's `TrlParser`), so the vLLM
fields (`use_vllm`, `vllm_mode`, `vllm_server_base_url`, ...) pass straight to TRL. The reward is each prompt's
rubric, or with `reward: {type: bt, model: PATH}` a Bradley-Terry reward model (then also the monitor's proxy).
Writes, in `output_dir`:
the model (`save_pretrained` layout; LoRA adapters when `use_peft`), TRL's `trainer_state.json`,
`metrics.jsonl` (every log line), `samples.jsonl` (held-out answers before and after training, with their
rubric scores), with a rubric reward the rubrics the run ended with (`rubrics.jsonl`) and every version it used
(`rubric_lineage.jsonl`), with `monitor:` the over-optimization monitor's `overopt.*` files, with `refinement:`
online rubric refinement's `refinements.jsonl`, and, with `report_to: wandb`, a W&B run (offline unless an API
key is available).
"""

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig, ModelConfig, TrlParser, get_peft_config, get_quantization_config

from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.llm.generation import generate_on_every_rank
from rubric_rft.llm.weights import resolve_model
from rubric_rft.logs import setup_logging
from rubric_rft.reward.bt import BTReward
from rubric_rft.reward.config import BTRewardConfig, RubricRewardConfig, load_reward_config
from rubric_rft.reward.objectives import RubricObjectives
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubrics.datasets import load_prompt_dataset, render_prompt
from rubric_rft.rubrics.format import write_json_records
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.checkpoint_state import ResumeSettingsError, check_resume_settings, last_complete_checkpoint
from rubric_rft.training.cpu_launch import set_up_cpu_ranks, use_every_cpu_core
from rubric_rft.training.monitor.callback import OverOptimizationMonitor
from rubric_rft.training.monitor.config import load_monitor_config
from rubric_rft.training.preemption import CheckpointOnSignal
from rubric_rft.training.refinement.callback import OnlineRefinementCallback
from rubric_rft.training.refinement.config import load_refinement_config
from rubric_rft.training.rollouts import (
    RolloutSettingsError,
    check_rollout_settings,
    keep_compile_cache_loadable,
    set_cpu_kv_cache_size,
    shut_down_colocated_vllm,
    use_cpu_weight_reload,
    vllm_memory_errors_as_settings_errors,
)
from rubric_rft.training.rubric_checkpoints import RubricStoreCallback
from rubric_rft.training.tracking import MetricsJsonlCallback, configure_wandb, log_samples_to_wandb
from rubric_rft.training.trainer import RubricGRPOTrainer, check_rollout_dtype

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "cpu_default.yaml"


@dataclass
class RubricArguments:
    dataset_path: str = field(metadata={"help": "Training prompts with rubrics: JSON/JSONL/Parquet file or hub id."})
    dataset_split: str = field(default="train", metadata={"help": "Split, for hub datasets."})
    heldout_path: str | None = field(default=None, metadata={"help": "Held-out prompts for before/after samples."})
    judge: dict | str | None = field(
        default=None,
        metadata={"help": "Judge for llm criteria: a mapping in the YAML, a JSON string, or a judge YAML path."},
    )
    normalize_reward: bool = field(default=True, metadata={"help": "Score in [0, 1]; false: raw weighted sum."})
    num_samples: int = field(default=4, metadata={"help": "Held-out prompts answered before and after training."})
    monitor: dict | str | None = field(
        default=None,
        metadata={"help": "Over-optimization monitor: a mapping in the YAML, a JSON string, or a YAML path."},
    )
    refinement: dict | str | None = field(
        default=None,
        metadata={"help": "Online rubric refinement (needs the rubric reward): a mapping in the YAML, a JSON string, "
                  "or a YAML path."},
    )
    reward: dict | str | None = field(
        default=None,
        metadata={"help": "The training reward, {type: rubric} (default) or {type: bt, model: PATH}: a mapping in "
                  "the YAML, a JSON string, or a YAML path."},
    )
    rollout_dtype: str | None = field(
        default=None,
        metadata={"help": "Transformers rollouts (not vLLM's) from the policy with its LoRA adapters folded in and "
                  "its weights in this precision: float32, or bfloat16 (decodes ~1.5x faster on a CPU with native "
                  "bfloat16 kernels, sampling from the bfloat16-rounded policy); null: TRL's own rollouts."},
    )
    vllm_cpu_kv_cache_gib: int | None = field(
        default=None,
        metadata={"help": "KV cache of vLLM on the CPU, whole GiB: sets VLLM_CPU_KVCACHE_SPACE when that is unset. "
                  "Without it vLLM takes vllm_gpu_memory_utilization of the NUMA node's memory, which differs across "
                  "machines and which the colocated trainer eats into."},
    )

    def __post_init__(self) -> None:
        if self.rollout_dtype is not None and self.rollout_dtype.lower() in ("null", "none"):
            self.rollout_dtype = None  # `--rollout_dtype null` on the command line, as `null` in the YAML


def main(script_args: RubricArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    setup_logging()
    check_rollout_settings(training_args)  # before anything loads: vLLM server mode needs CUDA
    check_rollout_dtype(script_args.rollout_dtype, training_args.use_vllm)
    check_resume_settings(training_args)
    use_every_cpu_core(training_args.use_cpu)
    set_cpu_kv_cache_size(script_args.vllm_cpu_kv_cache_gib)  # before the trainer builds a colocated vLLM
    keep_compile_cache_loadable(training_args)  # a second run loads vLLM's compiled model instead of compiling again
    preemption = CheckpointOnSignal()  # SIGUSR1/SIGTERM: checkpoint at the end of the step, then stop
    preemption.install()  # now: a signal that comes while models and data load is kept, not lost
    configure_wandb(training_args.report_to, training_args.output_dir)
    model_path = resolve_model(model_args.model_name_or_path)
    train_dataset = load_prompt_dataset(script_args.dataset_path, script_args.dataset_split)
    reward = _reward(script_args, train_dataset)
    store = reward.store if isinstance(reward, RubricReward) else None

    metrics = MetricsJsonlCallback(training_args.output_dir)
    callbacks = [metrics, preemption]
    store_callback = RubricStoreCallback(store) if store is not None else None
    if store_callback is not None:
        callbacks.append(store_callback)
    monitor = _monitor(script_args, training_args, model_path, reward)
    if monitor is not None:
        callbacks.append(monitor)
    refinement = _refinement(script_args, training_args, train_dataset, reward, monitor)
    if refinement is not None:  # after the monitor, whose evaluation at the same step it may read
        callbacks.append(refinement)
    training_args.model_init_kwargs = _model_init_kwargs(model_args, training_args)
    trainer = RubricGRPOTrainer(
        model=model_path,
        reward_funcs=_reward_funcs(script_args, reward),
        args=training_args,
        train_dataset=train_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        callbacks=callbacks,
        rollout_dtype=script_args.rollout_dtype,
    )
    use_cpu_weight_reload(trainer)  # colocated vLLM on the CPU: weights reach it through vLLM's own reload
    for callback in (monitor, refinement):  # they generate and save through the trainer (sharded under ZeRO-3)
        if callback is not None:
            callback.use_trainer(trainer)
    if isinstance(reward, BTReward):
        reward.use_accelerator(trainer.accelerator)
    checkpoint = _checkpoint_to_resume(training_args)
    if checkpoint is not None and trainer.accelerator.is_main_process:
        metrics.restore(checkpoint)
    if store_callback is not None and checkpoint is not None:
        store_callback.restore(checkpoint)
    if monitor is not None and checkpoint is not None:
        monitor.restore(checkpoint)
    if refinement is not None and checkpoint is not None:
        refinement.restore(checkpoint, trainer.accelerator.is_main_process)
    heldout = _heldout_rows(script_args)
    before = _answer(trainer, heldout, training_args.max_completion_length)
    trainer.train(resume_from_checkpoint=checkpoint)
    # stopped for a signal: exit 75 so the scheduler requeues
    preemption.exit_if_triggered(trainer.accelerator, before_exit=lambda: shut_down_colocated_vllm(trainer))
    after = _answer(trainer, heldout, training_args.max_completion_length)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.accelerator.is_main_process and heldout:
        _write_samples(training_args.output_dir, heldout, before, after, reward)
    shut_down_colocated_vllm(trainer)  # while the process group it was built on is up
    trainer.accelerator.end_training()  # gloo's threads end before the interpreter does, or they abort the process


def _reward_funcs(script_args: RubricArguments, reward: RubricReward | BTReward) -> list:
    """What TRL optimizes: the reward, or one function per objective of the rubric (`reward.objectives`)."""
    config = load_reward_config(script_args.reward)
    if isinstance(config, RubricRewardConfig) and config.objectives:
        return RubricObjectives(reward, config.objectives).functions
    return [reward]


def _reward(script_args: RubricArguments, train_dataset) -> RubricReward | BTReward:
    """A rubric reward reads each prompt's rubric from a store built from the training data, by `prompt_id`."""
    config = load_reward_config(script_args.reward)
    if isinstance(config, BTRewardConfig):
        return BTReward(config.model, batch_size=config.batch_size)
    judge = build_judge(load_judge_config(script_args.judge)) if script_args.judge else None
    store = RubricStore.from_rows(train_dataset.select_columns(["prompt_id", "rubric"]), script_args.dataset_path)
    return RubricReward(
        judge,
        normalize=script_args.normalize_reward,
        store=store,
        max_failure_rate=config.max_failure_rate,
        failure_window=config.failure_window,
    )


def _monitor(script_args: RubricArguments, training_args: GRPOConfig, model_path: str, reward):
    """A rubric proxy gets judge clients of its own (the monitor grades on its own event loop); any other reward
    is the monitor's proxy as it is."""
    if not script_args.monitor:
        return None
    return OverOptimizationMonitor(
        load_monitor_config(script_args.monitor),
        training_args.output_dir,
        proxy=None if isinstance(reward, RubricReward) else reward,
        proxy_judge=script_args.judge,
        normalize=script_args.normalize_reward,
        max_new_tokens=training_args.max_completion_length,
        start_model_path=model_path,
        title=training_args.run_name,
        rubric_store=reward.store if isinstance(reward, RubricReward) else None,
    )


def _refinement(script_args: RubricArguments, training_args: GRPOConfig, train_dataset, reward, monitor):
    """Online refinement changes the rubrics in the reward's store and buffers what the reward grades."""
    if not script_args.refinement:
        return None
    config = load_refinement_config(script_args.refinement)
    if not isinstance(reward, RubricReward):
        raise ValueError("refinement: online rubric refinement changes rubrics, so it needs the rubric reward "
                         "(reward: {type: rubric}), not a reward model")
    if config.round_timeout_s >= training_args.ddp_timeout:
        raise ValueError(f"refinement.round_timeout_s ({config.round_timeout_s}) must be well below ddp_timeout "
                         f"({training_args.ddp_timeout} s): the other processes wait for a round in a collective")
    rows = train_dataset.select_columns(["prompt_id", "prompt"])
    prompts = {row["prompt_id"]: row["prompt"] for row in rows}
    callback = OnlineRefinementCallback(config, reward.store, prompts, training_args.output_dir,
                                        judge=script_args.judge, monitor=monitor,
                                        max_new_tokens=training_args.max_completion_length)
    reward.on_graded = callback.buffer.on_graded
    return callback


def _model_init_kwargs(model_args: ModelConfig, training_args: GRPOConfig) -> dict:
    """How the policy loads: the `ModelConfig` fields, as TRL's own `examples/scripts/grpo.py` passes them
    (quantization goes to the trainer); a `model_init_kwargs` mapping in the config wins."""
    kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    return {**kwargs, **(training_args.model_init_kwargs or {})}


def _checkpoint_to_resume(training_args: GRPOConfig) -> str | None:
    """`--resume_from_checkpoint PATH`, or `true` for the last complete checkpoint in output_dir."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() == "false":
        return None
    if str(value).lower() == "true":
        last = last_complete_checkpoint(training_args.output_dir)
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint true: no complete checkpoint in "
                                    f"{training_args.output_dir}")
        return str(last)
    return value


def _heldout_rows(script_args: RubricArguments) -> list[dict]:
    if not script_args.heldout_path or script_args.num_samples <= 0:
        return []
    dataset = load_prompt_dataset(script_args.heldout_path)
    return list(dataset.select(range(min(script_args.num_samples, len(dataset)))))


def _answer(trainer: RubricGRPOTrainer, rows: list[dict], max_new_tokens: int) -> list[str]:
    """Greedy held-out answers. Called on every rank: under ZeRO-3 no rank can generate alone, so each answers its
    share (batches of at most 8, small enough that every rank has one) and every rank gets all the answers."""
    if not rows:
        return []
    per_rank = -(-len(rows) // trainer.accelerator.num_processes)
    return generate_on_every_rank(
        trainer.model_wrapped,
        trainer.processing_class,
        [r["prompt"] for r in rows],
        accelerator=trainer.accelerator,
        gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        max_new_tokens=max_new_tokens,
        batch_size=min(8, per_rank),
    ).texts


def _write_samples(output_dir: str, rows: list[dict], before: list[str], after: list[str], reward) -> None:
    rubrics = [r["rubric"] for r in rows]
    graded = asyncio.run(_grade_once(reward, [r["prompt"] for r in rows] * 2, before + after, rubrics * 2))
    records = [
        {
            "prompt_id": row["prompt_id"],
            "prompt": render_prompt(row["prompt"]),
            "before": before[i],
            "before_score": graded[i].score,
            "after": after[i],
            "after_score": graded[i + len(rows)].score,
        }
        for i, row in enumerate(rows)
    ]
    write_json_records(records, Path(output_dir) / "samples.jsonl")
    log_samples_to_wandb(records)


async def _grade_once(reward: RubricReward | BTReward, prompts: list, completions: list[str], rubrics: list):
    """Grade on a fresh event loop, closing the reward's clients on it before the loop ends."""
    async with reward:
        return await reward.grade(prompts, completions, rubrics)


if __name__ == "__main__":
    argv = set_up_cpu_ranks(sys.argv[1:])  # before parsing: it builds accelerate's state
    if "--config" not in argv:
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    parser = TrlParser((RubricArguments, GRPOConfig, ModelConfig))
    try:
        with vllm_memory_errors_as_settings_errors():  # vLLM's memory refusal, raised while the trainer is built
            main(*parser.parse_args_and_config(args=argv))
    except (RolloutSettingsError, ResumeSettingsError) as exc:
        sys.exit(f"error: {exc}")
