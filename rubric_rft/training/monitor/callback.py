"""`OverOptimizationMonitor`: a `TrainerCallback` that watches for the policy gaming its reward.

At step 0, at the steps its cadence chooses (`rubric_rft.training.monitor.cadence`: every `monitor_steps` steps,
or only when the training signals moved) and at the last step, it samples the current policy on a fixed held-out
prompt set and measures its KL to the start (`policy`), grades the samples with the proxy and the gold
(`graders`), applies the onset rule (`onset`), writes the outputs (`report`), and acts: alert, stop training at
onset, keep the best-by-gold model in `OUTPUT_DIR/best_gold`. This module is the orchestration and the state.

Every rank samples its share of the held-out answers (under ZeRO-3 no rank can generate alone) and grades its share
of all of them (no rank waits in a collective while another grades alone); the main process records and acts, and
broadcasts the record and a stop decision to the other ranks. With `use_trainer(trainer)` (the training script
calls it) sampling goes through TRL's `unwrap_model_for_generation`, the frozen starting model for the KL is
sharded like TRL's own reference model, and the best-by-gold model is saved by the trainer on every rank: what
DeepSpeed ZeRO-3 needs, where the model a callback is given holds only this rank's shard. The monitor's state is
saved in every checkpoint's `trainer_state.json` (`rubric_rft.training.checkpoint_state`), and
`restore(checkpoint)` brings it back, so a run killed and resumed reports the same history and onset as one that
never stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from accelerate.utils import broadcast_object_list

from rubric_rft.pairwise.win_rate import summarize_pairs
from rubric_rft.rubrics.datasets import render_prompt
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.checkpoint_state import CheckpointedCallback, saved_state
from rubric_rft.training.monitor import report
from rubric_rft.training.monitor.cadence import checks, due, training_signals
from rubric_rft.training.monitor.config import MonitorConfig
from rubric_rft.training.monitor.drift import DriftProbe
from rubric_rft.training.monitor.graders import HeldoutGraders
from rubric_rft.training.monitor.onset import Evaluation, detect_onset
from rubric_rft.training.monitor.policy import StartingWeights, reference_of, sample_policy
from rubric_rft.training.monitor.scoring import summarize
from rubric_rft.training.monitor.vllm_sampling import sample_with_vllm, vllm_engine

logger = logging.getLogger(__name__)

BEST_DIR = "best_gold"


class OverOptimizationMonitor(CheckpointedCallback):
    """Held-out proxy-vs-gold evaluations during training, onset detection, and the actions it triggers.

    `proxy` is the training reward when it is not a rubric (anything with `RubricReward`'s `grade` and `aclose`, e.g.
    a `BTReward`); otherwise the proxy is a rubric reward built from `proxy_judge`, the training judge config (None
    for rule-only rubrics). `normalize` matches the training reward's. `start_model_path` holds the starting
    weights, loaded for the KL of a model trained without adapters (a PEFT model is its own reference with
    adapters disabled). With `rubric_store` (the training reward's), held-out prompts that the store knows are
    graded with their current rubric there, so the proxy follows the rubrics training uses.
    """

    def __init__(
        self,
        config: MonitorConfig,
        output_dir: str,
        *,
        proxy=None,
        proxy_judge: dict | None = None,
        normalize: bool = True,
        max_new_tokens: int = 64,
        start_model_path: str | None = None,
        title: str | None = None,
        rubric_store: RubricStore | None = None,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.max_new_tokens = config.max_new_tokens or max_new_tokens
        self.starting_weights = StartingWeights(start_model_path)
        self.trainer = None
        self.title = title
        self.graders = HeldoutGraders(config, proxy=proxy, proxy_judge=proxy_judge, normalize=normalize,
                                      rubric_store=rubric_store)
        self.history: list[dict[str, Any]] = []
        self.baseline_texts: list[str] | None = None
        self.best: dict[str, Any] | None = None
        self.onset_acted = False
        self.probe: DriftProbe | None = None  # built from the step-0 answers on first use (again after a resume)
        self.engine: str | None = None  # what samples the held-out answers, chosen at the first evaluation
        self.monitor_seconds = 0.0
        self.phase_seconds: dict[str, float] = {}  # monitor_seconds by what it was spent on (`_spent`)
        self.train_seconds_before = 0.0
        self._started = time.perf_counter()

    def use_trainer(self, trainer) -> None:
        """Sample, measure and save through `trainer` (its wrapped model and accelerator); see the module docstring."""
        self.trainer = trainer

    # ----- trainer events -------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._started = time.perf_counter()
        if not self.history:  # a resumed run has its history back already
            drift = 0.0 if self.config.cadence.drift_move is not None else None  # the policy is the start
            self._evaluate(state, kwargs["model"], kwargs["processing_class"], "start", drift)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        drift = self._drift(state, kwargs["model"], kwargs["processing_class"])
        reason = due(state.global_step, self.config.monitor_steps, self.config.cadence,
                     self.history[-1] if self.history else None, state.log_history, drift)
        if reason is not None:
            self._evaluate(state, kwargs["model"], kwargs["processing_class"], reason, drift)
            if self._should_stop():
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.history and self.history[-1]["step"] < state.global_step:
            self._evaluate(state, kwargs["model"], kwargs["processing_class"], "last_step")
        summary = self._write_outputs() if state.is_world_process_zero and self.history else None
        if summary:
            run = report.wandb_run()
            if run is not None:
                report.log_summary(run, summary, self.history, self._samples(), self.output_dir / "overopt.png")
        return control

    # ----- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "baseline_texts": self.baseline_texts,
            "best": self.best,
            "onset_acted": self.onset_acted,
            "monitor_seconds": self.monitor_seconds,
            "phase_seconds": self.phase_seconds,
            "train_seconds": self.train_seconds_before + time.perf_counter() - self._started,
        }

    def restore(self, checkpoint: str | Path) -> None:
        """Continue from the state saved in `checkpoint`; local files are cut back to that point."""
        saved = saved_state(checkpoint, type(self).__name__)
        if saved is None:
            raise FileNotFoundError(
                f"{checkpoint}: no monitor state in this checkpoint (was it saved with the monitor on?)")
        self.history = saved["history"]
        self.baseline_texts = saved["baseline_texts"]
        self.best = saved["best"]
        self.onset_acted = saved["onset_acted"]
        self.monitor_seconds = saved["monitor_seconds"]
        self.phase_seconds = saved.get("phase_seconds", {})  # absent from checkpoints saved before it was kept
        self.train_seconds_before = saved["train_seconds"]
        from accelerate import PartialState

        if PartialState().is_main_process:  # the files are the main process's
            last_step = self.history[-1]["step"] if self.history else -1
            kept = [s for s in self._samples() if s["step"] <= last_step]
            report.write_history(self.output_dir / "overopt_samples.jsonl", kept)
            if self.history:
                self._write_outputs()
        logger.info("monitor: resumed from %s with %d evaluations", checkpoint, len(self.history))

    # ----- evaluation -----------------------------------------------------------------------------------------
    def _drift(self, state, model, tokenizer) -> float | None:
        """The policy's KL from the start on the start's answers (`drift`), at the steps an adaptive cadence with
        `drift_move` checks; None elsewhere. Called on every rank (a forward pass is a collective under ZeRO-3); the
        main process's value is the one every rank decides on. Its time counts as the monitor's."""
        cadence = self.config.cadence
        if (not cadence.adaptive or cadence.drift_move is None or self.baseline_texts is None
                or not checks(state.global_step, self.config.monitor_steps)):
            return None
        started = time.perf_counter()
        if self.probe is None:
            n = self.config.samples_per_prompt
            picked = range(0, len(self.baseline_texts), n)[: cadence.probe_size]  # one answer per prompt
            self.probe = DriftProbe(tokenizer, [self.graders.rows[i // n]["prompt"] for i in picked],
                                    [self.baseline_texts[i] for i in picked], self.config.temperature)
        drift = self.probe.measure(model, reference_of(model, self.starting_weights.for_model(model, self.trainer)))
        drift = broadcast_object_list([drift])[0]
        self._spent("drift", time.perf_counter() - started)
        return drift

    def _engine(self) -> str:
        """"vllm" or "transformers": what samples the held-out answers (`monitor.engine`; see `vllm_sampling`)."""
        if self.engine is None:
            generation, why = vllm_engine(self.trainer) if self.config.engine != "transformers" else (None, "")
            if generation is None and self.config.engine == "vllm":
                raise ValueError(f"monitor.engine is vllm, but {why}; set monitor.engine: auto or transformers")
            self.engine = "vllm" if generation is not None else "transformers"
            logger.info("monitor: held-out answers sampled by %s%s", self.engine, f" ({why})" if why else "")
        return self.engine

    def _spent(self, phase: str, seconds: float) -> None:
        """Count `seconds` of the monitor's time, under `phase`: sync (a vLLM engine's weights), sample, kl, grade,
        write (outputs, the best model, W&B) or drift; the summary's `monitor_phase_seconds` is where an
        evaluation's time goes."""
        self.monitor_seconds += seconds
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + seconds

    def _evaluate(self, state, model, tokenizer, reason: str, drift: float | None = None) -> None:
        """Called on every rank. Every rank keeps the record too: whether to evaluate again depends on the history.
        `reason` says why now (`rubric_rft.training.monitor.cadence`); `drift`, the policy's KL from the start on
        the start's answers, when the cadence reads it."""
        started = time.perf_counter()
        n = self.config.samples_per_prompt
        sampling = dict(
            samples_per_prompt=n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.config.temperature,
            seed=self.config.seed + state.global_step,
            reference=reference_of(model, self.starting_weights.for_model(model, self.trainer)),
            batch_size=self.config.batch_size,
        )
        prompts = [row["prompt"] for row in self.graders.rows]
        if self._engine() == "vllm":
            samples = sample_with_vllm(self.trainer, model, tokenizer, prompts, **sampling)
        else:
            policy, accelerator, checkpointing = (model, None, None) if self.trainer is None else (
                self.trainer.model_wrapped, self.trainer.accelerator, self.trainer.args.gradient_checkpointing_kwargs)
            samples = sample_policy(policy, tokenizer, prompts, accelerator=accelerator,
                                    gradient_checkpointing_kwargs=checkpointing, **sampling)
        sampled = time.perf_counter()
        rows = [row for row in self.graders.rows for _ in range(n)]
        proxy, gold, pairs = self.graders.grade_on_every_rank(rows, samples.texts, self.baseline_texts)
        graded = time.perf_counter()
        self._spent("sample", sampled - started - samples.kl_s - samples.sync_s)
        self._spent("kl", samples.kl_s)
        if samples.sync_s:
            self._spent("sync", samples.sync_s)
        self._spent("grade", graded - sampled)
        if self.baseline_texts is None:
            self.baseline_texts = samples.texts
        record = None
        if state.is_world_process_zero:
            win_rate = None
            if pairs is not None:
                result = summarize_pairs(pairs)
                win_rate = {**result.estimate.as_dict("win_rate"), "win_rate_failures": result.failures}
            record = summarize(
                state.global_step,
                [row["prompt_id"] for row in rows],
                proxy,
                gold,
                win_rate,
                samples.kl,
                samples.lengths,
                seed=self.config.seed,
            )
            record.update(training_signals(state.log_history, self.config.cadence.window), reason=reason,
                          monitor_s=graded - started, engine=self.engine)
            if drift is not None:
                record["drift"] = drift
        record = broadcast_object_list([record])[0]
        self.history.append(record)
        try:
            self._keep_if_best(record, model, tokenizer, state.is_world_process_zero)
            if state.is_world_process_zero:
                self._report(state, record, rows, samples, proxy, gold)
        finally:
            self._spent("write", time.perf_counter() - graded)

    def _report(self, state, record, rows, samples, proxy, gold) -> None:
        """Write the evaluation's samples and the outputs, log to W&B, and alert at a new onset (main process)."""
        sample_rows = [
            {
                "step": state.global_step,
                "prompt_id": row["prompt_id"],
                "prompt": render_prompt(row["prompt"]),
                "response": text,
                "proxy": p.score,
                "gold": g.score if g is not None else None,
                "kl": kl,
                # per-criterion detail lives here, keyed by criterion id within its prompt's rubric version
                "proxy_rubric": p.rubric.id if p.rubric is not None else None,
                "proxy_criteria": p.satisfied,
                "gold_criteria": g.satisfied if g is not None else None,
            }
            for row, text, p, g, kl in zip(
                rows, samples.texts, proxy, gold or [None] * len(rows), samples.kl, strict=True
            )
        ]
        report.write_history(self.output_dir / "overopt_samples.jsonl", self._samples() + sample_rows)
        summary = self._write_outputs()
        run = report.wandb_run()
        if run is not None:
            report.log_evaluation(run, record)
        if summary and summary["onset_step"] is not None and not self.onset_acted:
            self.onset_acted = True
            logger.warning(
                "over-optimization onset at step %s (gold peaked at step %s)",
                summary["onset_step"],
                summary["peak_step"],
            )
            if run is not None:
                report.alert_onset(run, summary)
        logger.info("monitor step %d: %s", state.global_step, _brief(record))

    def _keep_if_best(self, record: dict[str, Any], model, tokenizer, is_main: bool) -> None:
        """On every rank (the record is the same on all): under ZeRO-3 saving the model is a collective."""
        gold = record.get(self.graders.gold_metric)
        if not self.config.keep_best or gold is None or (self.best is not None and gold <= self.best["gold"]):
            return
        folder = self.output_dir / BEST_DIR
        self.best = {"step": record["step"], "gold": gold, "dir": str(folder)}
        if self.trainer is not None:
            self.trainer.save_model(str(folder))  # gathers a sharded model; writes on the main process
        elif is_main:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        if is_main:
            (folder / "best_gold.json").write_text(json.dumps(self.best) + "\n")

    def _should_stop(self) -> bool:
        """Whether to stop now: onset found and `on_onset: stop`; the main process decides for every rank."""
        stop = self.config.on_onset == "stop" and self.onset_acted
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            decision = [stop]
            dist.broadcast_object_list(decision, src=0)
            stop = bool(decision[0])
        return stop

    # ----- outputs --------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any] | None:
        """The onset report with the figures around it; None until an evaluation has both proxy and gold."""
        metric = self.graders.gold_metric
        scored = [r for r in self.history if r.get(metric) is not None and r.get("proxy") is not None]
        if not scored:
            return None
        evaluations = [Evaluation(r["step"], r["proxy"], r[metric], r.get(f"{metric}_ci_high")) for r in scored]
        onset = detect_onset(evaluations, self.config.onset)
        by_step = {r["step"]: r for r in self.history}
        train_seconds = self.train_seconds_before + time.perf_counter() - self._started
        return {
            "title": self.title,
            "gold_metric": metric,
            **onset.as_dict(),
            "at_peak": by_step[onset.peak_step],
            "at_onset": by_step.get(onset.onset_step),
            "proxy_gold_gap_at_peak": by_step[onset.peak_step]["proxy"] - by_step[onset.peak_step][metric],
            "proxy_gold_gap_at_onset": (
                by_step[onset.onset_step]["proxy"] - by_step[onset.onset_step][metric] if onset.onset_step else None
            ),
            "rule": self.config.onset.model_dump(),
            "on_onset": self.config.on_onset,
            "best_gold": self.best,
            "best_gold_dir": self.best["dir"] if self.best else None,
            "evaluations": len(self.history),
            "last_step": self.history[-1]["step"],
            "monitor_seconds": self.monitor_seconds,
            "monitor_phase_seconds": self.phase_seconds,
            "train_seconds": train_seconds,
            "monitor_share": self.monitor_seconds / train_seconds if train_seconds > 0 else None,
        }

    def _write_outputs(self) -> dict[str, Any] | None:
        report.write_history(self.output_dir / "overopt.jsonl", self.history)
        summary = self.summary()
        if summary is not None:
            report.write_summary(self.output_dir / "overopt.json", summary)
            refined = [r["step"] for r in report.refinements(self.output_dir)]
            report.plot_history(self.output_dir / "overopt.png", self.history, summary, refined)
        return summary

    def _samples(self) -> list[dict[str, Any]]:
        path = self.output_dir / "overopt_samples.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _brief(record: dict[str, Any]) -> str:
    keys = ("proxy", "gold", "win_rate", "kl", "completion_length", "monitor_s")
    return ", ".join(f"{k}={record[k]:.3f}" for k in keys if isinstance(record.get(k), (int, float)))
