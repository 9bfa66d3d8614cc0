"""`OnlineRefinementCallback`: the closed loop. Rubrics are refined during training, on the policy's own tail,
when they saturate.

Every `refine_steps` optimizer steps, on every rank at the same step boundary: the tail buffers are gathered to the
main process; stuck prompts (flat groups) are answered again hotter when `stuck` is on, and when `fresh_samples` is
on and a broad trigger fires (the monitor's divergence, pooled saturation, a scheduled step), prompts not answered
lately are answered now (`rubric_rft.training.refinement.fresh`, every rank generating its share); the main process
decides and refines (`rubric_rft.training.refinement.rounds`, on a fresh event loop whose clients are closed after
it, within `round_timeout_s`, since the other ranks wait in a collective meanwhile), and the accepted rubrics go to
every rank through `RubricStore.apply`, so from the next step on every rank grades with the same versions. Each
decision is appended to `OUTPUT_DIR/refinements.jsonl` and counted in W&B when a run is active. The callback's state
(budgets spent, cooldowns, the buffer) is saved in each checkpoint's `trainer_state.json`
(`rubric_rft.training.checkpoint_state`), and `restore(checkpoint)` brings it back; the rubrics themselves are
the store's, saved by `RubricStoreCallback`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate.utils import broadcast_object_list

from rubric_rft.judges.registry import build_judge, load_judge_config
from rubric_rft.llm.generation import Messages
from rubric_rft.reward.rubric_reward import RubricReward
from rubric_rft.rubricgen.gold import build_gold
from rubric_rft.rubrics.datasets import as_messages, render_prompt
from rubric_rft.rubrics.format import Rubric
from rubric_rft.rubrics.store import RubricStore
from rubric_rft.training.checkpoint_state import CheckpointedCallback, saved_state
from rubric_rft.training.monitor import report
from rubric_rft.training.refinement import fresh
from rubric_rft.training.refinement.config import RefinementConfig, Sampling
from rubric_rft.training.refinement.proposers import build_proposer
from rubric_rft.training.refinement.rounds import RefinementState, run_round
from rubric_rft.training.refinement.tail_buffer import TailBuffer
from rubric_rft.training.refinement.trigger import monitor_diverging, pooled_saturation
from rubric_rft.training.tracking import append_jsonl, cut_jsonl_after

logger = logging.getLogger(__name__)

RECORDS_FILE = "refinements.jsonl"


class OnlineRefinementCallback(CheckpointedCallback):
    """`prompts` maps each training prompt id to its prompt (text or chat messages); `judge` (the training judge
    config) grades llm criteria when rubrics are compared, unless `config.judge` names another; `monitor` (an
    `OverOptimizationMonitor`) feeds the monitor trigger; `max_new_tokens` bounds fresh answers unless
    `fresh_samples.max_new_tokens` does. The reward feeds `buffer` through its `on_graded` hook."""

    def __init__(
        self,
        config: RefinementConfig,
        store: RubricStore,
        prompts: Mapping[str, str | Messages],
        output_dir: str | Path,
        *,
        judge: dict | str | None = None,
        monitor=None,
        max_new_tokens: int = 256,
    ) -> None:
        self.config = config
        self.store = store
        self.prompts = {prompt_id: render_prompt(prompt) for prompt_id, prompt in prompts.items()}
        self.messages = {prompt_id: as_messages(prompt) for prompt_id, prompt in prompts.items()}
        self.max_new_tokens = max_new_tokens
        self.output_dir = Path(output_dir)
        self.judge_config = config.judge if config.judge is not None else judge
        self.monitor = monitor
        self.buffer = TailBuffer(config.buffer_size)
        self.progress = RefinementState()
        self._clients = None
        self.trainer = None

    def use_trainer(self, trainer) -> None:
        """Answer fresh prompts through `trainer`'s wrapped model and accelerator (sharded under ZeRO-3)."""
        self.trainer = trainer

    # ----- trainer events -------------------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.config.refine_steps == 0:
            self.refine(state.global_step, state.is_world_process_zero,
                        policy=(kwargs.get("model"), kwargs.get("processing_class")))
        elif control.should_save:  # decided on every rank alike, before the save that follows this event
            self.buffer.gather()  # a collective: the main process saves every rank's completions
        return control

    # ----- the loop -------------------------------------------------------------------------------------------
    def refine(self, step: int, is_main: bool, policy: tuple[Any, Any] | None = None) -> list[Rubric]:
        """One refinement step; call on every rank. `policy` (model, tokenizer) answers prompts for fresh samples
        and stuck prompts. Returns the new rubric versions (the same on every rank)."""
        self.buffer.gather()
        broad, stuck = broadcast_object_list([self._signals(step) if is_main else None])[0]
        answered = []
        if policy is not None and policy[0] is not None:
            if stuck:
                answered.append(self._answer(step, "stuck", stuck, self.config.stuck, *policy))
            if broad is not None and self.config.fresh_samples.enabled:
                chosen = fresh.prompts_to_answer(step, list(self.prompts), self.buffer, self.store, self.progress,
                                                 self.config, taken=stuck) if is_main else None
                chosen = broadcast_object_list([chosen])[0]
                if chosen:
                    answered.append(self._answer(step, broad, chosen, self.config.fresh_samples, *policy))
        updates = None
        if is_main:
            records = [{"step": step, "status": "timed_out", "prompt_id": None,
                        "reason": f"the round took longer than round_timeout_s ({self.config.round_timeout_s} s)"}]
            try:
                result = asyncio.run(asyncio.wait_for(self._round(step, broad, answered),
                                                      self.config.round_timeout_s))
                updates, records = result.updates, result.records
            except TimeoutError:  # cut well before the other ranks' collective times out and kills the job
                pass
            self._report(step, records)
        return self.store.apply(updates)

    def _signals(self, step: int) -> tuple[str | None, list[str]]:
        """Main process (it holds the gathered buffer): the broad trigger that fires at `step`, or None, and the
        stuck prompts to answer afresh."""
        stuck = fresh.stuck_prompts(step, self.buffer, self.store, self.progress, self.config) if (
            self.config.stuck.enabled) else []
        if self.config.monitor.enabled and self.monitor is not None and monitor_diverging(
                self.monitor.history, self.config.monitor.window):
            return "monitor_divergence", stuck
        versions = {prompt_id: self.store.rubric_for(prompt_id).version for prompt_id in self.prompts
                    if prompt_id in self.store}
        if self.config.pooled.enabled and pooled_saturation(self.buffer, versions, step, self.config):
            return "pooled_saturation", stuck
        if step in self.config.schedule.steps:
            return "schedule", stuck
        return None, stuck

    def _answer(self, step: int, reason: str, chosen: list[str], sampling: Sampling, model,
                tokenizer) -> fresh.Answered:
        """Every rank: `chosen` answered with `sampling` (see `rubric_rft.training.refinement.fresh`)."""
        started = time.perf_counter()
        texts = fresh.answer(model, tokenizer, [self.messages[p] for p in chosen], sampling, self.max_new_tokens,
                             seed=self.config.seed + step, trainer=self.trainer)
        return fresh.Answered(reason, chosen, texts, time.perf_counter() - started)

    async def _round(self, step: int, broad: str | None, answered: list[fresh.Answered]):
        gold, proposer, judge = self._build()
        async with contextlib.AsyncExitStack() as clients:  # each round runs on a fresh loop: close on it
            for client in (gold, proposer, judge):
                if client is not None:
                    clients.push_async_callback(client.aclose)
            sampled = [await fresh.grade_into_buffer(step, batch, self.prompts, RubricReward(judge), self.store,
                                                     self.buffer) for batch in answered]
            stuck = {p for batch in answered if batch.reason == "stuck" for p in batch.prompt_ids}
            result = await run_round(step, self.buffer, self.store, self.prompts, self.progress, self.config,
                                     gold=gold, proposer=proposer, judge=judge, broad=broad, stuck=stuck)
            result.records[:0] = sampled
            return result

    def _build(self):
        """The gold source, the proposer and the judge, built on the main process at the first round."""
        if self._clients is None:
            gold = build_gold(self.config.gold.judge, self.config.gold.rubrics_path)
            proposer = build_proposer(self.config.proposer, self.config.budgets.max_criteria)
            judge = build_judge(load_judge_config(self.judge_config)) if self.judge_config else None
            self._clients = (gold, proposer, judge)
        return self._clients

    def _report(self, step: int, records: list[dict[str, Any]]) -> None:
        append_jsonl(self.output_dir / RECORDS_FILE, records)
        statuses = Counter(r["status"] for r in records)
        for record in records:
            if record["status"] == "sampled":
                logger.info("refinement step %d: answered %s (%d completions)", step, ", ".join(record["prompt_ids"]),
                            record["completions"])
            elif record["status"] != "not_triggered":
                logger.info("refinement step %d, %s: %s (%s)", step, record["prompt_id"], record["status"],
                            record.get("reason"))
        run = report.wandb_run()
        if run is not None:
            metrics = {f"refinement/{status}": float(count) for status, count in statuses.items()}
            totals = {"gold_calls", "proposer_calls", "accepted", "rejected", "errors"}
            spent = self.progress.as_dict()
            metrics.update({f"refinement/total_{k}": float(v) for k, v in spent.items() if k in totals})
            run.log({**metrics, "train/global_step": step})

    # ----- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"progress": self.progress.as_dict(), "buffer": self.buffer.state_dict()}

    def restore(self, checkpoint: str | Path, is_main: bool) -> bool:
        """Continue from `checkpoint` (call on every rank; the buffer goes to the main process, where every rank's
        completions were gathered). `refinements.jsonl` is cut back to the checkpoint's step. A checkpoint saved
        without online refinement starts it afresh and says so; returns whether state was loaded."""
        saved = saved_state(checkpoint, type(self).__name__)
        if saved is None:
            logger.warning("%s: no online refinement state in this checkpoint; starting it afresh", checkpoint)
            return False
        self.progress = RefinementState(**saved["progress"])
        if is_main:
            self.buffer.load_state_dict(saved["buffer"])
            cut_jsonl_after(self.output_dir / RECORDS_FILE, self.progress.step)
        logger.info("online refinement: resumed from %s (%d rubric changes accepted so far)", checkpoint,
                    self.progress.accepted)
        return True
